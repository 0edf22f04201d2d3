//! `vae_mlp_train`: one training step of the Fashion-MNIST VAE, the workload of
//! `bench/pytorch/vae_mlp.py`: encoder 784-512-256, latent 32, mirrored decoder, Bernoulli
//! likelihood, Adam 1e-3, batch 128 (1,091,920 parameters); data 8 fixed batches of
//! Bernoulli(0.5) pixels, cycled. A step is forward, backward, gradient read-out and Adam,
//! exactly as `vaezoo train` runs it; 200 timed steps after 20 warm-up steps by default.
//!
//! Run: `cargo bench --bench vae_mlp` (`-- --steps N --warmup N`), with `RAYON_NUM_THREADS`
//! setting the threads; one JSON line (see `benches/common`). `python3 bench/compare.py`
//! runs it against the PyTorch reference.

mod common;
mod trainer;

use rand::Rng;
use serde_json::json;
use vaezoo_core::axes::{Batch, Feature};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::plugin::Observation;
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::Spec;

use common::{report, round, time_steps, Flags};
use trainer::Job;

const WORKLOAD: &str = "vae_mlp_train";
const BATCH: usize = 128;
const FEATURES: usize = 784;

/// The whole benchmark on rayon's pool, as the `vaezoo` commands run.
fn main() -> vaezoo::Result<()> {
    vaezoo::device::on_compute_pool(run)
}

fn run() -> vaezoo::Result<()> {
    let flags = Flags::parse();
    if !flags.selected(WORKLOAD) {
        return Ok(());
    }
    let (steps, warmup) = (flags.steps(200), flags.warmup(20));
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
    let mut job = Job::new(spec, dims)?;
    let mut data_rng = seeded(0);
    let batches: Vec<Vec<f32>> = (0..8)
        .map(|_| {
            (0..BATCH * FEATURES)
                .map(|_| f32::from(u8::from(data_rng.gen_bool(0.5))))
                .collect()
        })
        .collect();
    let total = (warmup + steps) as u64;
    let timing = time_steps(steps, warmup, |i| {
        job.step(false, total, |dev| {
            Ok(Observation {
                x: dev.tensor_from_vec(batches[i % 8].clone(), (Batch(BATCH), Feature(FEATURES))),
                labels: None,
                tokens: None,
            })
        })?;
        Ok(BATCH)
    })?;
    let params = job.params.num_scalars();
    let gflop = 6.0 * params as f64 * BATCH as f64 / 1e9;
    let config = json!({
        "params": params,
        "gflop_per_step": round(gflop, 4),
        "gflop_per_s": round(gflop / (timing.median_ms() / 1e3), 1),
    });
    report(WORKLOAD, BATCH, &timing, "samples_per_s", config);
    Ok(())
}
