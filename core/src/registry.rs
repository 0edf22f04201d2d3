//! The plugin registry: name-keyed entries `{kind, name, version, description, schema, build}`.
//!
//! Built-in plugins submit a [`PluginRegistration`] through `inventory`; [`Registry::builtin`]
//! collects them, rejects duplicate names, and the result is frozen (no mutation API). A plugin
//! crate that nothing references is silently dropped by the linker, so the facade crate
//! references every built-in and a test lists them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::params::ParamBuilder;
use crate::plugin::{DynAttention, DynBottleneck, DynDecoder, DynEncoder, DynPrior};
use crate::spec::PluginPin;

/// The role a plugin plays in a model (the spec's slot it can fill).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginKind {
    /// Observations → states.
    Encoder,
    /// States → latent.
    Bottleneck,
    /// KL and sampling.
    Prior,
    /// Latent → likelihood.
    Decoder,
    /// Queries × latent → values; used inside decoders, not a spec slot of its own.
    Attention,
}

impl PluginKind {
    /// The kinds that are slots of a spec (its fields of the same names), in spec order.
    pub const SLOTS: [PluginKind; 4] = [
        PluginKind::Encoder,
        PluginKind::Bottleneck,
        PluginKind::Prior,
        PluginKind::Decoder,
    ];

    /// The lower-case name (for slots, the spec's field).
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Encoder => "encoder",
            PluginKind::Bottleneck => "bottleneck",
            PluginKind::Prior => "prior",
            PluginKind::Decoder => "decoder",
            PluginKind::Attention => "attention",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Sizes of the data a model is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataDims {
    /// Features per example (784 for 28×28 images).
    pub features: usize,
    /// Number of classes in the labels (0 when unlabelled).
    pub classes: usize,
    /// Token vocabulary size for text data (the tokenizer's); 0 for vector data.
    pub vocab: usize,
}

/// A built encoder and the width of its states.
pub struct BuiltEncoder {
    /// The module.
    pub module: Box<dyn DynEncoder>,
    /// The `Model` size of its output.
    pub output_dim: usize,
}

/// A built bottleneck and its latent size.
pub struct BuiltBottleneck {
    /// The module.
    pub module: Box<dyn DynBottleneck>,
    /// The `Latent` size of its output.
    pub latent_dim: usize,
    /// Settings of the bottleneck's config that its prior reads instead of repeating them
    /// (NVIB's prior component and κ, the VTS stride), under their config names.
    pub shared: Shared,
}

/// Settings a bottleneck shares with its prior: a JSON object keyed by config names.
pub type Shared = serde_json::Map<String, Value>;

/// What a prior is built for: the bottleneck's latent width and the settings it shares.
#[derive(Clone, Copy, Debug)]
pub struct LatentInfo<'a> {
    /// The `Latent` size.
    pub dim: usize,
    /// The bottleneck's [`BuiltBottleneck::shared`] settings.
    pub shared: &'a Shared,
}

impl LatentInfo<'_> {
    /// Shared setting `key` as `T`, or a config error of `plugin` saying which bottleneck
    /// setting it needs.
    pub fn setting<T: DeserializeOwned>(&self, plugin: &str, key: &str) -> Result<T> {
        let value = self.shared.get(key).ok_or_else(|| Error::Config {
            plugin: plugin.to_string(),
            message: format!(
                "needs the bottleneck's `{key}`, which this bottleneck does not share \
                 (use the bottleneck the prior is made for)"
            ),
        })?;
        serde_json::from_value(value.clone()).map_err(|e| Error::Config {
            plugin: plugin.to_string(),
            message: format!("the bottleneck's `{key}`: {e}"),
        })
    }
}

