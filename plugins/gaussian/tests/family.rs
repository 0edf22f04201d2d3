//! Exact-value and finite-difference tests of the vector VAE family's other plugins:
//!
//! - `conditional_normal`: the KL against N(μ_c, σ²_c) and log p(z | c) against f64 host
//!   computations, zero KL when the posterior is the prior row, samples around μ_c, gradients
//!   to the posterior and to the class tables against finite differences, and label errors;
//! - `ae`: a deterministic code with no variance, and its gradients;
//! - `beta_vae`: the forward of `gaussian_vib` on the same parameters, and its KL shaping.

use vaezoo_core::axes::{Batch, Comp, Latent, Model, Seq};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, KlShaping, Mode, Prior, Progress};
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_gaussian::{
    Autoencoder, AutoencoderConfig, BetaVae, BetaVaeConfig, Capacity, ConditionalNormal,
    GaussianVib, GaussianVibConfig,
};

const BATCH: usize = 3;
const LATENT: usize = 2;
const CLASSES: usize = 3;
const LABELS: [usize; BATCH] = [2, 0, 2];

/// A store with a posterior `q.mean`, `q.log_var` `(BATCH, 1, LATENT)` and the prior's
/// tables, filled with values drawn from `seed` (not zero, so that they matter).
fn setup(seed: u64) -> (ParamStore<Cpu>, ConditionalNormal, ParamId, ParamId) {
    let mut rng = seeded(seed);
    let mut pb = ParamBuilder::new(&mut rng);
    let prior = ConditionalNormal::new(&mut pb, LATENT, CLASSES).unwrap();
    let n = BATCH * LATENT;
    let mean = pb.normal("q.mean", &[BATCH, 1, LATENT], 1.0);
    let log_var = pb.normal("q.log_var", &[BATCH, 1, LATENT], 0.5);
    let mut params = ParamStore::new(&Cpu::default(), pb.finish());
    let mut values = seeded(seed + 100);
    for i in 0..2 {
        let v = normal_vec(&mut values, CLASSES * LATENT);
        params
            .set(i, &v.iter().map(|x| x * 0.7).collect::<Vec<_>>())
            .unwrap();
    }
    assert_eq!(params.host(2).len(), n);
    (params, prior, mean, log_var)
}

