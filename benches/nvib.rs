//! NVIB micro-benchmarks, the workloads of `bench/pytorch/nvib_layer.py`: B = 64,
//! Ns = Nt = 32 (Nl = 33), P = 256, 4 heads, source lengths ~ U{16..32}, f32, CPU, v1
//! constants (π floor 1e-8, evaluation penalty Σ log V) as the reference's.
//!
//! - `nvib_layer_fwd_bwd`: the v1 layer in training (Gaussian + Dirichlet sampling), KL_G and
//!   KL_D; backward of Σ z·gz + Σ π·gπ + mean KL_G + mean KL_D to the input and the weights
//!   (Σ z·gz as one product through the fused Linear, see [`upstream`]);
//! - `denoising_attention_fwd_bwd`: training-time multi-head denoising attention (in and out
//!   projections, no biases) on a fixed latent, its output alone (no attention weights, as a
//!   decoder and the reference read it); backward of Σ out·g (through [`upstream`], as above)
//!   to the query, z, π and the weights;
//! - `denoising_attention_eval_fwd`: evaluation-time denoising attention, forward only.
//!
//! dfdx's buffer cache is on, as in training. 100 timed steps after 10 warm-up steps by
//! default. Run: `cargo bench --bench nvib` (`-- --steps N --warmup N --only W[,W]`), with
//! `RAYON_NUM_THREADS` setting the threads; one JSON line per workload (see
//! `benches/common`). `python3 bench/compare.py` runs them against PyTorch.

mod common;

use rand::Rng;
use serde_json::json;
use vaezoo::device::cpu;
use vaezoo_core::axes::{Batch, Comp, Head, Latent, Model, Seq};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::kernels::{Kernels, Weight};
use vaezoo_core::layers::Activation;
use vaezoo_core::rng::{normal_vec, seeded, uniform_vec};
use vaezoo_nvib::attention::{denoising_mha_eval, denoising_mha_train_kept, DaVersion, MhaWeights};
use vaezoo_nvib::kl::{kl_dirichlet, kl_gaussian, DpPrior};
use vaezoo_nvib::layer::{forward, AlphaWeights, Noise, PriorComponent, Version, Weights};

use common::{time_awake_steps, Flags, Timing};

const B: usize = 64;
const NS: usize = 32;
const NT: usize = 32;
const P: usize = 256;
const HEADS: usize = 4;

type T<S> = Tensor<S, f32, Cpu>;

fn tensor<S: Shape>(dev: &Cpu, seed: u64, scale: f32, shape: S) -> T<S> {
    let v = normal_vec(&mut seeded(seed), shape.num_elements())
        .into_iter()
        .map(|x| x * scale)
        .collect();
    dev.tensor_from_vec(v, shape)
}

fn report(workload: &str, timing: &Timing) {
    let config = json!({"ns": NS, "nl": NS + 1, "nt": NT, "dim": P, "heads": HEADS});
    common::report(workload, B, timing, "samples_per_s", config);
}

/// Σ x·g, the loss through which a consumer's gradient `g` reaches `x`, as one (1 × N)·(N × 1)
/// product through the fused Linear, `g` the untraced input and `x` the weight: a single pass
/// each way, where dfdx's element-wise product and sum take two (and compute a gradient for the
/// constant `g` too), which would cost more than the layer's own kernels.
fn upstream<S: Shape>(
    x: Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>,
    g: &T<S>,
) -> Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>> {
    let n = x.shape().num_elements();
    let g = g.clone().reshape_like(&(1usize, n));
    let w = Weight::InOut(x.reshape_like(&(n, 1usize)));
    Cpu::linear(g, w, None, Activation::Identity).reshape_like(&())
}

/// The whole benchmark on rayon's pool, as the `vaezoo` commands run.
fn main() -> vaezoo::Result<()> {
    vaezoo::device::on_compute_pool(run)
}