/// `(config, params, data) → encoder`
pub type EncoderBuilder = fn(&Value, &mut ParamBuilder, DataDims) -> Result<BuiltEncoder>;
/// `(config, params, encoder output size) → bottleneck`
pub type BottleneckBuilder = fn(&Value, &mut ParamBuilder, usize) -> Result<BuiltBottleneck>;
/// `(config, params, the bottleneck's latent, data) → prior`
pub type PriorBuilder =
    fn(&Value, &mut ParamBuilder, LatentInfo, DataDims) -> Result<Box<dyn DynPrior>>;
/// `(config, params, latent size, data) → decoder`
pub type DecoderBuilder =
    fn(&Value, &mut ParamBuilder, usize, DataDims) -> Result<Box<dyn DynDecoder>>;

/// `(config, params, latent size) → attention`
pub type AttentionBuilder = fn(&Value, &mut ParamBuilder, usize) -> Result<Box<dyn DynAttention>>;

/// A bottleneck builder that holds state: a plugin loaded from a library at run time.
pub type LoadedBottleneckBuilder =
    Arc<dyn Fn(&Value, &mut ParamBuilder, usize) -> Result<BuiltBottleneck> + Send + Sync>;

/// How a plugin builds its module from its (schema-validated) config, declaring parameters.
#[derive(Clone)]
pub enum Build {
    /// Builds an encoder.
    Encoder(EncoderBuilder),
    /// Builds a bottleneck.
    Bottleneck(BottleneckBuilder),
    /// Builds a prior.
    Prior(PriorBuilder),
    /// Builds a decoder.
    Decoder(DecoderBuilder),
    /// Builds an attention.
    Attention(AttentionBuilder),
    /// Builds a bottleneck through a library loaded at run time.
    LoadedBottleneck(LoadedBottleneckBuilder),
}

impl Build {
    /// The kind of plugin this builder makes.
    pub fn kind(&self) -> PluginKind {
        match self {
            Build::Encoder(_) => PluginKind::Encoder,
            Build::Bottleneck(_) | Build::LoadedBottleneck(_) => PluginKind::Bottleneck,
            Build::Prior(_) => PluginKind::Prior,
            Build::Decoder(_) => PluginKind::Decoder,
            Build::Attention(_) => PluginKind::Attention,
        }
    }
}

/// What a built-in plugin submits to `inventory`.
pub struct PluginRegistration {
    /// Unique name, used as `kind` in specs (e.g. `"gaussian_vib"`).
    pub name: &'static str,
    /// The plugin's version (usually its crate's).
    pub version: &'static str,
    /// One line for `vaezoo plugins`.
    pub description: &'static str,
    /// The JSON Schema of its config.
    pub schema: fn() -> Value,
    /// A small valid config: documentation, and what the conformance kit builds.
    pub example: fn() -> Value,
    /// Plugins of other kinds it needs beside it (e.g. a prior that only understands one
    /// bottleneck's latents); the conformance kit composes the plugin with them.
    pub partners: &'static [&'static str],
    /// Its builder.
    pub build: Build,
}

inventory::collect!(PluginRegistration);

/// Where a plugin came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Linked into this binary.
    Builtin,
    /// Loaded at start-up from a plugin library (see [`crate::abi`]).
    Dynamic {
        /// The library file.
        path: PathBuf,
        /// The SHA-256 of its bytes, lower-case hex.
        sha256: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.pad("builtin"),
            Origin::Dynamic { path, sha256 } => {
                f.pad(&format!("dynamic {} sha256:{sha256}", path.display()))
            }
        }
    }
}

/// One registered plugin.
#[derive(Clone)]
pub struct PluginEntry {
    /// The slot it fills.
    pub kind: PluginKind,
    /// Unique name.
    pub name: String,
    /// Version.
    pub version: String,
    /// One-line description.
    pub description: String,
    /// Where it came from.
    pub origin: Origin,
    /// JSON Schema of its config.
    pub schema: Value,
    /// A small valid config.
    pub example: Value,
    /// Plugins of other kinds it needs beside it.
    pub partners: Vec<String>,
    /// Its builder.
    pub build: Build,
}

