//! The conformance checks of attention plugins, which are no spec slot of their own: the plugin
//! reads a small fixed mixture latent (4 components, one of them absent in every row, weights
//! π) with fixed queries, under the same six check names as every other plugin.

use std::collections::BTreeMap;

use serde_json::json;
use vaezoo_core::axes::{Batch, Comp, Latent, Seq};
use vaezoo_core::checkpoint::Checkpoint;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::latent::Mixture;
use vaezoo_core::optim::{Adam, AdamConfig};
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Ctx, DynAttention, Mode};
use vaezoo_core::registry::{Build, PluginEntry};
use vaezoo_core::rng::{normal_vec, seeded, uniform_vec};
use vaezoo_core::schema::config_problems;
use vaezoo_core::{Backend, Traced};

use super::{guarded, round_trip, CheckResult, Report, INIT_SEED, NOISE_SEED};

const B: usize = 3;
const C: usize = 4;
const L: usize = 4;
const S: usize = 2;

/// One check of an attention plugin.
type AttentionCheck = fn(&PluginEntry) -> CheckResult;

/// The six checks of an attention plugin.
pub(super) fn report(entry: &PluginEntry) -> Report {
    let checks: [(&'static str, AttentionCheck); 6] = [
        ("schema", schema),
        ("shapes", shapes),
        ("kl", |_| {
            Ok("not applicable: attention has no KL term".into())
        }),
        ("deterministic eval", deterministic_eval),
        ("gradients", gradients),
        ("checkpoint", checkpoint),
    ];
    Report {
        plugin: entry.name.clone(),
        checks: checks
            .into_iter()
            .map(|(name, run)| (name, guarded(|| run(entry))))
            .collect(),
    }
}

/// The module, and its parameters followed by the inputs (queries, z, μ, logσ², π) declared as
/// parameters so that their gradients are checked too.
struct Setup {
    module: Box<dyn DynAttention>,
    params: ParamStore<Cpu>,
    inputs: [ParamId; 5],
}

fn setup(entry: &PluginEntry, seed: u64) -> Result<Setup, String> {
    let Build::Attention(build) = entry.build else {
        return Err(format!("`{}` is not an attention plugin", entry.name));
    };
    let mut rng = seeded(seed);
    let mut pb = ParamBuilder::new(&mut rng);
    pb.set_prefix("attention");
    let module = build(&entry.example, &mut pb, L).map_err(|e| e.to_string())?;
    pb.set_prefix("input");
    let draw = |s: u64, n: usize| normal_vec(&mut seeded(s), n);
    let inputs = [
        pb.declare("queries", &[B, S, L], draw(101, B * S * L)),
        pb.declare("z", &[B, C, L], draw(102, B * C * L)),
        pb.declare("mean", &[B, C, L], draw(103, B * C * L)),
        pb.declare(
            "log_var",
            &[B, C, L],
            draw(104, B * C * L).iter().map(|v| v * 0.3 - 0.5).collect(),
        ),
        pb.declare(
            "pi",
            &[B, C],
            uniform_vec(&mut seeded(105), B * C, 0.1, 0.6),
        ),
    ];
    pb.check_size().map_err(|e| e.to_string())?;
    Ok(Setup {
        module,
        params: ParamStore::new(&Cpu::default(), pb.finish()),
        inputs,
    })
}

/// Σ output ⊙ w (w fixed), with the latent's tape merged, in `mode` with noise from `seed`.
fn output(
    s: &Setup,
    params: &ParamStore<Cpu>,
    mode: Mode,
    seed: u64,
) -> Result<Traced<(Batch, Seq, Latent), Cpu>, String> {
    let [q, z, mean, log_var, pi] = s.inputs;
    let (b, c, l) = (Batch(B), Comp(C), Latent(L));
    let mut latent = Mixture::gaussian(
        params.get(z, (b, c, l)),
        params.get(mean, (b, c, l)),
        Some(params.get(log_var, (b, c, l))),
        None,
    );
    latent.mask = Some((0..B * C).map(|i| i % C != (i / C) % C).collect());
    latent.weights = Some(params.get(pi, (b, c)));
    let mut rng = seeded(seed);
    let mut ctx = Ctx {
        params,
        mode,
        rng: &mut rng,
    };
    let out = Cpu::attention(&*s.module)
        .attend(&mut ctx, params.get(q, (b, Seq(S), l)), &latent)
        .map_err(|e| e.to_string())?;
    let (out, tape) = out.split_tape();
    Ok(out.put_tape(tape.merge(latent.into_tape())))
}

fn schema(entry: &PluginEntry) -> CheckResult {
    let problems = config_problems(entry, &entry.example).map_err(|e| e.to_string())?;
    if !problems.is_empty() {
        return Err(format!(
            "the example config is invalid: {}",
            problems.join("; ")
        ));
    }
    let mut extra = entry.example.clone();
    extra["__unknown__"] = json!(1);
    if config_problems(entry, &extra)
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        return Err("the schema accepts an unknown config field".into());
    }
    setup(entry, INIT_SEED)?;
    Ok("example valid and builds, unknown config field rejected".into())
}

