//! Conditioning (`condition`) of `mlp_encoder` and `mlp_decoder`: a one-hot condition equals
//! the plain MLP on `[input; one-hot]` (an f64 host MLP), a learned embedding gets gradients
//! that match finite differences, and missing or out-of-range labels are errors.

mod common;

use vaezoo_core::axes::{Batch, Comp, Feature, Latent};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Ctx, Decoder, Encoder, Mode, Observation};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_mlp::{
    Condition, Likelihood, MlpDecoder, MlpDecoderConfig, MlpEncoder, MlpEncoderConfig, Read,
};

use common::*;

const CLASSES: usize = 4;
const LABELS: [usize; BATCH] = [3, 0, 1];
const LABELLED: DataDims = DataDims {
    features: FEATURES,
    classes: CLASSES,
    vocab: 0,
};

fn ctx<'a>(p: &'a ParamStore<Cpu>, rng: &'a mut vaezoo_core::rng::HostRng) -> Ctx<'a, Cpu> {
    Ctx {
        params: p,
        mode: Mode::Train,
        rng,
    }
}

fn encoder(condition: Condition, pb: &mut ParamBuilder) -> MlpEncoder {
    let cfg = MlpEncoderConfig {
        hidden: vec![5, 3],
        activation: Activation::Tanh,
        tokens: 1,
        condition: Some(condition),
    };
    MlpEncoder::new(&cfg, pb, LABELLED).unwrap()
}

#[test]
fn a_one_hot_encoder_is_the_mlp_of_the_input_and_the_one_hot() {
    let mut rng = seeded(5);
    let mut pb = ParamBuilder::new(&mut rng);
    let enc = encoder(Condition::OneHot, &mut pb);
    let params = ParamStore::new(&Cpu::default(), pb.finish());
    assert_eq!(params.shape(0), &[FEATURES + CLASSES, 5]);
    let obs = Observation {
        x: x_tensor(params.device()),
        labels: Some(LABELS.to_vec()),
        tokens: None,
    };
    let mut rng = seeded(0);
    let states = enc.forward(&mut ctx(&params, &mut rng), &obs).unwrap();
    let x = host_x();
    let input: Vec<f64> = (0..BATCH)
        .flat_map(|b| {
            let one_hot = (0..CLASSES).map(move |c| f64::from(u8::from(c == LABELS[b])));
            x[b * FEATURES..(b + 1) * FEATURES]
                .iter()
                .copied()
                .chain(one_hot)
        })
        .collect();
    let want = host_mlp(&params, &input, BATCH, 2, Activation::Tanh, true);
    assert_close(
        &states.states.as_vec(),
        &want.out,
        1e-5,
        "conditional states",
    );
}

#[test]
fn labels_are_required_and_range_checked() {
    let mut rng = seeded(5);
    let mut pb = ParamBuilder::new(&mut rng);
    let enc = encoder(Condition::OneHot, &mut pb);
    let params = ParamStore::new(&Cpu::default(), pb.finish());
    let mut rng = seeded(0);
    let mut ctx = ctx(&params, &mut rng);
    let run = |ctx: &mut Ctx<Cpu>, labels| {
        let obs = Observation {
            x: x_tensor(params.device()),
            labels,
            tokens: None,
        };
        enc.forward(ctx, &obs).err().expect("an error").to_string()
    };
    assert!(run(&mut ctx, None).contains("needs a class label"));
    assert!(run(&mut ctx, Some(vec![0, 4, 1])).contains("label 4 is out of range"));
    assert!(run(&mut ctx, Some(vec![0])).contains("1 labels for a batch of 3"));
    let cfg = MlpEncoderConfig {
        hidden: vec![3],
        activation: Activation::Tanh,
        tokens: 1,
        condition: Some(Condition::OneHot),
    };
    let mut rng = seeded(0);
    let unlabelled = MlpEncoder::new(&cfg, &mut ParamBuilder::new(&mut rng), DATA);
    assert!(unlabelled
        .err()
        .unwrap()
        .to_string()
        .contains("labelled data"));
}

/// A decoder conditioned by an embedding of size 2, and `z` as the last parameter.
fn embedding_decoder(seed: u64) -> (MlpDecoder, ParamStore<Cpu>, ParamId) {
    let mut rng = seeded(seed);
    let mut pb = ParamBuilder::new(&mut rng);
    let cfg = MlpDecoderConfig {
        hidden: vec![5],
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        read: Read::Single,
        condition: Some(Condition::Embedding { dim: 2 }),
    };
    let dec = MlpDecoder::new(&cfg, &mut pb, LATENT, LABELLED).unwrap();
    let z = normal_vec(&mut seeded(seed + 1), BATCH * LATENT);
    let z = pb.declare("z", &[BATCH, 1, LATENT], z);
    (dec, ParamStore::new(&Cpu::default(), pb.finish()), z)
}

fn latent(p: &ParamStore<Cpu>, z: ParamId) -> Mixture<Cpu> {
    let z = p.get(z, (Batch(BATCH), Comp(1), Latent(LATENT)));
    Mixture::gaussian(z.reuse(), z, None, None)
}

#[test]
fn embedding_gradients_match_finite_differences() {
    let (dec, mut params, z) = embedding_decoder(8);
    assert_eq!(params.name(0), "condition");
    assert_eq!(params.shape(0), &[CLASSES, 2]);
    let report = GradCheck::default()
        .run(&mut params, |p| {
            let mut rng = seeded(0);
            let obs = Observation {
                x: x_tensor(p.device()),
                labels: Some(LABELS.to_vec()),
                tokens: None,
            };
            let q = latent(p, z);
            let nll = dec.nll(&mut ctx(p, &mut rng), &q, &obs).unwrap();
            let (nll, tape) = nll.split_tape();
            nll.put_tape(tape.merge(q.into_tape())).sum()
        })
        .unwrap();
    assert!(
        report.zero_gradient.is_empty(),
        "{:?}",
        report.zero_gradient
    );
}

#[test]
fn the_decoder_mean_depends_on_the_class() {
    let (dec, params, z) = embedding_decoder(9);
    let mut rng = seeded(0);
    let mut mean = |labels: &[usize]| {
        let out = dec.mean(
            &mut ctx(&params, &mut rng),
            &latent(&params, z),
            Some(labels),
        );
        let out = out.unwrap();
        assert_eq!(out.shape(), &(Batch(BATCH), Feature(FEATURES)));
        out.as_vec()
    };
    assert_ne!(mean(&[0, 0, 0]), mean(&[1, 1, 1]));
    assert_eq!(mean(&[2, 2, 2]), mean(&[2, 2, 2]));
}
