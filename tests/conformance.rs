//! The conformance kit over every built-in plugin, and over deliberately faulty plugins that it
//! must catch.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::{json, Value};
use vaezoo::conformance::{check_all, check_plugin, PARTNERS};
use vaezoo::{builtin_plugin_names, registry};
use vaezoo_core::axes::{Comp, Latent, Model};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Linear;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, Mode};
use vaezoo_core::registry::{
    parse_config, schema_of, Build, BuiltBottleneck, Origin, PluginEntry, Registry,
};
use vaezoo_core::schemars::JsonSchema;
use vaezoo_core::Backend;

const CHECKS: [&str; 6] = [
    "schema",
    "shapes",
    "kl",
    "deterministic eval",
    "gradients",
    "checkpoint",
];

#[test]
fn every_builtin_plugin_conforms() -> vaezoo::Result<()> {
    let reports = check_all(registry()?)?;
    for report in &reports {
        println!("{report}");
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(ToString::to_string)
        .collect();
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
    for report in &reports {
        let names: Vec<&str> = report.checks.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, CHECKS, "{}", report.plugin);
    }
    let checked: BTreeSet<&str> = reports.iter().map(|r| r.plugin.as_str()).collect();
    let builtin: BTreeSet<&str> = builtin_plugin_names().into_iter().collect();
    assert_eq!(checked, builtin);
    Ok(())
}

/// What is wrong with a [`Faulty`] bottleneck.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, JsonSchema)]
#[schemars(crate = "vaezoo_core::schemars")]
#[serde(rename_all = "snake_case")]
enum Fault {
    /// Nothing: a correct diagonal Gaussian bottleneck.
    None,
    /// The log-variance head's output gets a fresh tape, its history never merged.
    DetachLogVar,
    /// Declares a `scale` parameter that nothing reads.
    UnusedParam,
    /// Samples in evaluation too.
    NoisyEval,
    /// Shifts the mean by an amount drawn at build time that is not a parameter.
    BuildState,
    /// A NaN log-variance.
    NanLogVar,
    /// Panics in `forward`.
    Panic,
}

/// Config of the faulty bottlenecks.
#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "vaezoo_core::schemars")]
#[serde(deny_unknown_fields)]
struct FaultyConfig {
    #[schemars(range(min = 1))]
    latent_dim: usize,
    fault: Fault,
}

/// The same config with a schema that lets unknown fields through.
#[derive(JsonSchema)]
#[schemars(crate = "vaezoo_core::schemars")]
#[allow(dead_code)]
struct LaxConfig {
    latent_dim: usize,
    fault: Fault,
}

/// `gaussian_vib` with one [`Fault`].
struct Faulty {
    mean: Linear<Model, Latent>,
    log_var: Linear<Model, Latent>,
    fault: Fault,
    offset: f32,
}

impl<D: Backend> Bottleneck<D> for Faulty {
    fn forward(
        &self,
        ctx: &mut Ctx<D>,
        input: EncoderStates<D>,
    ) -> vaezoo_core::Result<Mixture<D>> {
        assert!(self.fault != Fault::Panic, "deliberately broken");
        let h = input.states;
        let (batch, seq, _) = *h.shape();
        let comps = (batch, Comp(seq.0), self.mean.out_dim());
        let mut log_var = self
            .log_var
            .forward_seq(ctx.params, h.reuse())
            .reshape_like(&comps);
        match self.fault {
            Fault::DetachLogVar => log_var = log_var.retaped(),
            Fault::NanLogVar => log_var = log_var + f32::NAN,
            _ => {}
        }
        let mean = self.mean.forward_seq(ctx.params, h).reshape_like(&comps) + self.offset;
        let z = if ctx.mode == Mode::Train || self.fault == Fault::NoisyEval {
            let eps = ctx.normal(comps);
            mean.reuse() + (log_var.reuse() * 0.5).exp() * eps
        } else {
            mean.reuse()
        };
        Ok(Mixture::gaussian(z, mean, Some(log_var), input.mask))
    }
}

