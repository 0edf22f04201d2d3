//! `mlp_decoder`: the Bernoulli and Gaussian (fixed and learned variance) negative
//! log-likelihoods and `mean()` against f64 host formulas, gradients w.r.t. its parameters and
//! the latent against finite differences, and errors (not panics) for latents with several
//! components or data of the wrong width, and no greedy decoding (not a sequence decoder).

mod common;

use vaezoo_core::axes::{Batch, Comp, Feature, Latent};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Ctx, Decoder, DynDecoder, Mode, Observation};
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_core::{Backend, Error, Traced};
use vaezoo_mlp::{Likelihood, MlpDecoder, MlpDecoderConfig, Read};

use common::*;

struct DecoderSetup {
    params: ParamStore<Cpu>,
    decoder: MlpDecoder,
    z: ParamId,
}

/// A decoder and a one-component latent `(BATCH, 1, LATENT)`, declared as the last parameter.
fn decoder_setup(
    hidden: &[usize],
    activation: Activation,
    likelihood: Likelihood,
    seed: u64,
) -> DecoderSetup {
    let mut rng = seeded(seed);
    let mut pb = ParamBuilder::new(&mut rng);
    let cfg = MlpDecoderConfig {
        hidden: hidden.to_vec(),
        activation,
        likelihood,
        read: Read::Single,
        condition: None,
    };
    let decoder = MlpDecoder::new(&cfg, &mut pb, LATENT, DATA).unwrap();
    let z = pb.declare(
        "z",
        &[BATCH, 1, LATENT],
        normal_vec(&mut seeded(seed + 100), BATCH * LATENT),
    );
    DecoderSetup {
        params: ParamStore::new(&Cpu::default(), pb.finish()),
        decoder,
        z,
    }
}

/// A deterministic latent whose sample is parameter `z`.
fn latent(p: &ParamStore<Cpu>, z: ParamId, comps: usize) -> Mixture<Cpu> {
    let z = p.get(z, (Batch(BATCH), Comp(comps), Latent(LATENT)));
    Mixture::gaussian(z.reuse(), z, None, None)
}

