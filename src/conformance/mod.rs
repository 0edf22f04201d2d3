//! The conformance kit: one harness that every registered plugin must pass.
//!
//! [`check_plugin`] puts the plugin under test into its slot of a tiny model, with its
//! registered `example` config, and fills the other slots with the plugins it declares as its
//! `partners`, else with the reference vector-VAE [`PARTNERS`] (`mlp_encoder`, `gaussian_vib`,
//! `standard_normal`, `mlp_decoder`), each with its registered example. The data are
//! fixed: 6 features in (0, 1), 3 classes, a batch of 4, on the `Cpu` device. Then it runs
//! these checks, each of which passes with a detail or fails with the reason:
//!
//! - `schema`: the example config satisfies the spec schema composed from the registry; the
//!   spec reads, writes back, re-validates and reads back equal; and the plugin's schema
//!   rejects an unknown config field (a problem under `/<slot>/config`);
//! - `shapes`: in training, the reconstruction term and every KL term are `(Batch,)` and
//!   finite, and the decoder's mean of two prior samples is `(2, Feature)` and finite (latent
//!   masks are not exposed by the model, so they are not checked);
//! - `kl`: every KL value is finite and ≥ −1e-6, in training and in evaluation;
//! - `deterministic eval`: two evaluation passes with different RNG seeds agree bit for bit;
//! - `gradients`: [`GradCheck`] (a step of 1e-3) of the training objective over all the
//!   model's parameters, with the noise fixed; and every parameter of the plugin under test
//!   (`<slot>.*`) receives a non-zero gradient;
//! - `checkpoint`: the parameters saved with [`Checkpoint::save`], loaded back into a model
//!   built from another seed, give bit-identical evaluation losses.
//!
//! A plugin's error or panic never escapes: it becomes that check's failure (a panic reads
//! `panicked: <message>`). Only a name the registry does not know is an error.
//!
//! # Running it on your own plugin
//!
//! In a plugin crate with `vaezoo` as a dev-dependency (which links the partners), keep your
//! crate's `inventory` submissions in the test binary and check your plugin:
//!
//! ```ignore
//! // tests/conformance.rs of the crate `my_plugin`, which registers `my_vib`.
//! #[test]
//! fn my_vib_conforms() -> vaezoo::Result<()> {
//!     my_plugin::link(); // references the crate, so the linker keeps its plugins
//!     let report = vaezoo::conformance::check_plugin(vaezoo::registry()?, "my_vib")?;
//!     assert!(report.passed(), "{report}");
//!     Ok(())
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{json, Value};
use vaezoo_core::axes::{Batch, Feature};
use vaezoo_core::backend::lift;
use vaezoo_core::checkpoint::Checkpoint;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::optim::{Adam, AdamConfig};
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Progress};
use vaezoo_core::registry::{PluginEntry, PluginKind, Registry};
use vaezoo_core::rng::seeded;
use vaezoo_core::schema::{parse_spec, SpecValidator};
use vaezoo_core::spec::{Spec, TrainingSpec};
use vaezoo_core::Error as CoreError;

use crate::model::Model;

mod attention;
mod fixture;

pub use fixture::PARTNERS;
use fixture::{
    losses, round_trip, same_bits, spec_json, terms, BATCH, DIMS, FEATURES, INIT_SEED, NOISE_SEED,
};

/// The outcome of one check: `Ok(detail)` or `Err(why it failed)`.
pub type CheckResult = Result<String, String>;

/// The conformance checks of one plugin, in the order they ran.
#[derive(Clone, Debug)]
pub struct Report {
    /// The plugin's registered name.
    pub plugin: String,
    /// `(check name, outcome)`.
    pub checks: Vec<(&'static str, CheckResult)>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|(_, result)| result.is_ok())
    }

    /// The outcome of the check called `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|(n, _)| *n == name).map(|(_, r)| r)
    }

    /// The names of the failed checks, in order.
    pub fn failed(&self) -> Vec<&'static str> {
        let failed = self.checks.iter().filter(|(_, r)| r.is_err());
        failed.map(|(name, _)| *name).collect()
    }
}

impl fmt::Display for Report {
    /// `plugin <name>:`, then one line per check, `ok   <check>: <detail>` or
    /// `FAIL <check>: <why>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {}:", self.plugin)?;
        for (name, result) in &self.checks {
            let (status, text) = match result {
                Ok(detail) => ("ok", detail),
                Err(why) => ("FAIL", why),
            };
            write!(
                f,
                "\n  {status:<4} {name}: {}",
                text.trim().replace('\n', "; ")
            )?;
        }
        Ok(())
    }
}