fn posterior(p: &ParamStore<Cpu>, m: ParamId, lv: ParamId) -> Mixture<Cpu> {
    let shape = (Batch(BATCH), Comp(1), Latent(LATENT));
    let mean = p.get(m, shape);
    Mixture::gaussian(mean.reuse(), mean, Some(p.get(lv, shape)), None)
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn conditional_kl_and_density_match_the_closed_forms() {
    let (params, prior, m, lv) = setup(3);
    let (tm, tlv) = (f64s(params.host(0)), f64s(params.host(1)));
    let (qm, qlv) = (f64s(params.host(2)), f64s(params.host(3)));
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let q = posterior(&params, m, lv);
    let kl = prior.kl(&mut ctx, &q, Some(&LABELS)).unwrap().remove(0);
    assert_eq!(kl.name, "kl");
    let z = q.mean.retaped::<NoneTape>();
    let log_p = prior
        .log_density(&mut ctx, &z, Some(&LABELS))
        .unwrap()
        .unwrap();
    for (b, &c) in LABELS.iter().enumerate() {
        let (mut want_kl, mut want_lp) = (0.0, 0.0);
        for l in 0..LATENT {
            let (pm, plv) = (tm[c * LATENT + l], tlv[c * LATENT + l]);
            let (mu, v) = (qm[b * LATENT + l], qlv[b * LATENT + l]);
            want_kl += 0.5 * (plv - v + (v.exp() + (mu - pm).powi(2)) / plv.exp() - 1.0);
            want_lp +=
                -0.5 * ((2.0 * std::f64::consts::PI).ln() + plv + (mu - pm).powi(2) / plv.exp());
        }
        let (got_kl, got_lp) = (kl.value.as_vec()[b], log_p.as_vec()[b]);
        assert!(
            (f64::from(got_kl) - want_kl).abs() < 1e-5 * want_kl.abs().max(1.0),
            "kl[{b}]: {got_kl} vs {want_kl}"
        );
        assert!(
            (f64::from(got_lp) - want_lp).abs() < 1e-5 * want_lp.abs().max(1.0),
            "log p[{b}]: {got_lp} vs {want_lp}"
        );
    }
}

#[test]
fn the_kl_is_zero_when_the_posterior_is_the_prior_row() {
    let (mut params, prior, m, lv) = setup(4);
    let rows = |table: &[f32]| -> Vec<f32> {
        LABELS
            .iter()
            .flat_map(|&c| table[c * LATENT..(c + 1) * LATENT].to_vec())
            .collect()
    };
    let (mean, log_var) = (rows(params.host(0)), rows(params.host(1)));
    params.set(2, &mean).unwrap();
    params.set(3, &log_var).unwrap();
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let kl = prior
        .kl(&mut ctx, &posterior(&params, m, lv), Some(&LABELS))
        .unwrap();
    for v in kl[0].value.as_vec() {
        assert!(v.abs() < 1e-6, "{v}");
    }
}

#[test]
fn conditional_samples_centre_on_the_class_mean() {
    let (params, prior, _, _) = setup(5);
    let n = 4000;
    let labels = vec![1; n];
    let mut rng = seeded(9);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let s = prior
        .sample(&mut ctx, Batch(n), Comp(1), Latent(LATENT), Some(&labels))
        .unwrap();
    let z = s.z.as_vec();
    for l in 0..LATENT {
        let mean = z
            .iter()
            .skip(l)
            .step_by(LATENT)
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / n as f64;
        let want = f64::from(params.host(0)[LATENT + l]);
        let sd = f64::from(params.host(1)[LATENT + l] * 0.5).exp();
        assert!(
            (mean - want).abs() < 4.0 * sd / (n as f64).sqrt(),
            "dim {l}: {mean} vs {want}"
        );
    }
}

#[test]
fn conditional_kl_gradients_match_finite_differences() {
    let (mut params, prior, m, lv) = setup(6);
    let report = GradCheck::default()
        .run(&mut params, |p| {
            let mut rng = seeded(0);
            let mut ctx = Ctx {
                params: p,
                mode: Mode::Train,
                rng: &mut rng,
            };
            let q = posterior(p, m, lv);
            let kl = prior
                .kl(&mut ctx, &q, Some(&LABELS))
                .unwrap()
                .remove(0)
                .value;
            let (kl, tape) = kl.split_tape();
            kl.put_tape(tape.merge(q.into_tape())).sum()
        })
        .unwrap();
    // Class 1 has no example, so its rows get none, but every table gets some.
    assert!(
        report.zero_gradient.is_empty(),
        "{:?}",
        report.zero_gradient
    );
    assert!(report.checked >= 20, "{}", report.checked);
}

#[test]
fn labels_are_required_and_checked() {
    let (params, prior, m, lv) = setup(7);
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let q = posterior(&params, m, lv);
    let missing = prior.kl(&mut ctx, &q, None).err().unwrap().to_string();
    assert!(missing.contains("class label"), "{missing}");
    let out = prior
        .kl(&mut ctx, &q, Some(&[0, 3, 1]))
        .err()
        .unwrap()
        .to_string();
    assert!(out.contains("label 3 is out of range"), "{out}");
    let mut pb_rng = seeded(0);
    let unlabelled = ConditionalNormal::new(&mut ParamBuilder::new(&mut pb_rng), LATENT, 0);
    assert!(unlabelled.is_err());
}

/// A store with `h: (BATCH, 1, 4)` states and the plugin's parameters.
fn states_store(build: impl FnOnce(&mut ParamBuilder)) -> (ParamStore<Cpu>, ParamId) {
    let mut rng = seeded(11);
    let mut pb = ParamBuilder::new(&mut rng);
    build(&mut pb);
    let h = pb.normal("h", &[BATCH, 1, 4], 1.0);
    (ParamStore::new(&Cpu::default(), pb.finish()), h)
}

fn states(p: &ParamStore<Cpu>, h: ParamId) -> EncoderStates<Cpu> {
    EncoderStates {
        states: p.get(h, (Batch(BATCH), Seq(1), Model(4))),
        mask: None,
    }
}

#[test]
fn the_autoencoder_code_is_deterministic_and_differentiable() {
    let mut ae = None;
    let (mut params, h) = states_store(|pb| {
        ae = Some(Autoencoder::new(
            &AutoencoderConfig { latent_dim: LATENT },
            pb,
            4,
        ));
    });
    let ae = ae.unwrap();
    let code = |p: &ParamStore<Cpu>, mode, seed| {
        let mut rng = seeded(seed);
        let mut ctx = Ctx {
            params: p,
            mode,
            rng: &mut rng,
        };
        ae.forward(&mut ctx, states(p, h)).unwrap()
    };
    let (a, b) = (code(&params, Mode::Train, 1), code(&params, Mode::Eval, 2));
    assert!(a.log_var.is_none());
    assert_eq!(a.z.as_vec(), b.z.as_vec());
    assert_eq!(a.z.as_vec(), a.mean.as_vec());
    let report = GradCheck::default()
        .run(&mut params, |p| {
            let latent = code(p, Mode::Train, 1);
            let z = latent.z.reuse().square().sum();
            let (z, tape) = z.split_tape();
            z.put_tape(tape.merge(latent.into_tape()))
        })
        .unwrap();
    assert!(
        report.zero_gradient.is_empty(),
        "{:?}",
        report.zero_gradient
    );
}

#[test]
fn beta_vae_is_gaussian_vib_with_a_shaped_kl() {
    let config = BetaVaeConfig {
        latent_dim: LATENT,
        beta: 4.0,
        capacity: Some(Capacity {
            max_nats: 8.0,
            steps: 10,
        }),
    };
    let (mut beta, mut vib) = (None, None);
    let (params, h) = states_store(|pb| {
        beta = Some(BetaVae::new(&config, pb, 4));
    });
    let (same, _) = states_store(|pb| {
        vib = Some(GaussianVib::new(
            &GaussianVibConfig { latent_dim: LATENT },
            pb,
            4,
        ));
    });
    assert_eq!(params.host(0), same.host(0), "the same initialisation");
    let run = |b: &dyn Bottleneck<Cpu>| {
        let mut rng = seeded(3);
        let mut ctx = Ctx {
            params: &params,
            mode: Mode::Train,
            rng: &mut rng,
        };
        b.forward(&mut ctx, states(&params, h)).unwrap().z.as_vec()
    };
    let (beta, vib) = (beta.unwrap(), vib.unwrap());
    assert_eq!(run(&beta), run(&vib));
    let at = |step| {
        Bottleneck::<Cpu>::kl_shaping(
            &beta,
            Progress {
                step,
                total_steps: 100,
                epochs: 1,
            },
        )
    };
    assert_eq!(
        at(5),
        KlShaping {
            weight: 4.0,
            capacity: Some(4.0)
        }
    );
    assert_eq!(at(20).capacity, Some(8.0));
    assert_eq!(
        Bottleneck::<Cpu>::kl_shaping(
            &vib,
            Progress {
                step: 5,
                total_steps: 100,
                epochs: 1
            }
        ),
        KlShaping::default()
    );
}
