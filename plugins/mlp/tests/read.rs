//! `mlp_decoder` with `read: weighted_mean`: a mixture latent is decoded through Σᵢ πᵢ zᵢ,
//! exactly, with gradients reaching the weights and the components.

use vaezoo_core::axes::{Batch, Comp, Feature, Latent};
use vaezoo_core::backend::{lift, Reuse};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::plugin::{Ctx, Decoder, Mode, Observation};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_mlp::{Likelihood, MlpDecoder, MlpDecoderConfig, Read};

const DATA: DataDims = DataDims {
    features: 6,
    classes: 0,
    vocab: 0,
};
const B: usize = 3;
const K: usize = 4;
const L: usize = 2;

fn decoder(read: Read, pb: &mut ParamBuilder) -> MlpDecoder {
    let cfg = MlpDecoderConfig {
        hidden: vec![5],
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        read,
        condition: None,
    };
    MlpDecoder::new(&cfg, pb, L, DATA).unwrap()
}

fn observation(dev: &Cpu) -> Observation<Cpu> {
    let x = (0..B * 6)
        .map(|i| ((i * 7) % 10) as f32 / 10.0 + 0.05)
        .collect();
    Observation {
        x: dev.tensor_from_vec(x, (Batch(B), Feature(6))),
        labels: None,
        tokens: None,
    }
}

#[test]
fn weighted_mean_equals_decoding_the_mean_and_its_gradients_are_right() {
    let mut rng = seeded(1);
    let mut pb = ParamBuilder::new(&mut rng);
    let mixed = decoder(Read::WeightedMean, &mut pb);
    let z = pb.declare("z", &[B, K, L], normal_vec(&mut seeded(2), B * K * L));
    let raw: Vec<f32> = normal_vec(&mut seeded(3), B * K)
        .iter()
        .map(|v| v.exp())
        .collect();
    let weights: Vec<f32> = raw
        .chunks(K)
        .flat_map(|r| {
            let s: f32 = r.iter().sum();
            r.iter().map(move |v| v / s)
        })
        .collect();
    let w = pb.declare("w", &[B, K], weights.clone());
    let mut params = ParamStore::new(&Cpu::default(), pb.finish());
    let obs = observation(params.device());
    let nll = |p: &ParamStore<Cpu>| {
        let zt = p.get(z, (Batch(B), Comp(K), Latent(L)));
        let mut latent = Mixture::gaussian(zt.reuse(), zt, None, None);
        latent.weights = Some(p.get(w, (Batch(B), Comp(K))));
        let mut rng = seeded(0);
        let mut ctx = Ctx {
            params: p,
            mode: Mode::Eval,
            rng: &mut rng,
        };
        let out = mixed.nll(&mut ctx, &latent, &obs).unwrap();
        let (out, tape) = out.split_tape();
        out.put_tape(tape.merge(latent.into_tape()))
    };

    // The same decoder on the precomputed mean, read as a single vector.
    let zv = params.host(z.0).to_vec();
    let mean: Vec<f32> = (0..B)
        .flat_map(|b| (0..L).map(move |l| (b, l)))
        .map(|(b, l)| {
            (0..K)
                .map(|k| weights[b * K + k] * zv[(b * K + k) * L + l])
                .sum()
        })
        .collect();
    let single = MlpDecoder::new(
        &MlpDecoderConfig {
            hidden: vec![5],
            activation: Activation::Tanh,
            likelihood: Likelihood::Bernoulli,
            read: Read::Single,
            condition: None,
        },
        &mut ParamBuilder::new(&mut seeded(99)),
        L,
        DATA,
    )
    .unwrap();
    let m = lift(
        params
            .device()
            .tensor_from_vec(mean, (Batch(B), Comp(1), Latent(L))),
    );
    let one = Mixture::gaussian(m.reuse(), m, None, None);
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let want = single.nll(&mut ctx, &one, &obs).unwrap().as_vec();
    let got = nll(&params).as_vec();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w.abs(), "{got:?} vs {want:?}");
    }

    let report = GradCheck {
        per_param: 12,
        ..Default::default()
    }
    .run(&mut params, |p| nll(p).sum())
    .unwrap();
    assert!(
        report.zero_gradient.is_empty(),
        "{:?}",
        report.zero_gradient
    );
}

#[test]
fn without_weights_the_read_is_uniform_over_existing_components() {
    let mut rng = seeded(4);
    let mut pb = ParamBuilder::new(&mut rng);
    let mixed = decoder(Read::WeightedMean, &mut pb);
    let params = ParamStore::new(&Cpu::default(), pb.finish());
    let dev = params.device().clone();
    let obs = observation(&dev);
    // Row b's components are all equal to v_b except the masked-out last one (garbage).
    let mut zv = normal_vec(&mut seeded(5), B * K * L);
    let mut mask = vec![true; B * K];
    for b in 0..B {
        for k in 1..K - 1 {
            let (src, dst) = (b * K * L, (b * K + k) * L);
            zv.copy_within(src..src + L, dst);
        }
        mask[b * K + K - 1] = false;
        for l in 0..L {
            zv[(b * K + K - 1) * L + l] = 1e3;
        }
    }
    let first: Vec<f32> = (0..B)
        .flat_map(|b| zv[b * K * L..b * K * L + L].to_vec())
        .collect();
    let z = lift(dev.tensor_from_vec(zv, (Batch(B), Comp(K), Latent(L))));
    let masked = Mixture::gaussian(z.reuse(), z, None, Some(mask));
    let z1 = lift(dev.tensor_from_vec(first, (Batch(B), Comp(1), Latent(L))));
    let single = Mixture::gaussian(z1.reuse(), z1, None, None);
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let a = mixed.nll(&mut ctx, &masked, &obs).unwrap().as_vec();
    let b = mixed.nll(&mut ctx, &single, &obs).unwrap().as_vec();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "{a:?} vs {b:?}");
    }
}
