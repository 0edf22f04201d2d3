//! Exact-value and finite-difference gradient tests of the `mlp` plugins:
//!
//! - `mlp_encoder`: its states against an independent f64 host MLP, and gradients w.r.t. its
//!   parameters and the observations against finite differences;
//! - `mlp_decoder`: the Bernoulli and Gaussian (fixed and learned variance) negative
//!   log-likelihoods and `mean()` against f64 host formulas, gradients w.r.t. its parameters
//!   and the latent against finite differences, and an error (not a panic) for a latent with
//!   more than one component.

use vaezoo_core::axes::{Batch, Comp, Feature, Latent, Model, Seq};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Ctx, Decoder, Encoder, Mode, Observation};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_core::Traced;
use vaezoo_mlp::{Likelihood, MlpDecoder, MlpDecoderConfig, MlpEncoder, MlpEncoderConfig, Read};

const BATCH: usize = 3;
const FEATURES: usize = 6;
const LATENT: usize = 2;

/// Observations in [0, 1], `(BATCH, FEATURES)` row-major, the end points included.
const X: [f32; 18] = [
    0.0, 0.1, 0.25, 0.5, 0.8, 1.0, 0.9, 0.35, 0.05, 0.6, 0.15, 0.7, 0.45, 1.0, 0.0, 0.3, 0.95, 0.2,
];

/// The activations whose derivatives are continuous: finite differences hold everywhere.
const SMOOTH: [Activation; 4] = [
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Gelu,
    Activation::Identity,
];

const DATA: DataDims = DataDims {
    features: FEATURES,
    classes: 0,
};

fn x_tensor(dev: &Cpu) -> Tensor<(Batch, Feature), f32, Cpu> {
    dev.tensor_from_vec(X.to_vec(), (Batch(BATCH), Feature(FEATURES)))
}

fn param(p: &ParamStore<Cpu>, name: &str) -> Vec<f64> {
    let i = (0..p.len())
        .find(|&i| p.name(i) == name)
        .unwrap_or_else(|| panic!("no parameter `{name}`"));
    p.host(i).iter().map(|&v| v as f64).collect()
}

fn act_f64(act: Activation, v: f64) -> f64 {
    match act {
        Activation::Relu => v.max(0.0),
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Gelu => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        }
        Activation::LeakyRelu => {
            if v > 0.0 {
                v
            } else {
                0.01 * v
            }
        }
        Activation::Identity => v,
    }
}

/// What a host MLP computed.
struct HostMlp {
    /// `(batch, out)` row-major.
    out: Vec<f64>,
    /// The smallest |pre-activation| over every activated layer (for kinks).
    min_pre: f64,
}

