//! Exact-value and finite-difference gradient tests of the `gaussian` plugins:
//!
//! - `standard_normal`: the closed-form KL against an f64 host computation (one and two
//!   components, with a mask), its sign and zero, its exact gradients and finite differences;
//! - `gaussian_vib`: its heads against an f64 host computation, Eval mode (z = mean, no
//!   randomness), Train mode (z = μ + exp(lv/2)·ε with ε from the host generator), and
//!   gradients w.r.t. its parameters and its input states against finite differences.

use vaezoo_core::axes::{Batch, Comp, Latent, Model, Seq};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, Mode, Prior};
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_core::Traced;
use vaezoo_gaussian::{GaussianVib, GaussianVibConfig, StandardNormal};

const BATCH: usize = 3;
const LATENT: usize = 2;

/// Means and log-variances for up to 2 components of a (3, Comp, 2) posterior, row-major.
const MEANS: [f32; 12] = [
    0.3, -1.2, 0.0, 0.7, 1.5, -0.4, -0.8, 0.25, 0.9, -1.1, 0.05, 0.6,
];
const LOG_VARS: [f32; 12] = [
    0.2, -0.5, 1.1, -1.3, 0.0, 0.4, -0.9, 0.7, 0.35, -0.15, 1.4, -0.6,
];

/// A store holding `mean` and `log_var`, `(BATCH, comps, LATENT)` each.
fn posterior_store(
    mean: &[f32],
    log_var: &[f32],
    comps: usize,
) -> (ParamStore<Cpu>, ParamId, ParamId) {
    let mut rng = seeded(0);
    let mut pb = ParamBuilder::new(&mut rng);
    let shape = [BATCH, comps, LATENT];
    let m = pb.declare("mean", &shape, mean.to_vec());
    let lv = pb.declare("log_var", &shape, log_var.to_vec());
    (ParamStore::new(&Cpu::default(), pb.finish()), m, lv)
}

/// A posterior read from the store: `z` is a second handle on the mean.
fn posterior(
    p: &ParamStore<Cpu>,
    m: ParamId,
    lv: ParamId,
    comps: usize,
    mask: Option<Vec<bool>>,
) -> Mixture<Cpu> {
    let shape = (Batch(BATCH), Comp(comps), Latent(LATENT));
    let mean = p.get(m, shape);
    Mixture::gaussian(mean.reuse(), mean, Some(p.get(lv, shape)), mask)
}

/// KL(q ‖ N(0, I)) per example, in f64: ½ Σ (μ² + e^lv − 1 − lv) over unmasked components.
fn host_kl(mean: &[f32], log_var: &[f32], comps: usize, mask: Option<&[bool]>) -> Vec<f64> {
    (0..BATCH)
        .map(|b| {
            (0..comps)
                .filter(|&c| mask.is_none_or(|m| m[b * comps + c]))
                .map(|c| {
                    (0..LATENT)
                        .map(|l| {
                            let i = (b * comps + c) * LATENT + l;
                            let (mu, lv) = (mean[i] as f64, log_var[i] as f64);
                            0.5 * (mu * mu + lv.exp() - 1.0 - lv)
                        })
                        .sum::<f64>()
                })
                .sum()
        })
        .collect()
}

/// The KL the prior computes, per example.
fn plugin_kl(mean: &[f32], log_var: &[f32], comps: usize, mask: Option<Vec<bool>>) -> Vec<f32> {
    let (params, m, lv) = posterior_store(mean, log_var, comps);
    let mut rng = seeded(1);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let q = posterior(&params, m, lv, comps, mask);
    let terms = StandardNormal.kl(&mut ctx, &q, None).unwrap();
    assert_eq!(terms.len(), 1);
    assert_eq!(terms[0].name, "kl");
    assert_eq!(terms[0].value.shape(), &(Batch(BATCH),));
    terms[0].value.as_vec()
}

fn assert_close_rel(got: &[f32], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= rel * w.abs().max(1e-3),
            "{what}[{i}]: got {g}, want {w} (error {err})"
        );
    }
}

