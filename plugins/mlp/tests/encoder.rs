//! `mlp_encoder`: its states against an independent f64 host MLP, gradients w.r.t. its
//! parameters against finite differences, and no gradient computed for the observations.

mod common;

use vaezoo_core::axes::{Batch, Feature, Model, Seq};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::plugin::{Ctx, Encoder, Mode, Observation};
use vaezoo_core::rng::seeded;
use vaezoo_core::Traced;
use vaezoo_mlp::{MlpEncoder, MlpEncoderConfig};

use common::*;

struct EncoderSetup {
    params: ParamStore<Cpu>,
    encoder: MlpEncoder,
}

/// An encoder and its parameters.
fn encoder_setup(hidden: &[usize], activation: Activation, seed: u64) -> EncoderSetup {
    let mut rng = seeded(seed);
    let mut pb = ParamBuilder::new(&mut rng);
    let cfg = MlpEncoderConfig {
        hidden: hidden.to_vec(),
        activation,
        tokens: 1,
        condition: None,
    };
    let encoder = MlpEncoder::new(&cfg, &mut pb, DATA).unwrap();
    EncoderSetup {
        params: ParamStore::new(&Cpu::default(), pb.finish()),
        encoder,
    }
}

/// The encoder's states for the observations `X`.
fn encode(encoder: &MlpEncoder, p: &ParamStore<Cpu>) -> Traced<(Batch, Seq, Model), Cpu> {
    let mut rng = seeded(3);
    let mut ctx = Ctx {
        params: p,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let obs = Observation {
        x: p.device()
            .tensor_from_vec(X.to_vec(), (Batch(BATCH), Feature(FEATURES))),
        labels: None,
        tokens: None,
    };
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
            let states = encode(&s.encoder, &s.params);
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
            } = encoder_setup(hidden, act, 22);
            let n_params = params.len();
            let report = GradCheck {
                per_param: 10,
                ..Default::default()
            }
            .run(&mut params, |p| {
                let h = encode(&encoder, p);
                (h.reuse().square() + (h * 1.5).sin()).sum::<(), _>()
            })
            .unwrap_or_else(|e| panic!("{hidden:?} {act:?}: {e}"));
            // Weights and biases of every layer.
            assert_eq!(n_params, 2 * hidden.len());
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
        } = (0..200)
            .map(|seed| encoder_setup(&[5, 4], act, seed))
            .find(|s| {
                host_mlp(&s.params, &host_x(), BATCH, 2, act, true).min_pre > 4.0 * check.eps as f64
            })
            .expect("an initialisation clear of the kinks");
        let report = check
            .run(&mut params, |p| {
                let h = encode(&encoder, p);
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

#[test]
fn the_observations_get_no_gradient() {
    // The data is not a parameter: the first layer's backward pass skips its input gradient.
    let s = encoder_setup(&[5, 4], Activation::Tanh, 23);
    let dev = s.params.device().clone();
    let x = dev.tensor_from_vec(X.to_vec(), (Batch(BATCH), Feature(FEATURES)));
    let mut rng = seeded(3);
    let mut ctx = Ctx {
        params: &s.params,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let obs = Observation {
        x: x.clone(),
        labels: None,
        tokens: None,
    };
    let states = s.encoder.forward(&mut ctx, &obs).unwrap().states;
    let grads = states.square().sum().backward();
    let mut out = vec![Vec::new(); s.params.len()];
    s.params.gradients_into(&mut grads.clone(), &mut out);
    assert!(
        out.iter().all(|g| g.iter().any(|&v| v != 0.0)),
        "every weight"
    );
    let mut grads = grads;
    grads.try_alloc_for(&x).unwrap();
    assert!(
        grads.get(&x).as_vec().iter().all(|&v| v == 0.0),
        "no data gradient"
    );
}
