//! A model spec: data, the four plugin slots, and training settings.
//!
//! Reading a spec is two steps: validate the JSON against the schema composed from the
//! registry ([`crate::schema`]), then deserialise into [`Spec`]. Plugin configs stay JSON
//! here; each plugin's builder deserialises its own.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::optim::AdamConfig;
use crate::schedule::KlSchedule;

/// A whole model spec, as written in `zoo/<id>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The JSON Schema this file claims to follow (for editors; ignored by vaezoo).
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Short identifier; names run folders.
    #[schemars(length(min = 1), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    /// What this spec is for, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The dataset.
    pub data: DataSpec,
    /// Observations → states.
    pub encoder: Component,
    /// States → latent.
    pub bottleneck: Component,
    /// The prior the KL is taken against, and samples come from.
    pub prior: Component,
    /// Latent → likelihood of the observations.
    pub decoder: Component,
    /// Optimisation settings.
    #[serde(default)]
    pub training: TrainingSpec,
    /// Plugin libraries this spec needs, pinned by the SHA-256 of their file: loading fails
    /// when a pinned plugin is missing or its library differs. (A spec never names a library
    /// path: libraries load only from `--plugin-dir` and `VAEZOO_PLUGIN_PATH`.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginPin>,
}

/// A plugin a spec requires, and the SHA-256 its library file must have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginPin {
    /// The plugin's registered name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The SHA-256 of the library file, 64 hex digits (`vaezoo plugins` shows it).
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: String,
}

/// One slot of a model: which registered plugin, with which config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The registered plugin's name (`vaezoo plugins` lists them).
    pub kind: String,
    /// The plugin's config; its schema is the plugin's own.
    #[serde(default = "empty_object")]
    pub config: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// MNIST-style IDX files: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    /// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`.
    Idx {
        /// The folder with the four files, relative to the spec file.
        dir: String,
        /// The largest raw value (255 for 8-bit images, 16 for optdigits); values are divided
        /// by it so that features lie in [0, 1].
        #[serde(default = "default_pixel_max")]
        #[schemars(range(min = 1.0))]
        pixel_max: f32,
        /// Use only the first N training examples (all when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1))]
        train_limit: Option<usize>,
        /// Use only the first N test examples (all when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1))]
        test_limit: Option<usize>,
    },
    /// A sentence corpus: `train.txt`, `valid.txt`, `test.txt` with one sentence per line,
    /// and for a labelled corpus `<split>.labels` (one class id per line) and `classes.txt`.
    Text {
        /// The folder with the split files, relative to the spec file.
        dir: String,
        /// The WordPiece vocabulary size of the tokenizer trained on the train split (special
        /// tokens included); ignored when `tokenizer` is given.
        #[serde(default = "default_vocab_size")]
        #[schemars(range(min = 8, max = 1_000_000))]
        vocab_size: usize,
        /// A `tokenizer.json` to use instead of training one, relative to the spec file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokenizer: Option<String>,
        /// The most ids per sentence, `[CLS]` and `[SEP]` included; longer sentences lose
        /// their last word pieces. At most 4096 (evaluation holds `max_len²` scores per
        /// sentence pair).
        #[serde(default = "default_max_len")]
        #[schemars(range(min = 3, max = 4096))]
        max_len: usize,
        /// Use only the first N training sentences (all when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1))]
        train_limit: Option<usize>,
        /// Use only the first N validation and test sentences (all when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1))]
        test_limit: Option<usize>,
    },
}

impl DataSpec {
    /// The data folder.
    pub fn dir(&self) -> &str {
        match self {
            Self::Idx { dir, .. } | Self::Text { dir, .. } => dir,
        }
    }
}

fn default_vocab_size() -> usize {
    4000
}
fn default_max_len() -> usize {
    52
}

fn default_pixel_max() -> f32 {
    255.0
}

/// Optimisation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// Passes over the training split (at most a million).
    #[serde(default = "default_epochs")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub epochs: u64,
    /// Examples per step; the last batch of an epoch may be smaller.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: usize,
    /// Adam's settings.
    #[serde(default)]
    pub optimizer: AdamConfig,
    /// Weight of the KL terms in the loss (1 is the ELBO).
    #[serde(default = "default_kl_weight")]
    #[schemars(range(min = 0.0))]
    pub kl_weight: f32,
    /// A schedule per KL term name (`kl`; NVIB's `kl_g`, `kl_d`), multiplying its weight;
    /// the key `"*"` covers every term without an entry of its own. Terms without a schedule
    /// keep factor 1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kl_schedules: BTreeMap<String, KlSchedule>,
    /// Clip gradients to this global L2 norm (no clipping when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub grad_clip_norm: Option<f32>,
    /// Seed of initialisation, shuffling and noise; `vaezoo train --seed` overrides it.
    #[serde(default)]
    pub seed: u64,
    /// Write a checkpoint every this many steps (and always at the end).
    #[serde(default = "default_checkpoint_every")]
    #[schemars(range(min = 1))]
    pub checkpoint_every: u64,
}

fn default_epochs() -> u64 {
    10
}
fn default_batch_size() -> usize {
    128
}
fn default_kl_weight() -> f32 {
    1.0
}
fn default_checkpoint_every() -> u64 {
    200
}

impl Default for TrainingSpec {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            optimizer: AdamConfig::default(),
            kl_weight: default_kl_weight(),
            kl_schedules: BTreeMap::new(),
            grad_clip_norm: None,
            seed: 0,
            checkpoint_every: default_checkpoint_every(),
        }
    }
}