/// Runs every check on the plugin `name` of `registry`; an unknown name is the only error.
pub fn check_plugin(registry: &Registry, name: &str) -> crate::Result<Report> {
    let Some(entry) = registry.entries().find(|e| e.name == name) else {
        let known: Vec<&str> = registry.entries().map(|e| e.name.as_str()).collect();
        let (kind, name, known) = ("registered".into(), name.into(), known.join(", "));
        return Err(CoreError::UnknownPlugin { kind, name, known }.into());
    };
    if entry.kind == PluginKind::Attention {
        return Ok(attention::report(entry));
    }
    let kit = Kit {
        registry,
        entry,
        spec: spec_json(registry, entry),
    };
    let checks: [(&'static str, Check<'_>); 6] = [
        ("schema", Kit::schema),
        ("shapes", Kit::shapes),
        ("kl", Kit::kl),
        ("deterministic eval", Kit::deterministic_eval),
        ("gradients", Kit::gradients),
        ("checkpoint", Kit::checkpoint),
    ];
    let checks = checks
        .into_iter()
        .map(|(check, run)| (check, guarded(|| run(&kit))));
    Ok(Report {
        plugin: name.to_string(),
        checks: checks.collect(),
    })
}

/// [`check_plugin`] for every plugin of `registry`, by name.
pub fn check_all(registry: &Registry) -> crate::Result<Vec<Report>> {
    let names = registry.entries().map(|e| e.name.as_str());
    names.map(|name| check_plugin(registry, name)).collect()
}

/// Runs a check, turning a panic into its failure.
fn guarded(check: impl FnOnce() -> CheckResult) -> CheckResult {
    catch_unwind(AssertUnwindSafe(check)).unwrap_or_else(|payload| {
        let message = (payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        Err(format!("panicked: {message}"))
    })
}

/// One check of a [`Kit`].
type Check<'r> = fn(&Kit<'r>) -> CheckResult;

/// One plugin under test, with its test spec.
struct Kit<'a> {
    registry: &'a Registry,
    entry: &'a PluginEntry,
    spec: Value,
}