/// An independent f64 MLP over the parameters `layers.{i}.weight` `(in, out)` and
/// `layers.{i}.bias` `(out,)`, `layers` of them, the activation after every layer but the last
/// (and after the last too when `activate_output`).
fn host_mlp(
    p: &ParamStore<Cpu>,
    input: &[f64],
    batch: usize,
    layers: usize,
    act: Activation,
    activate_output: bool,
) -> HostMlp {
    let mut h = input.to_vec();
    let mut width = input.len() / batch;
    let mut min_pre = f64::INFINITY;
    for layer in 0..layers {
        let w = param(p, &format!("layers.{layer}.weight"));
        let b = param(p, &format!("layers.{layer}.bias"));
        let out = b.len();
        assert_eq!(w.len(), width * out, "layers.{layer}.weight");
        let activate = activate_output || layer + 1 < layers;
        let mut next = Vec::with_capacity(batch * out);
        for r in 0..batch {
            for o in 0..out {
                let pre = b[o]
                    + (0..width)
                        .map(|i| h[r * width + i] * w[i * out + o])
                        .sum::<f64>();
                if activate {
                    min_pre = min_pre.min(pre.abs());
                    next.push(act_f64(act, pre));
                } else {
                    next.push(pre);
                }
            }
        }
        h = next;
        width = out;
    }
    HostMlp { out: h, min_pre }
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

fn host_x() -> Vec<f64> {
    X.iter().map(|&v| v as f64).collect()
}

// ---------------------------------------------------------------------------------------------
// mlp_encoder

struct EncoderSetup {
    params: ParamStore<Cpu>,
    encoder: MlpEncoder,
    x: ParamId,
}

/// An encoder and the observations, declared as the last parameter.
fn encoder_setup(hidden: &[usize], activation: Activation, seed: u64) -> EncoderSetup {
    let mut rng = seeded(seed);
    let mut pb = ParamBuilder::new(&mut rng);
    let cfg = MlpEncoderConfig {
        hidden: hidden.to_vec(),
        activation,
        tokens: 1,
    };
    let encoder = MlpEncoder::new(&cfg, &mut pb, DATA).unwrap();
    let x = pb.declare("x", &[BATCH, FEATURES], X.to_vec());
    EncoderSetup {
        params: ParamStore::new(&Cpu::default(), pb.finish()),
        encoder,
        x,
    }
}

/// The encoder's states for observations read from parameter `x`. `Observation::x` is
/// untraced, but keeps the parameter's tensor id, so its gradient reaches `x`.
fn encode(
    encoder: &MlpEncoder,
    p: &ParamStore<Cpu>,
    x: ParamId,
) -> Traced<(Batch, Seq, Model), Cpu> {
    let mut rng = seeded(3);
    let mut ctx = Ctx {
        params: p,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let (x, _) = p.get(x, (Batch(BATCH), Feature(FEATURES))).split_tape();
    let obs = Observation { x, labels: None };
    let out = encoder.forward(&mut ctx, &obs).unwrap();
    assert!(out.mask.is_none());
    out.states
}

#[test]
fn encoder_states_match_a_host_mlp() {
    for hidden in [&[4][..], &[5, 4], &[5, 3, 4]] {
        for act in SMOOTH
            .into_iter()
            .chain([Activation::Relu, Activation::LeakyRelu])
        {
            let s = encoder_setup(hidden, act, 21);
            let states = encode(&s.encoder, &s.params, s.x);
            let model = *hidden.last().unwrap();
            assert_eq!(states.shape(), &(Batch(BATCH), Seq(1), Model(model)));
            let want = host_mlp(&s.params, &host_x(), BATCH, hidden.len(), act, true);
            assert_close(
                &states.as_vec(),
                &want.out,
                1e-5,
                &format!("{hidden:?} {act:?}"),
            );
        }
    }
}

#[test]
fn encoder_gradients_match_finite_differences() {
    for hidden in [&[4][..], &[5, 4], &[5, 3, 4]] {
        for act in SMOOTH {
            let EncoderSetup {
                mut params,
                encoder,
                x,
            } = encoder_setup(hidden, act, 22);
            let n_params = params.len();
            let report = GradCheck {
                per_param: 10,
                ..Default::default()
            }
            .run(&mut params, |p| {
                let h = encode(&encoder, p, x);
                (h.reuse().square() + (h * 1.5).sin()).sum::<(), _>()
            })
            .unwrap_or_else(|e| panic!("{hidden:?} {act:?}: {e}"));
            // Weights and biases of every layer, and the observations.
            assert_eq!(n_params, 2 * hidden.len() + 1);
            assert!(report.checked >= n_params);
            assert!(
                report.zero_gradient.is_empty(),
                "{hidden:?} {act:?}: {:?}",
                report.zero_gradient
            );
        }
    }
}

#[test]
fn encoder_relu_gradients_match_finite_differences_away_from_kinks() {
    let check = GradCheck::default();
    for act in [Activation::Relu, Activation::LeakyRelu] {
        // A step of eps moves a pre-activation by at most eps·max(1, |input|) (inputs in
        // [0, 1], hidden values of order 1): take the first initialisation whose
        // pre-activations all stay 4 eps clear of the kink at 0.
        let EncoderSetup {
            mut params,
            encoder,
            x,
        } = (0..200)
            .map(|seed| encoder_setup(&[5, 4], act, seed))
            .find(|s| {
                host_mlp(&s.params, &host_x(), BATCH, 2, act, true).min_pre > 4.0 * check.eps as f64
            })
            .expect("an initialisation clear of the kinks");
        let report = check
            .run(&mut params, |p| {
                let h = encode(&encoder, p, x);
                (h.reuse().square() + (h * 1.5).sin()).sum::<(), _>()
            })
            .unwrap_or_else(|e| panic!("{act:?}: {e}"));
        assert!(report.checked >= params.len());
        if act == Activation::LeakyRelu {
            assert!(
                report.zero_gradient.is_empty(),
                "{:?}",
                report.zero_gradient
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mlp_decoder

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
    };
    let decoder = MlpDecoder::new(&cfg, &mut pb, LATENT, DATA);
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
    let mean = decoder.mean(&mut ctx, &latent(p, z, 1)).unwrap();
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
        };
        let decoder = MlpDecoder::new(&cfg, &mut pb, LATENT, DATA);
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
        };
        assert!(decoder.nll(&mut ctx, &q, &obs).is_err());
        assert!(decoder.mean(&mut ctx, &q).is_err());
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
    };
    assert!(s
        .decoder
        .nll(&mut ctx, &latent(&s.params, s.z, 1), &obs)
        .is_err());
}
