//! The training objective: KL schedules per term, β and capacity (`beta_vae`), and a schedule
//! naming a term the model lacks, each checked against the value computed from the losses.

use serde_json::json;
use vaezoo::model::Model;
use vaezoo_core::axes::{Batch, Feature};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Observation, Progress};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::Spec;

const DIMS: DataDims = DataDims {
    features: 5,
    classes: 0,
    vocab: 0,
};

fn spec(bottleneck: serde_json::Value, training: serde_json::Value) -> Spec {
    serde_json::from_value(json!({
        "name": "objective",
        "data": {"format": "idx", "dir": "."},
        "encoder": {"kind": "mlp_encoder", "config": {"hidden": [4]}},
        "bottleneck": bottleneck,
        "prior": {"kind": "standard_normal"},
        "decoder": {"kind": "mlp_decoder", "config": {"likelihood": {"type": "bernoulli"}}},
        "training": training,
    }))
    .unwrap()
}

/// The objective's value, and the batch means of rec and KL it was computed from.
fn objective(spec: &Spec, step: u64) -> vaezoo::Result<(f32, f32, f32)> {
    let (model, init) = Model::build(vaezoo::registry()?, spec, DIMS, &mut seeded(1))?;
    let params = ParamStore::new(&Cpu::default(), init);
    let x: Vec<f32> = (0..15).map(|i| (i % 7) as f32 / 7.0).collect();
    let obs = Observation {
        x: params.device().tensor_from_vec(x, (Batch(3), Feature(5))),
        labels: None,
        tokens: None,
    };
    let mut rng = seeded(2);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let losses = model.losses(&mut ctx, &obs)?;
    let progress = Progress {
        step,
        total_steps: 100,
        epochs: 1,
    };
    let o = model.objective(losses, &spec.training, progress)?;
    Ok((o.value, o.rec, o.kl))
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(1.0)
}

#[test]
fn a_linear_schedule_scales_the_kl_term() {
    let vib = json!({"kind": "gaussian_vib", "config": {"latent_dim": 2}});
    let warm =
        json!({"kl_weight": 2.0, "kl_schedules": {"kl": {"type": "linear", "warmup_steps": 10}}});
    for (step, factor) in [(0, 0.0), (5, 1.0), (50, 2.0)] {
        let (value, rec, kl) = objective(&spec(vib.clone(), warm.clone()), step).unwrap();
        assert!(
            close(value, rec + factor * kl),
            "step {step}: {value} vs {rec} + {factor}·{kl}"
        );
    }
    let star = json!({"kl_schedules": {"*": {"type": "constant", "value": 0.25}}});
    let (value, rec, kl) = objective(&spec(vib, star), 0).unwrap();
    assert!(close(value, rec + 0.25 * kl), "{value}");
}

#[test]
fn beta_and_capacity_shape_the_kl_term() {
    let beta = |capacity: serde_json::Value| {
        let mut config = json!({"latent_dim": 2, "beta": 4.0});
        if !capacity.is_null() {
            config["capacity"] = capacity;
        }
        spec(json!({"kind": "beta_vae", "config": config}), json!({}))
    };
    let (value, rec, kl) = objective(&beta(json!(null)), 0).unwrap();
    assert!(close(value, rec + 4.0 * kl), "{value}");
    let capacity = json!({"max_nats": 50.0, "steps": 100});
    for step in [0, 10, 100] {
        let (value, rec, kl) = objective(&beta(capacity.clone()), step).unwrap();
        let c = 50.0 * step as f32 / 100.0;
        assert!(
            close(value, rec + 4.0 * (kl - c).abs()),
            "step {step}: {value}"
        );
    }
}

#[test]
fn a_schedule_for_a_missing_term_is_an_error() {
    let vib = json!({"kind": "gaussian_vib", "config": {"latent_dim": 2}});
    let typo = json!({"kl_schedules": {"kl_g": {"type": "constant", "value": 1.0}}});
    let err = objective(&spec(vib, typo), 0).err().unwrap().to_string();
    assert!(
        err.contains("a schedule for `kl_g`") && err.contains("[kl]"),
        "{err}"
    );
}