fn build_faulty(
    config: &Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> vaezoo_core::Result<BuiltBottleneck> {
    static BUILDS: AtomicU64 = AtomicU64::new(1);
    let cfg: FaultyConfig = parse_config("faulty", config)?;
    let mean = Linear::new(params, "mean", Model(model_dim), Latent(cfg.latent_dim));
    let log_var = Linear::new(params, "log_var", Model(model_dim), Latent(cfg.latent_dim));
    if cfg.fault == Fault::UnusedParam {
        params.constant("scale", &[cfg.latent_dim], 1.0);
    }
    let offset = match cfg.fault {
        Fault::BuildState => BUILDS.fetch_add(1, Ordering::Relaxed) as f32 * 0.1,
        _ => 0.0,
    };
    Ok(BuiltBottleneck {
        latent_dim: cfg.latent_dim,
        shared: Default::default(),
        module: Box::new(Faulty {
            mean,
            log_var,
            fault: cfg.fault,
            offset,
        }),
    })
}

/// A faulty bottleneck entry, built by hand (`inventory` would register it globally).
fn faulty(name: &str, fault: &str, schema: Value) -> PluginEntry {
    PluginEntry {
        kind: Build::Bottleneck(build_faulty).kind(),
        name: name.into(),
        version: "0.0.0".into(),
        description: format!("gaussian_vib with the fault `{fault}`"),
        origin: Origin::Builtin,
        schema,
        example: json!({"latent_dim": 3, "fault": fault}),
        partners: Vec::new(),
        build: Build::Bottleneck(build_faulty),
    }
}

/// The partners, cloned from the built-in registry, and `extra`.
fn registry_with(extra: impl IntoIterator<Item = PluginEntry>) -> Registry {
    let builtin = registry().unwrap();
    let partners = PARTNERS
        .iter()
        .map(|(kind, name, _)| builtin.get(*kind, name).unwrap().clone());
    Registry::from_entries(partners.chain(extra)).unwrap()
}

#[test]
fn a_detached_log_variance_fails_the_gradient_check() -> vaezoo::Result<()> {
    let reg = registry_with([faulty(
        "broken_vib",
        "detach_log_var",
        schema_of::<FaultyConfig>(),
    )]);
    let report = check_plugin(&reg, "broken_vib")?;
    println!("{report}");
    assert!(!report.passed());
    let gradients = report.check("gradients").expect("the gradient check ran");
    assert!(gradients.is_err(), "{report}");
    assert_eq!(report.failed(), ["gradients"], "{report}");
    Ok(())
}

#[test]
fn each_check_catches_its_fault() -> vaezoo::Result<()> {
    let cases: [(&str, &str, &[&str]); 7] = [
        ("sound_vib", "none", &[]),
        ("idle_vib", "unused_param", &["gradients"]),
        ("noisy_vib", "noisy_eval", &["deterministic eval"]),
        ("stateful_vib", "build_state", &["checkpoint"]),
        ("nan_vib", "nan_log_var", &["shapes", "kl", "gradients"]),
        ("panicky_vib", "panic", &CHECKS[1..]),
        ("lax_vib", "none", &["schema"]),
    ];
    let reg = registry_with(cases.iter().map(|&(name, fault, _)| {
        let schema = match name {
            "lax_vib" => schema_of::<LaxConfig>(),
            _ => schema_of::<FaultyConfig>(),
        };
        faulty(name, fault, schema)
    }));
    for (name, _, expected) in cases {
        let report = check_plugin(&reg, name)?;
        println!("{report}");
        assert_eq!(report.failed(), expected, "{report}");
    }
    let panicky = check_plugin(&reg, "panicky_vib")?;
    let why = panicky.check("shapes").unwrap().as_ref().unwrap_err();
    assert!(why.starts_with("panicked: deliberately broken"), "{why}");
    Ok(())
}

#[test]
fn an_unknown_plugin_is_an_error() -> vaezoo::Result<()> {
    let err = check_plugin(registry()?, "no_such_plugin").unwrap_err();
    assert!(err.to_string().contains("no_such_plugin"), "{err}");
    Ok(())
}