#[test]
fn kl_matches_the_closed_form_with_one_component() {
    let (mean, log_var) = (&MEANS[..6], &LOG_VARS[..6]);
    let got = plugin_kl(mean, log_var, 1, None);
    assert_close_rel(&got, &host_kl(mean, log_var, 1, None), 1e-5, "kl");
}

#[test]
fn kl_of_masked_components_is_zero() {
    // Example 0 keeps its first component, 1 keeps both, 2 keeps its second.
    let mask = vec![true, false, true, true, false, true];
    let got = plugin_kl(&MEANS, &LOG_VARS, 2, Some(mask.clone()));
    let want = host_kl(&MEANS, &LOG_VARS, 2, Some(&mask));
    assert_close_rel(&got, &want, 1e-5, "masked kl");
    // The masked components carry a KL of their own, so ignoring the mask would fail above.
    let unmasked = host_kl(&MEANS, &LOG_VARS, 2, None);
    for b in [0, 2] {
        assert!(
            (unmasked[b] - want[b]).abs() > 0.1,
            "example {b}: the dropped component must matter"
        );
    }
    // Without a mask every component counts.
    let all = plugin_kl(&MEANS, &LOG_VARS, 2, None);
    assert_close_rel(&all, &unmasked, 1e-5, "unmasked kl");
}

#[test]
fn kl_is_non_negative_and_zero_at_the_prior() {
    let zeros = vec![0.0; 12];
    assert_eq!(plugin_kl(&zeros, &zeros, 2, None), vec![0.0; BATCH]);
    for seed in 0..20 {
        let mut rng = seeded(seed);
        let mean = normal_vec(&mut rng, 12);
        let log_var: Vec<f32> = normal_vec(&mut rng, 12).iter().map(|v| 2.0 * v).collect();
        let kl = plugin_kl(&mean, &log_var, 2, None);
        assert!(kl.iter().all(|&k| k > 0.0), "seed {seed}: {kl:?}");
        assert_close_rel(&kl, &host_kl(&mean, &log_var, 2, None), 1e-5, "random kl");
    }
}