impl Kit<'_> {
    /// The test model with parameters drawn from `seed`.
    fn build(&self, seed: u64) -> Result<(Model, ParamStore<Cpu>), String> {
        let spec: Spec = serde_json::from_value(self.spec.clone())
            .map_err(|e| format!("the test spec does not read: {e}"))?;
        let (model, host) = Model::build(self.registry, &spec, DIMS, &mut seeded(seed))
            .map_err(|e| format!("build: {e}"))?;
        Ok((model, ParamStore::new(&Cpu::default(), host)))
    }

    fn schema(&self) -> CheckResult {
        let validator = SpecValidator::new(self.registry).map_err(|e| e.to_string())?;
        let problems = |v: &Value| match validator.problems(v) {
            p if p.is_empty() => Ok(()),
            p => Err(p.join("; ")),
        };
        problems(&self.spec).map_err(|p| format!("the example config: {p}"))?;
        let parse = |label: &str, v: &Value| {
            let parsed = parse_spec(label, &v.to_string(), &validator);
            parsed.map(|(spec, _)| spec).map_err(|e| e.to_string())
        };
        let spec = parse("conformance", &self.spec)?;
        let written = serde_json::to_value(&spec).map_err(|e| format!("writing: {e}"))?;
        problems(&written).map_err(|p| format!("the spec written back: {p}"))?;
        let reread = parse("written back", &written)?;
        if reread != spec {
            return Err(format!(
                "the spec reads back different: {reread:?} vs {spec:?}"
            ));
        }
        let slot = self.entry.kind.as_str();
        let mut extra = self.spec.clone();
        let Some(config) = extra[slot]["config"].as_object_mut() else {
            return Err("the example config is not a JSON object".into());
        };
        config.insert("__unknown__".into(), json!(1));
        let (pointer, problems) = (format!("/{slot}/config"), validator.problems(&extra));
        if !problems.iter().any(|p| p.starts_with(&pointer)) {
            return Err(format!(
                "the schema accepts an unknown config field `__unknown__` (problems: [{}])",
                problems.join("; ")
            ));
        }
        Ok("example valid, spec round-trips, unknown config field rejected".into())
    }

    fn shapes(&self) -> CheckResult {
        let (model, params) = self.build(INIT_SEED)?;
        let terms = terms(&model, &params, Mode::Train, NOISE_SEED)?;
        for (name, v) in &terms {
            if v.len() != BATCH {
                return Err(format!("{name} has {} values, not {BATCH}", v.len()));
            }
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(format!("{name} has the value {bad}"));
            }
        }
        let mut rng = seeded(NOISE_SEED);
        let mut ctx = Ctx {
            params: &params,
            mode: Mode::Eval,
            rng: &mut rng,
        };
        let names: Vec<&str> = terms.iter().skip(1).map(|(n, _)| n.as_str()).collect();
        let mean = match model.sample(&mut ctx, 2, Some(&[0, 2]), 1.0) {
            Err(crate::Error::Core(CoreError::Unsupported(why))) => {
                return Ok(format!(
                    "rec and KL {names:?} ({BATCH},), all finite; no prior samples ({why})"
                ))
            }
            mean => mean.map_err(|e| format!("sample: {e}"))?,
        };
        let (Batch(rows), Feature(cols)) = *mean.shape();
        if (rows, cols) != (2, FEATURES) {
            return Err(format!("2 samples have a mean of shape ({rows}, {cols})"));
        }
        if let Some(bad) = mean.as_vec().into_iter().find(|x| !x.is_finite()) {
            return Err(format!("the sample mean has the value {bad}"));
        }
        Ok(format!(
            "rec and KL {names:?} ({BATCH},), sample mean (2, {FEATURES}), all finite; no mask exposed"
        ))
    }

    fn kl(&self) -> CheckResult {
        let (model, params) = self.build(INIT_SEED)?;
        let mut detail = Vec::new();
        for mode in [Mode::Train, Mode::Eval] {
            let mut min = f32::INFINITY;
            for (name, values) in terms(&model, &params, mode, NOISE_SEED)?.iter().skip(1) {
                for (i, &v) in values.iter().enumerate() {
                    if !v.is_finite() || v < -1e-6 {
                        return Err(format!("{mode:?}: {name}[{i}] = {v}"));
                    }
                    min = min.min(v);
                }
            }
            if min.is_finite() {
                detail.push(format!("{mode:?} min {min:.3e}"));
            }
        }
        if detail.is_empty() {
            return Ok("no KL terms (nothing to check)".into());
        }
        Ok(format!("finite and ≥ 0 ({})", detail.join(", ")))
    }

    fn deterministic_eval(&self) -> CheckResult {
        let (model, params) = self.build(INIT_SEED)?;
        let a = terms(&model, &params, Mode::Eval, 10)?;
        let b = terms(&model, &params, Mode::Eval, 11)?;
        same_bits(&a, &b, "eval passes with seeds 10 and 11").map(|d| d + " across RNG seeds")
    }

    fn gradients(&self) -> CheckResult {
        let (model, mut params) = self.build(INIT_SEED)?;
        let prefix = format!("{}.", self.entry.kind);
        let own: Vec<String> = (0..params.len())
            .map(|i| params.name(i).to_string())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        let mut failure = None;
        // A step of 1e-3: with 1e-2, perturbing one weight moves other units across their ReLU
        // kinks (Transformer feed-forwards, with dropout's rescaling), and the difference
        // quotient then disagrees with a correct gradient.
        let check = GradCheck {
            eps: 1e-3,
            atol: 5e-3,
            ..GradCheck::default()
        };
        let result = check.run(&mut params, |p| {
            let loss = losses(&model, p, Mode::Train, NOISE_SEED);
            match loss.and_then(|l| {
                model
                    .objective(
                        l,
                        &TrainingSpec::default(),
                        Progress {
                            step: 0,
                            total_steps: 1,
                            epochs: 1,
                        },
                    )
                    .map_err(|e| e.to_string())
            }) {
                Ok(objective) => objective.loss,
                Err(e) => {
                    failure.get_or_insert(e);
                    lift(p.device().zeros())
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let report = result.map_err(|e| {
            // The plugin's own mismatches first: they are usually the cause.
            let (mut shown, rest): (Vec<&str>, Vec<&str>) =
                e.split("; ").partition(|m| m.starts_with(&prefix));
            let total = shown.len() + rest.len();
            shown.extend(rest);
            shown.truncate(4);
            format!("{total} coordinate(s) disagree, e.g. {}", shown.join("; "))
        })?;
        let dead = own.iter().map(String::as_str);
        let dead: Vec<&str> = dead
            .filter(|n| report.zero_gradient.iter().any(|z| z == n))
            .collect();
        if !dead.is_empty() {
            return Err(format!("no gradient reaches {}", dead.join(", ")));
        }
        let own = match own.len() {
            0 => "no parameters of its own".to_string(),
            n => format!("all {n} of its own parameters get a gradient"),
        };
        Ok(format!(
            "{} coordinates of {} parameters match finite differences (max err {:.1e}); {own}",
            report.checked,
            params.len(),
            report.max_abs_err
        ))
    }

    fn checkpoint(&self) -> CheckResult {
        let (model, params) = self.build(INIT_SEED)?;
        let before = terms(&model, &params, Mode::Eval, NOISE_SEED)?;
        let (plugin, version) = (self.entry.name.clone(), self.entry.version.clone());
        let saved = Checkpoint {
            step: 0,
            params: params.to_host(),
            optimizer: Adam::new(AdamConfig::default(), &params).state().clone(),
            rng: seeded(0),
            spec: self.spec.clone(),
            trainer: json!({}),
            versions: BTreeMap::from([(plugin, version)]),
            torch_views: model.torch_views().clone(),
        };
        let loaded = round_trip(&saved)?;
        let (other, mut restored) = self.build(INIT_SEED + 1)?;
        restored
            .load_host(&loaded.params)
            .map_err(|e| format!("loading: {e}"))?;
        let after = terms(&other, &restored, Mode::Eval, NOISE_SEED)?;
        same_bits(&before, &after, "the original and the reloaded model").map(|d| {
            let n = params.len();
            format!(
                "{n} parameters saved and loaded into a model built from another seed; eval {d}"
            )
        })
    }
}
