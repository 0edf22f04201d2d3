//! `mlp_encoder` with `tokens: N`: the last layer is N times as wide and its output is read as
//! N state vectors, in order.

use vaezoo_core::axes::{Batch, Feature, Model, Seq};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::plugin::{Ctx, Encoder, Mode, Observation};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::seeded;
use vaezoo_mlp::{MlpEncoder, MlpEncoderConfig};

#[test]
fn tokens_split_the_last_layer_into_state_vectors() {
    let data = DataDims {
        features: 5,
        classes: 0,
        vocab: 0,
    };
    let encoder = |tokens: usize, hidden: Vec<usize>| {
        let mut rng = seeded(3);
        let mut pb = ParamBuilder::new(&mut rng);
        let cfg = MlpEncoderConfig {
            hidden,
            activation: Activation::Tanh,
            tokens,
            condition: None,
        };
        let e = MlpEncoder::new(&cfg, &mut pb, data).unwrap();
        (e, ParamStore::new(&Cpu::default(), pb.finish()))
    };
    // Three tokens of width 2 use the same parameters as one token of width 6.
    let (three, p3) = encoder(3, vec![4, 2]);
    let (one, p1) = encoder(1, vec![4, 6]);
    assert_eq!(p3.to_host(), p1.to_host());
    let x: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
    let obs = Observation {
        x: Cpu::default().tensor_from_vec(x, (Batch(2), Feature(5))),
        labels: None,
        tokens: None,
    };
    let run = |e: &MlpEncoder, p: &ParamStore<Cpu>| {
        let mut rng = seeded(0);
        let mut ctx = Ctx {
            params: p,
            mode: Mode::Eval,
            rng: &mut rng,
        };
        e.forward(&mut ctx, &obs).unwrap().states
    };
    let (s3, s1) = (run(&three, &p3), run(&one, &p1));
    assert_eq!(*s3.shape(), (Batch(2), Seq(3), Model(2)));
    assert_eq!(*s1.shape(), (Batch(2), Seq(1), Model(6)));
    assert_eq!(s3.as_vec(), s1.as_vec());
}