/// The frozen set of plugins.
pub struct Registry {
    entries: BTreeMap<String, PluginEntry>,
}

impl Registry {
    /// Every plugin submitted through `inventory` by the crates linked into this binary.
    pub fn builtin() -> Result<Self> {
        Self::from_entries(Self::builtin_entries())
    }

    /// The entries of every plugin submitted through `inventory` (not yet checked for
    /// duplicates), to combine with plugins from elsewhere in [`Registry::from_entries`].
    pub fn builtin_entries() -> Vec<PluginEntry> {
        Self::builtin_entries_where(|_| true)
    }

    /// The built-in entries of one kind only (a plugin schema that names plugins of another
    /// kind builds these without calling its own schema function again).
    pub fn builtin_entries_of(kind: PluginKind) -> Vec<PluginEntry> {
        Self::builtin_entries_where(|r| r.build.kind() == kind)
    }

    fn builtin_entries_where(keep: impl Fn(&PluginRegistration) -> bool) -> Vec<PluginEntry> {
        inventory::iter::<PluginRegistration>
            .into_iter()
            .filter(|r| keep(r))
            .map(|r| PluginEntry {
                kind: r.build.kind(),
                name: r.name.to_string(),
                version: r.version.to_string(),
                description: r.description.to_string(),
                origin: Origin::Builtin,
                schema: (r.schema)(),
                example: (r.example)(),
                partners: r.partners.iter().map(|p| p.to_string()).collect(),
                build: r.build.clone(),
            })
            .collect()
    }

    /// Checks a spec's pins: each pinned plugin is loaded from a library whose sha256 is the
    /// pinned one.
    pub fn check_pins(&self, pins: &[PluginPin]) -> Result<()> {
        for pin in pins {
            let pinned = |message: String| Error::PluginPin {
                name: pin.name.clone(),
                message,
            };
            match self.entries.get(&pin.name).map(|e| &e.origin) {
                None => {
                    return Err(pinned(
                        "it is not loaded (pass `--plugin-dir DIR` or set VAEZOO_PLUGIN_PATH)"
                            .into(),
                    ))
                }
                Some(Origin::Builtin) => {
                    return Err(pinned(
                        "it is built into vaezoo, not loaded from a library".into(),
                    ))
                }
                Some(Origin::Dynamic { path, sha256 })
                    if !sha256.eq_ignore_ascii_case(&pin.sha256) =>
                {
                    return Err(pinned(format!(
                        "sha256 mismatch: pinned {}, but {} has {sha256}",
                        pin.sha256,
                        path.display()
                    )))
                }
                Some(Origin::Dynamic { .. }) => {}
            }
        }
        Ok(())
    }

    /// A registry of exactly `entries`; duplicate names are an error.
    pub fn from_entries(entries: impl IntoIterator<Item = PluginEntry>) -> Result<Self> {
        let mut map: BTreeMap<String, PluginEntry> = BTreeMap::new();
        for e in entries {
            if let Some(first) = map.get(&e.name) {
                return Err(Error::DuplicatePlugin {
                    name: e.name.clone(),
                    first: format!("{} {} {}", first.origin, first.kind, first.version),
                    second: format!("{} {} {}", e.origin, e.kind, e.version),
                });
            }
            map.insert(e.name.clone(), e);
        }
        Ok(Self { entries: map })
    }