fn shapes(entry: &PluginEntry) -> CheckResult {
    let s = setup(entry, INIT_SEED)?;
    for mode in [Mode::Train, Mode::Eval] {
        let out = output(&s, &s.params, mode, NOISE_SEED)?;
        if *out.shape() != (Batch(B), Seq(S), Latent(L)) {
            return Err(format!(
                "{mode:?}: output {:?}, want ({B}, {S}, {L})",
                out.shape()
            ));
        }
        if let Some(x) = out.as_vec().iter().find(|x| !x.is_finite()) {
            return Err(format!("{mode:?}: output has the value {x}"));
        }
    }
    Ok(format!(
        "({B}, {S}, {L}) and finite in training and evaluation, with an absent component per row"
    ))
}

fn deterministic_eval(entry: &PluginEntry) -> CheckResult {
    let s = setup(entry, INIT_SEED)?;
    let a = output(&s, &s.params, Mode::Eval, 10)?.as_vec();
    let b = output(&s, &s.params, Mode::Eval, 11)?.as_vec();
    if a.iter()
        .map(|x| x.to_bits())
        .ne(b.iter().map(|x| x.to_bits()))
    {
        return Err("two evaluation passes with different seeds differ".into());
    }
    Ok("bit-identical across RNG seeds".into())
}

fn gradients(entry: &PluginEntry) -> CheckResult {
    let mut s = setup(entry, INIT_SEED)?;
    let w = Cpu::default().tensor_from_vec(
        normal_vec(&mut seeded(106), B * S * L),
        (Batch(B), Seq(S), Latent(L)),
    );
    let mut params = std::mem::replace(&mut s.params, ParamStore::new(&Cpu::default(), Vec::new()));
    let mut details = Vec::new();
    for mode in [Mode::Train, Mode::Eval] {
        let mut failure = None;
        let report = GradCheck::default()
            .run(&mut params, |p| match output(&s, p, mode, NOISE_SEED) {
                Ok(out) => (out * w.clone()).sum(),
                Err(e) => {
                    failure = Some(e);
                    Cpu::default()
                        .zeros::<Rank0>()
                        .put_tape(OwnedTape::default())
                }
            })
            .map_err(|e| format!("{mode:?}: {e}"))?;
        if let Some(e) = failure {
            return Err(e);
        }
        let own: Vec<_> = report
            .zero_gradient
            .iter()
            .filter(|n| n.starts_with("attention."))
            .collect();
        // Every parameter must reach the output in training. Evaluation may leave some out
        // (the official v1.0 module ignores its key and value biases there, and HEAD's key
        // bias only shifts all the logits of a query, which cancels in the softmax); the
        // finite differences above have checked every gradient it does compute.
        if mode == Mode::Train && !own.is_empty() {
            return Err(format!("{mode:?}: no gradient reaches {own:?}"));
        }
        details.push(format!(
            "{mode:?} {} coordinates (max err {:.1e})",
            report.checked, report.max_abs_err
        ));
    }
    Ok(format!(
        "{}; every parameter gets a gradient in training",
        details.join(", ")
    ))
}

fn checkpoint(entry: &PluginEntry) -> CheckResult {
    let s = setup(entry, INIT_SEED)?;
    let before = output(&s, &s.params, Mode::Eval, NOISE_SEED)?.as_vec();
    let saved = Checkpoint {
        step: 0,
        params: s.params.to_host(),
        optimizer: Adam::new(AdamConfig::default(), &s.params).state().clone(),
        rng: seeded(0),
        spec: json!({}),
        trainer: json!({}),
        versions: BTreeMap::from([(entry.name.clone(), entry.version.clone())]),
        torch_views: BTreeMap::new(),
    };
    let loaded = round_trip(&saved)?;
    let mut other = setup(entry, INIT_SEED + 1)?;
    other
        .params
        .load_host(&loaded.params)
        .map_err(|e| format!("loading: {e}"))?;
    let after = output(&other, &other.params, Mode::Eval, NOISE_SEED)?.as_vec();
    if before
        .iter()
        .map(|x| x.to_bits())
        .ne(after.iter().map(|x| x.to_bits()))
    {
        return Err("the original and the reloaded module differ".into());
    }
    Ok(format!("{} parameters saved and reloaded into a module built from another seed; eval bit-identical", saved.params.len()))
}