/// The decoder's −log p(x | z) per example, with the latent's tape merged in.
fn decoder_nll(decoder: &MlpDecoder, p: &ParamStore<Cpu>, z: ParamId) -> Traced<(Batch,), Cpu> {
    let mut rng = seeded(4);
    let mut ctx = Ctx {
        params: p,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let q = latent(p, z, 1);
    let obs = Observation {
        x: x_tensor(p.device()),
        labels: Some(vec![0; BATCH]),
        tokens: None,
    };
    let nll = decoder.nll(&mut ctx, &q, &obs).unwrap();
    let (l, t) = nll.split_tape();
    l.put_tape(t.merge(q.into_tape()))
}

fn decoder_mean(decoder: &MlpDecoder, p: &ParamStore<Cpu>, z: ParamId) -> Vec<f32> {
    let mut rng = seeded(4);
    let mut ctx = Ctx {
        params: p,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let mean = decoder.mean(&mut ctx, &latent(p, z, 1), None).unwrap();
    assert_eq!(mean.shape(), &(Batch(BATCH), Feature(FEATURES)));
    mean.as_vec()
}

/// The decoder's output (logits or Gaussian means), by the host MLP.
fn host_output(p: &ParamStore<Cpu>, hidden: &[usize], act: Activation) -> Vec<f64> {
    let z = param(p, "z");
    host_mlp(p, &z, BATCH, hidden.len() + 1, act, false).out
}

/// Σ_f [max(l, 0) − l·x + ln(1 + e^{−|l|})] per example.
fn host_bernoulli_nll(logits: &[f64]) -> Vec<f64> {
    let x = host_x();
    (0..BATCH)
        .map(|b| {
            (0..FEATURES)
                .map(|f| {
                    let (l, x) = (logits[b * FEATURES + f], x[b * FEATURES + f]);
                    l.max(0.0) - l * x + (-l.abs()).exp().ln_1p()
                })
                .sum()
        })
        .collect()
}

/// ½ Σ_f [(x − μ)² e^{−lv_f} + lv_f + ln 2π] per example.
fn host_gaussian_nll(mu: &[f64], log_var: &[f64]) -> Vec<f64> {
    let x = host_x();
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    (0..BATCH)
        .map(|b| {
            (0..FEATURES)
                .map(|f| {
                    let d = x[b * FEATURES + f] - mu[b * FEATURES + f];
                    let lv = log_var[f];
                    0.5 * (d * d * (-lv).exp() + lv + ln_2pi)
                })
                .sum()
        })
        .collect()
}

const DECODER_HIDDEN: [&[usize]; 3] = [&[], &[5], &[5, 3]];

fn gaussian(log_variance: f32, learn_variance: bool) -> Likelihood {
    Likelihood::Gaussian {
        log_variance,
        learn_variance,
    }
}

#[test]
fn bernoulli_nll_and_mean_match_the_host_formula() {
    for hidden in DECODER_HIDDEN {
        for act in SMOOTH.into_iter().chain([Activation::Relu]) {
            let s = decoder_setup(hidden, act, Likelihood::Bernoulli, 31);
            assert_eq!(
                s.params.len(),
                2 * (hidden.len() + 1) + 1,
                "no likelihood parameter"
            );
            let logits = host_output(&s.params, hidden, act);
            let nll = decoder_nll(&s.decoder, &s.params, s.z);
            let what = format!("{hidden:?} {act:?}");
            assert_close(&nll.as_vec(), &host_bernoulli_nll(&logits), 1e-5, &what);
            let probs: Vec<f64> = logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
            assert_close(
                &decoder_mean(&s.decoder, &s.params, s.z),
                &probs,
                1e-6,
                &what,
            );
        }
    }
}

#[test]
fn bernoulli_nll_is_stable_for_large_logits() {
    // Scale the output layer so that the logits reach ±50: a naive log(sigmoid) overflows.
    let mut s = decoder_setup(&[5], Activation::Tanh, Likelihood::Bernoulli, 32);
    let i = (0..s.params.len())
        .find(|&i| s.params.name(i) == "layers.1.weight")
        .unwrap();
    let scaled: Vec<f32> = s.params.host(i).iter().map(|v| v * 200.0).collect();
    s.params.set(i, &scaled).unwrap();
    let logits = host_output(&s.params, &[5], Activation::Tanh);
    assert!(logits.iter().any(|l| l.abs() > 20.0), "{logits:?}");
    let nll = decoder_nll(&s.decoder, &s.params, s.z).as_vec();
    assert!(nll.iter().all(|v| v.is_finite()), "{nll:?}");
    assert_close(&nll, &host_bernoulli_nll(&logits), 1e-5, "large logits");
}

#[test]
fn gaussian_nll_and_mean_match_the_host_formula() {
    for learn in [false, true] {
        for hidden in DECODER_HIDDEN {
            let act = Activation::Tanh;
            let mut s = decoder_setup(hidden, act, gaussian(-0.5, learn), 33);
            let expected_len = 2 * (hidden.len() + 1) + 1 + usize::from(learn);
            assert_eq!(s.params.len(), expected_len);
            let log_var = if learn {
                assert_eq!(param(&s.params, "log_variance"), vec![-0.5; FEATURES]);
                // Distinct values per feature, so that a mix-up of features shows.
                let i = (0..s.params.len())
                    .find(|&i| s.params.name(i) == "log_variance")
                    .unwrap();
                let lv = [-0.5, 0.3, -1.2, 0.8, 0.0, -0.1];
                s.params.set(i, &lv).unwrap();
                lv.iter().map(|&v| v as f64).collect()
            } else {
                vec![-0.5; FEATURES]
            };
            let mu = host_output(&s.params, hidden, act);
            let nll = decoder_nll(&s.decoder, &s.params, s.z);
            let what = format!("learn {learn}, {hidden:?}");
            assert_close(
                &nll.as_vec(),
                &host_gaussian_nll(&mu, &log_var),
                1e-5,
                &what,
            );
            assert_close(&decoder_mean(&s.decoder, &s.params, s.z), &mu, 1e-6, &what);
        }
    }
}

#[test]
fn decoder_gradients_match_finite_differences() {
    let likelihoods = [
        Likelihood::Bernoulli,
        gaussian(-0.5, false),
        gaussian(-0.5, true),
    ];
    for likelihood in likelihoods {
        for hidden in DECODER_HIDDEN {
            for act in SMOOTH {
                let what = format!("{likelihood:?} {hidden:?} {act:?}");
                let DecoderSetup {
                    mut params,
                    decoder,
                    z,
                } = decoder_setup(hidden, act, likelihood.clone(), 34);
                if let Some(i) = (0..params.len()).find(|&i| params.name(i) == "log_variance") {
                    params.set(i, &[-0.5, 0.3, -1.2, 0.8, 0.0, -0.1]).unwrap();
                }
                let report = GradCheck {
                    per_param: 8,
                    ..Default::default()
                }
                .run(&mut params, |p| {
                    // Distinct weights per example, so that gradients mixed up between
                    // examples show.
                    let w = p
                        .device()
                        .tensor_from_vec(vec![1.0, 0.7, 1.3], (Batch(BATCH),));
                    (decoder_nll(&decoder, p, z) * w).sum::<(), _>()
                })
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                let expected = 2 * (hidden.len() + 1)
                    + 1
                    + usize::from(matches!(
                        likelihood,
                        Likelihood::Gaussian {
                            learn_variance: true,
                            ..
                        }
                    ));
                assert_eq!(params.len(), expected, "{what}");
                assert!(
                    report.zero_gradient.is_empty(),
                    "{what}: {:?}",
                    report.zero_gradient
                );
            }
        }
    }
}

#[test]
fn decoder_rejects_a_latent_with_two_components() {
    for likelihood in [Likelihood::Bernoulli, gaussian(0.0, true)] {
        let mut rng = seeded(41);
        let mut pb = ParamBuilder::new(&mut rng);
        let cfg = MlpDecoderConfig {
            hidden: vec![5],
            activation: Activation::Tanh,
            likelihood,
            read: Read::Single,
            condition: None,
        };
        let decoder = MlpDecoder::new(&cfg, &mut pb, LATENT, DATA).unwrap();
        // Two components of LATENT each: BATCH·2·LATENT values.
        let z = pb.declare(
            "z",
            &[BATCH, 2, LATENT],
            normal_vec(&mut seeded(42), BATCH * 2 * LATENT),
        );
        let params = ParamStore::new(&Cpu::default(), pb.finish());
        let mut rng = seeded(43);
        let mut ctx = Ctx {
            params: &params,
            mode: Mode::Eval,
            rng: &mut rng,
        };
        let q = latent(&params, z, 2);
        let obs = Observation {
            x: x_tensor(params.device()),
            labels: None,
            tokens: None,
        };
        assert!(decoder.nll(&mut ctx, &q, &obs).is_err());
        assert!(decoder.mean(&mut ctx, &q, None).is_err());
        // The same decoder accepts one component.
        let one = params.device().tensor_from_vec(
            normal_vec(&mut seeded(44), BATCH * LATENT),
            (Batch(BATCH), Comp(1), Latent(LATENT)),
        );
        let one = vaezoo_core::backend::lift(one);
        let q1 = Mixture::gaussian(one.reuse(), one, None, None);
        assert!(decoder.nll(&mut ctx, &q1, &obs).is_ok());
    }
}

#[test]
fn decoder_rejects_observations_of_the_wrong_width() {
    let s = decoder_setup(&[5], Activation::Tanh, Likelihood::Bernoulli, 51);
    let mut rng = seeded(52);
    let mut ctx = Ctx {
        params: &s.params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let obs = Observation {
        x: s.params
            .device()
            .tensor_from_vec(vec![0.5; BATCH * 4], (Batch(BATCH), Feature(4))),
        labels: None,
        tokens: None,
    };
    assert!(s
        .decoder
        .nll(&mut ctx, &latent(&s.params, s.z, 1), &obs)
        .is_err());
}

#[test]
fn decoder_does_not_decode_token_sequences() {
    let s = decoder_setup(&[5], Activation::Tanh, Likelihood::Bernoulli, 61);
    let mut rng = seeded(62);
    let mut ctx = Ctx {
        params: &s.params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let q = latent(&s.params, s.z, 1);
    let boxed: Box<dyn DynDecoder> = Box::new(s.decoder);
    let out = Cpu::decoder(&*boxed).greedy(&mut ctx, &q, None, 1, 3);
    assert!(matches!(out, Err(Error::Unsupported(_))), "the default");
}
