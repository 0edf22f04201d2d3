//! One training step of the Fashion-MNIST VAE, the workload of `shared/bench/vae_mlp.py`
//! (PyTorch): encoder 784-512-256, latent 32, mirrored decoder, Bernoulli likelihood, Adam 1e-3,
//! batch 128; data 8 fixed batches of Bernoulli(0.5) pixels, cycled. A step is forward,
//! backward, gradient read-out and Adam, exactly as `vaezoo train` runs it.
//!
//! Run: `cargo bench --bench vae_mlp` (`-- --steps N --warmup N`); one JSON line: the median
//! step time after the warm-up, and samples per second.

use std::time::Instant;

use rand::Rng;
use serde_json::json;
use vaezoo::device::cpu;
use vaezoo::model::Model;
use vaezoo_core::axes::{Batch, Feature};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::optim::{Adam, AdamConfig};
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Observation, Progress};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::Spec;

const BATCH: usize = 128;
const FEATURES: usize = 784;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> vaezoo::Result<()> {
    let (steps, warmup) = (arg("--steps", 200), arg("--warmup", 20));
    let spec: Spec = serde_json::from_value(json!({
        "name": "bench",
        "data": {"format": "idx", "dir": "."},
        "encoder": {"kind": "mlp_encoder", "config": {"hidden": [512, 256]}},
        "bottleneck": {"kind": "gaussian_vib", "config": {"latent_dim": 32}},
        "prior": {"kind": "standard_normal"},
        "decoder": {"kind": "mlp_decoder", "config": {"hidden": [256, 512], "likelihood": {"type": "bernoulli"}}}
    }))
    .expect("a valid spec");
    let dims = DataDims {
        features: FEATURES,
        classes: 0,
        vocab: 0,
    };
    let mut rng = seeded(0);
    let (model, init) = Model::build(vaezoo::registry()?, &spec, dims, &mut rng)?;
    let dev = cpu();
    let mut params = ParamStore::new(&dev, init);
    let mut adam = Adam::new(AdamConfig::default(), &params);
    let mut data_rng = seeded(0);
    let batches: Vec<Vec<f32>> = (0..8)
        .map(|_| {
            (0..BATCH * FEATURES)
                .map(|_| f32::from(u8::from(data_rng.gen_bool(0.5))))
                .collect()
        })
        .collect();
    let mut grads = vec![Vec::new(); params.len()];
    let mut times = Vec::with_capacity(steps);
    for step in 0..warmup + steps {
        let started = Instant::now();
        let obs = Observation {
            x: dev.tensor_from_vec(batches[step % 8].clone(), (Batch(BATCH), Feature(FEATURES))),
            labels: None,
            tokens: None,
        };
        let mut ctx = Ctx {
            params: &params,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let losses = model.losses(&mut ctx, &obs)?;
        let objective = model.objective(
            losses,
            &spec.training,
            Progress {
                step: 0,
                total_steps: 1,
                epochs: 1,
            },
        )?;
        let mut g = objective.loss.backward();
        params.gradients_into(&mut g, &mut grads);
        drop(g);
        adam.step(&mut params, &grads);
        if step >= warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"workload\": \"vae_mlp_train\", \"framework\": \"vaezoo\", \"version\": \"{}\", \"threads\": {}, \"batch\": {BATCH}, \"steps\": {steps}, \"median_step_ms\": {median:.3}, \"samples_per_s\": {:.1}, \"params\": {}}}",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        BATCH as f64 / (median / 1e3),
        params.num_scalars()
    );
    Ok(())
}