    /// All entries, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &PluginEntry> {
        self.entries.values()
    }

    /// The entries of one kind, sorted by name.
    pub fn of_kind(&self, kind: PluginKind) -> impl Iterator<Item = &PluginEntry> {
        self.entries.values().filter(move |e| e.kind == kind)
    }

    /// The plugin `name` of `kind`.
    pub fn get(&self, kind: PluginKind, name: &str) -> Result<&PluginEntry> {
        self.entries
            .get(name)
            .filter(|e| e.kind == kind)
            .ok_or_else(|| Error::UnknownPlugin {
                kind: kind.to_string(),
                name: name.to_string(),
                known: self
                    .of_kind(kind)
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

macro_rules! typed_build {
    ($($(#[$doc:meta])* $method:ident: $variant:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        impl Registry {$(
            $(#[$doc])*
            pub fn $method(
                &self,
                name: &str,
                config: &Value,
                params: &mut ParamBuilder,
                $($arg: $ty),*
            ) -> Result<$out> {
                params.set_prefix(PluginKind::$variant.as_str());
                match &self.get(PluginKind::$variant, name)?.build {
                    Build::$variant(build) => build(config, params, $($arg),*),
                    _ => unreachable!("entries are keyed by the kind of their builder"),
                }
            }
        )*}
    };
}

typed_build! {
    /// Builds encoder `name` (parameters prefixed `encoder.`).
    build_encoder: Encoder(data: DataDims) -> BuiltEncoder;
    /// Builds prior `name` (parameters prefixed `prior.`).
    build_prior: Prior(latent: LatentInfo, data: DataDims) -> Box<dyn DynPrior>;
    /// Builds decoder `name` (parameters prefixed `decoder.`).
    build_decoder: Decoder(latent_dim: usize, data: DataDims) -> Box<dyn DynDecoder>;
    /// Builds attention `name` (parameters prefixed `attention.`).
    build_attention: Attention(latent_dim: usize) -> Box<dyn DynAttention>;
}

impl Registry {
    /// Builds bottleneck `name`, built in or loaded (parameters prefixed `bottleneck.`).
    pub fn build_bottleneck(
        &self,
        name: &str,
        config: &Value,
        params: &mut ParamBuilder,
        model_dim: usize,
    ) -> Result<BuiltBottleneck> {
        params.set_prefix(PluginKind::Bottleneck.as_str());
        match &self.get(PluginKind::Bottleneck, name)?.build {
            Build::Bottleneck(build) => build(config, params, model_dim),
            Build::LoadedBottleneck(build) => build(config, params, model_dim),
            _ => unreachable!("entries are keyed by the kind of their builder"),
        }
    }
}

/// The JSON Schema of a config type, as plain JSON.
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema serialises to JSON")
}

/// Deserialises a plugin's config (already checked against its schema).
pub fn parse_config<T: DeserializeOwned>(plugin: &str, config: &Value) -> Result<T> {
    serde_json::from_value(config.clone()).map_err(|e| Error::Config {
        plugin: plugin.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, build: Build) -> PluginEntry {
        PluginEntry {
            kind: build.kind(),
            name: name.into(),
            version: "1.0.0".into(),
            description: String::new(),
            origin: Origin::Builtin,
            schema: serde_json::json!({}),
            example: serde_json::json!({}),
            partners: Vec::new(),
            build,
        }
    }

    fn no_prior(
        _: &Value,
        _: &mut ParamBuilder,
        _: LatentInfo,
        _: DataDims,
    ) -> Result<Box<dyn DynPrior>> {
        Err(Error::Config {
            plugin: "p".into(),
            message: "not built in this test".into(),
        })
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let err = Registry::from_entries([
            entry("same", Build::Prior(no_prior)),
            entry("same", Build::Prior(no_prior)),
        ])
        .err()
        .expect("a duplicate is an error");
        assert!(
            err.to_string().contains("`same` is registered twice"),
            "{err}"
        );
    }

    #[test]
    fn lookups_check_the_kind_and_list_the_alternatives() {
        let registry = Registry::from_entries([entry("p1", Build::Prior(no_prior))]).unwrap();
        assert!(registry.get(PluginKind::Prior, "p1").is_ok());
        let err = registry.get(PluginKind::Bottleneck, "p1").err().unwrap();
        assert!(
            err.to_string().contains("no bottleneck plugin named `p1`"),
            "{err}"
        );
        let err = registry.get(PluginKind::Prior, "p2").err().unwrap();
        assert!(err.to_string().contains("registered: p1"), "{err}");
    }
}