/// Σ_b w_b KL_b, with the posterior's tape merged in.
fn weighted_kl_loss(
    p: &ParamStore<Cpu>,
    m: ParamId,
    lv: ParamId,
    comps: usize,
    mask: Option<Vec<bool>>,
) -> Traced<(), Cpu> {
    let mut rng = seeded(1);
    let mut ctx = Ctx {
        params: p,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let q = posterior(p, m, lv, comps, mask);
    let kl = StandardNormal
        .kl(&mut ctx, &q, None)
        .unwrap()
        .remove(0)
        .value;
    // Distinct weights per example, so that a gradient landing on the wrong example shows.
    let w = p
        .device()
        .tensor_from_vec(vec![1.0, 2.0, 3.0], (Batch(BATCH),));
    let loss = (kl * w).sum::<(), _>();
    let (l, t) = loss.split_tape();
    l.put_tape(t.merge(q.into_tape()))
}

#[test]
fn kl_gradients_are_exact() {
    // dKL/dμ = μ, dKL/dlv = ½(e^lv − 1), both zero on masked components.
    let mask = vec![true, false, true, true, false, true];
    let (params, m, lv) = posterior_store(&MEANS, &LOG_VARS, 2);
    let mut grads = weighted_kl_loss(&params, m, lv, 2, Some(mask.clone())).backward();
    let mut out = vec![Vec::new(); params.len()];
    params.gradients_into(&mut grads, &mut out);
    for i in 0..12 {
        let b = i / (2 * LATENT);
        let keep = if mask[i / LATENT] { 1.0 } else { 0.0 };
        let w = (b + 1) as f64 * keep;
        let want_mean = w * MEANS[i] as f64;
        let want_lv = w * 0.5 * ((LOG_VARS[i] as f64).exp() - 1.0);
        assert!(
            (out[m.0][i] as f64 - want_mean).abs() < 1e-5,
            "dmean[{i}]: {} vs {want_mean}",
            out[m.0][i]
        );
        assert!(
            (out[lv.0][i] as f64 - want_lv).abs() < 1e-5,
            "dlog_var[{i}]: {} vs {want_lv}",
            out[lv.0][i]
        );
    }
}

#[test]
fn kl_gradients_match_finite_differences() {
    for (comps, mask) in [
        (1, None),
        (2, None),
        (2, Some(vec![true, false, true, true, false, true])),
    ] {
        let n = BATCH * comps * LATENT;
        let (mut params, m, lv) = posterior_store(&MEANS[..n], &LOG_VARS[..n], comps);
        let report = GradCheck {
            per_param: n,
            ..Default::default()
        }
        .run(&mut params, |p| {
            weighted_kl_loss(p, m, lv, comps, mask.clone())
        })
        .unwrap_or_else(|e| panic!("comps {comps}, mask {mask:?}: {e}"));
        assert_eq!(report.checked, 2 * n);
        assert!(
            report.zero_gradient.is_empty(),
            "{:?}",
            report.zero_gradient
        );
    }
}

// ---------------------------------------------------------------------------------------------
// gaussian_vib

const SEQ: usize = 2;
const MODEL: usize = 4;

struct VibSetup {
    params: ParamStore<Cpu>,
    vib: GaussianVib,
    states: ParamId,
}

/// A `gaussian_vib` from `MODEL` to `LATENT`, and input states `(BATCH, SEQ, MODEL)` declared
/// as the last parameter.
fn vib_setup() -> VibSetup {
    let mut rng = seeded(11);
    let mut pb = ParamBuilder::new(&mut rng);
    let vib = GaussianVib::new(&GaussianVibConfig { latent_dim: LATENT }, &mut pb, MODEL);
    let values = normal_vec(&mut seeded(12), BATCH * SEQ * MODEL);
    let states = pb.declare("states", &[BATCH, SEQ, MODEL], values);
    VibSetup {
        params: ParamStore::new(&Cpu::default(), pb.finish()),
        vib,
        states,
    }
}

fn states_of(p: &ParamStore<Cpu>, id: ParamId, mask: Option<Vec<bool>>) -> EncoderStates<Cpu> {
    EncoderStates {
        states: p.get(id, (Batch(BATCH), Seq(SEQ), Model(MODEL))),
        mask,
    }
}

fn param(p: &ParamStore<Cpu>, name: &str) -> Vec<f64> {
    let i = (0..p.len())
        .find(|&i| p.name(i) == name)
        .unwrap_or_else(|| panic!("no parameter `{name}`"));
    p.host(i).iter().map(|&v| v as f64).collect()
}

/// `h W + b` per position, in f64, from the parameters named `head.weight`, `head.bias`.
fn host_head(p: &ParamStore<Cpu>, head: &str, states: &[f64]) -> Vec<f64> {
    let w = param(p, &format!("{head}.weight"));
    let b = param(p, &format!("{head}.bias"));
    assert_eq!((w.len(), b.len()), (MODEL * LATENT, LATENT));
    let mut out = Vec::new();
    for row in states.chunks(MODEL) {
        for o in 0..LATENT {
            out.push(b[o] + (0..MODEL).map(|i| row[i] * w[i * LATENT + o]).sum::<f64>());
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn vib_heads_match_a_host_computation_and_keep_the_mask() {
    let s = vib_setup();
    let mask = vec![true, false, true, true, false, true];
    let mut rng = seeded(5);
    let mut ctx = Ctx {
        params: &s.params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let q = s
        .vib
        .forward(&mut ctx, states_of(&s.params, s.states, Some(mask.clone())))
        .unwrap();
    assert_eq!(q.dims(), (Batch(BATCH), Comp(SEQ), Latent(LATENT)));
    assert_eq!(q.mask, Some(mask));
    let h = param(&s.params, "states");
    assert_close(
        &q.mean.as_vec(),
        &host_head(&s.params, "mean", &h),
        1e-5,
        "mean",
    );
    let log_var = q
        .log_var
        .as_ref()
        .expect("a Gaussian posterior has a variance");
    assert_close(
        &log_var.as_vec(),
        &host_head(&s.params, "log_var", &h),
        1e-5,
        "log_var",
    );
}

#[test]
fn vib_eval_returns_the_mean_whatever_the_seed() {
    let s = vib_setup();
    let mut zs = Vec::new();
    for seed in [1, 2] {
        let mut rng = seeded(seed);
        let mut ctx = Ctx {
            params: &s.params,
            mode: Mode::Eval,
            rng: &mut rng,
        };
        let q = s
            .vib
            .forward(&mut ctx, states_of(&s.params, s.states, None))
            .unwrap();
        let z = q.z.as_vec();
        assert_eq!(
            z,
            q.mean.as_vec(),
            "seed {seed}: z must be the mean exactly"
        );
        zs.push(z);
    }
    assert_eq!(zs[0], zs[1]);
}

#[test]
fn vib_train_samples_with_the_host_noise() {
    let s = vib_setup();
    let n = BATCH * SEQ * LATENT;
    let mut zs = Vec::new();
    for seed in [1, 2] {
        let mut rng = seeded(seed);
        let mut ctx = Ctx {
            params: &s.params,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let q = s
            .vib
            .forward(&mut ctx, states_of(&s.params, s.states, None))
            .unwrap();
        let eps = normal_vec(&mut seeded(seed), n);
        let mean = q.mean.as_vec();
        let log_var = q.log_var.as_ref().unwrap().as_vec();
        let want: Vec<f64> = (0..n)
            .map(|i| mean[i] as f64 + (log_var[i] as f64 / 2.0).exp() * eps[i] as f64)
            .collect();
        let z = q.z.as_vec();
        assert_close(&z, &want, 1e-6, "z");
        assert!(
            z.iter().zip(&mean).all(|(a, b)| (a - b).abs() > 1e-4),
            "seed {seed}: a training sample differs from the mean"
        );
        zs.push(z);
    }
    assert_ne!(zs[0], zs[1], "different seeds give different samples");
}

/// Σ z² + Σ sin(2z) + Σ_b w_b KL_b for a Train-mode forward with a fixed seed.
fn vib_loss(
    vib: &GaussianVib,
    p: &ParamStore<Cpu>,
    states: ParamId,
    mask: Option<Vec<bool>>,
) -> Traced<(), Cpu> {
    let mut rng = seeded(7);
    let mut ctx = Ctx {
        params: p,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let q = vib.forward(&mut ctx, states_of(p, states, mask)).unwrap();
    let kl = StandardNormal
        .kl(&mut ctx, &q, None)
        .unwrap()
        .remove(0)
        .value;
    let w = p
        .device()
        .tensor_from_vec(vec![1.0, 0.5, 2.0], (Batch(BATCH),));
    let z = q.z.reuse();
    let loss = (z.reuse().square() + (z * 2.0).sin()).sum::<(), _>() + (kl * w).sum::<(), _>();
    let (l, t) = loss.split_tape();
    l.put_tape(t.merge(q.into_tape()))
}

#[test]
fn vib_train_gradients_match_finite_differences() {
    for mask in [None, Some(vec![true, false, true, true, false, true])] {
        let VibSetup {
            mut params,
            vib,
            states,
        } = vib_setup();
        let report = GradCheck {
            per_param: 8,
            ..Default::default()
        }
        .run(&mut params, |p| vib_loss(&vib, p, states, mask.clone()))
        .unwrap_or_else(|e| panic!("mask {mask:?}: {e}"));
        // mean.weight (8), mean.bias (2), log_var.weight (8), log_var.bias (2), states (24).
        assert_eq!(report.checked, 8 + 2 + 8 + 2 + 8);
        assert!(
            report.zero_gradient.is_empty(),
            "{:?}",
            report.zero_gradient
        );
    }
}