fn run() -> vaezoo::Result<()> {
    let flags = Flags::parse();
    let (steps, warmup) = (flags.steps(100), flags.warmup(10));
    // As the trainer: reuse freed buffers instead of faulting in fresh pages every step.
    let dev = cpu();
    let mut rng = seeded(0);
    let keep: Vec<bool> = (0..B)
        .flat_map(|_| {
            let len = rng.gen_range(NS / 2..=NS);
            (0..NS).map(move |i| i < len)
        })
        .collect();
    let (m, l) = (Model(P), Latent(P));
    let bound = 1.0 / (P as f32).sqrt();
    let uni = |seed: u64, n: usize| uniform_vec(&mut seeded(seed), n, -bound, bound);
    let w_mu = dev.tensor_from_vec(uni(1, P * P), (m, l));
    let b_mu = dev.tensor_from_vec(uni(2, P), (l,));
    let w_lv = dev.tensor_from_vec(uni(3, P * P), (m, l));
    let b_lv = dev.tensor_from_vec(uni(4, P), (l,));
    let w_a = dev.tensor_from_vec(uni(5, P), (m,));
    let b_a = dev.tensor_from_vec(uni(6, 1), ());
    let x = tensor(&dev, 7, 1.0, (Batch(B), Seq(NS), m));
    let gz = tensor(&dev, 8, 1.0, (Batch(B), Comp(NS + 1), l));
    let gpi = tensor(&dev, 9, 1.0, (Batch(B), Comp(NS + 1)));
    let layer_weights = || Weights {
        mu_w: w_mu.leaky_trace(),
        mu_b: b_mu.leaky_trace(),
        log_var_w: w_lv.leaky_trace(),
        log_var_b: b_lv.leaky_trace(),
        alpha: AlphaWeights::V1 {
            w: w_a.leaky_trace(),
            b: b_a.leaky_trace(),
        },
    };
    let prior = PriorComponent {
        mu: vec![0.0],
        var: vec![1.0],
        alpha: 1.0,
    };
    let dp = DpPrior::default();

    if flags.selected("nvib_layer_fwd_bwd") {
        let timing = time_awake_steps(steps, warmup, |_| {
            let out = forward(
                x.leaky_trace(),
                &keep,
                layer_weights(),
                &prior,
                Version::V1,
                1,
                Some(Noise::Host(&mut rng)),
            );
            let kl_g = kl_gaussian(
                out.mu.retaped(),
                out.log_var.retaped(),
                out.alpha.retaped(),
                &out.keep,
                &dp,
            );
            let kl_d = kl_dirichlet(out.alpha.retaped(), &out.keep, &dp);
            let tape = out
                .mu
                .split_tape()
                .1
                .merge(out.log_var.split_tape().1)
                .merge(out.alpha.split_tape().1);
            let loss = upstream(out.z, &gz)
                + (out.pi * gpi.clone()).sum::<(), _>()
                + kl_g.mean()
                + kl_d.mean();
            let (loss, t) = loss.split_tape();
            let grads = loss.put_tape(t.merge(tape)).backward();
            std::hint::black_box(grads);
            Ok(B)
        })?;
        report("nvib_layer_fwd_bwd", &timing);
    }

    // A fixed latent from the layer in training mode (its own noise, whatever ran before).
    let mem = forward(
        x.leaky_trace(),
        &keep,
        layer_weights(),
        &prior,
        Version::V1,
        1,
        Some(Noise::Host(&mut seeded(16))),
    );
    let (z, pi, mu, log_var, keep_l) = (
        mem.z.retaped::<NoneTape>(),
        mem.pi.retaped::<NoneTape>(),
        mem.mu.retaped::<NoneTape>(),
        mem.log_var.retaped::<NoneTape>(),
        mem.keep.clone(),
    );
    let query = tensor(&dev, 10, 1.0, (Batch(B), Seq(NT), m));
    let g = tensor(&dev, 11, 1.0, (Batch(B), Seq(NT), m));
    let xavier = (6.0 / (4.0 * P as f32)).sqrt();
    let mat = |seed: u64, b: f32| {
        dev.tensor_from_vec(uniform_vec(&mut seeded(seed), P * P, -b, b), (m, m))
    };
    let (wq, wo) = (mat(12, xavier), mat(15, bound));
    let wk = dev.tensor_from_vec(uniform_vec(&mut seeded(13), P * P, -xavier, xavier), (m, l));
    let wv = dev.tensor_from_vec(uniform_vec(&mut seeded(14), P * P, -xavier, xavier), (m, l));
    let mha = || MhaWeights {
        heads: Head(HEADS),
        q: wq.leaky_trace(),
        k: wk.leaky_trace(),
        v: wv.leaky_trace(),
        out: wo.leaky_trace(),
        bias: None,
    };
    if flags.selected("denoising_attention_fwd_bwd") {
        let timing = time_awake_steps(steps, warmup, |_| {
            // The output alone, as a decoder reads it (and as the reference returns it).
            let latent = (z.leaky_trace(), pi.leaky_trace(), &keep_l[..]);
            let out =
                denoising_mha_train_kept(query.leaky_trace(), None, mha(), latent, DaVersion::V1);
            let grads = upstream(out, &g).backward();
            std::hint::black_box(grads);
            Ok(B)
        })?;
        report("denoising_attention_fwd_bwd", &timing);
    }

    if flags.selected("denoising_attention_eval_fwd") {
        let timing = time_awake_steps(steps, warmup, |_| {
            let (out, _) = denoising_mha_eval(
                query.clone().put_tape(OwnedTape::default()),
                mha(),
                mu.clone().put_tape(OwnedTape::default()),
                log_var.clone().put_tape(OwnedTape::default()),
                pi.clone().put_tape(OwnedTape::default()),
                &keep_l,
                DaVersion::V1,
            );
            std::hint::black_box(out.as_vec());
            Ok(B)
        })?;
        report("denoising_attention_eval_fwd", &timing);
    }
    Ok(())
}
