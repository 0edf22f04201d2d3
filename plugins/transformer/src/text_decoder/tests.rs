//! Greedy decoding with the KV cache against the official re-decoding of the whole prefix, on
//! randomly initialised decoders reading masked latents (a hand-made Gaussian mixture, and an
//! `nvib` latent in evaluation).

use super::*;
use vaezoo_core::axes::Comp;
use vaezoo_core::backend::lift;
use vaezoo_core::plugin::EncoderStates;
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_core::serde_json::{json, Value};

const D_MODEL: usize = 8;
const VOCAB: usize = 13;
const CLS: usize = 2;
const STEPS: usize = 12;
const BATCH: Batch = Batch(3);
const DATA: DataDims = DataDims {
    features: 0,
    classes: 0,
    vocab: VOCAB,
};

fn config(attention: &Value) -> Value {
    json!({"d_model": D_MODEL, "heads": 2, "layers": 2, "dropout": 0.1,
           "cross_attention": attention})
}

/// Classes of the class-conditional decoder's data.
const CLASSES: usize = 3;

/// Which latent the decoder reads.
#[derive(Clone, Copy, Debug)]
enum LatentKind {
    /// Gaussians with uniform weights; row 1 lacks 2 of 5 components, row 2 has only one.
    Gaussian,
    /// `nvib` (`head`) in evaluation on encoder states, rows padded differently.
    Nvib,
}

/// A decoder, its parameters (the decoder's moved off their initialisation, so that tokens,
/// norms and biases all matter) and a latent.
fn setup(
    attention: &Value,
    kind: LatentKind,
) -> (TransformerDecoder, ParamStore<Cpu>, Mixture<Cpu>) {
    setup_with(config(attention), DATA, kind)
}

/// [`setup`] for any decoder config and data sizes.
fn setup_with(
    config: Value,
    data: DataDims,
    kind: LatentKind,
) -> (TransformerDecoder, ParamStore<Cpu>, Mixture<Cpu>) {
    vaezoo_nvib::link();
    let mut rng = seeded(3);
    let mut pb = ParamBuilder::new(&mut rng);
    let bottleneck = Registry::builtin()
        .unwrap()
        .build_bottleneck("nvib", &json!({"version": "head"}), &mut pb, D_MODEL)
        .unwrap();
    pb.set_prefix("decoder");
    let cfg: TransformerDecoderConfig = parse_config(NAME, &config).unwrap();
    let decoder = TransformerDecoder::new(&cfg, &mut pb, D_MODEL, data).unwrap();
    let dev = Cpu::default();
    let mut params = ParamStore::new(&dev, pb.finish());
    // Token embeddings of deviation 0.5 (√d·0.5 once scaled, as large as the positional
    // encoding's ±1) and the other decoder weights, norms and biases moved by 0.1 (the
    // cross-attentions left as initialised): larger moves let one input swamp the rest, and
    // the argmax repeats one token whatever the prefix.
    let scales: Vec<f32> = (0..params.len())
        .map(|i| match params.name(i) {
            "embedding.weight" | "decoder.embedding.weight" | "decoder.class_embedding" => 0.5,
            n if n.contains("multihead_attn") => 0.0,
            n if n.starts_with("decoder.") => 0.1,
            _ => 0.0,
        })
        .collect();
    let mut noise = seeded(4);
    params.update_each(|i, v| {
        let n = normal_vec(&mut noise, v.len());
        v.iter_mut().zip(n).for_each(|(v, n)| *v += scales[i] * n);
    });
    let mut rng = seeded(5);
    let latent = match kind {
        LatentKind::Gaussian => {
            let shape = (BATCH, Comp(5), Latent(D_MODEL));
            let n = shape.num_elements();
            let z = lift(dev.tensor_from_vec(normal_vec(&mut rng, n), shape));
            let log_var = normal_vec(&mut rng, n).iter().map(|v| 0.5 * v).collect();
            let log_var = lift(dev.tensor_from_vec(log_var, shape));
            let mut mask = vec![true; 15];
            mask[8..10].fill(false);
            mask[11..].fill(false);
            Mixture::gaussian(z.retaped(), z, Some(log_var), Some(mask))
        }
        LatentKind::Nvib => {
            let shape = (BATCH, Seq(4), Model(D_MODEL));
            let states = normal_vec(&mut rng, shape.num_elements());
            let mut keep = vec![true; 12];
            keep[6..8].fill(false);
            keep[9..].fill(false);
            let states = EncoderStates {
                states: lift(dev.tensor_from_vec(states, shape)),
                mask: Some(keep),
            };
            let mut ctx = Ctx {
                params: &params,
                mode: Mode::Eval,
                rng: &mut rng,
            };
            Cpu::bottleneck(&*bottleneck.module)
                .forward(&mut ctx, states)
                .unwrap()
        }
    };
    assert!(latent.keep().contains(&false), "some components absent");
    (decoder, params, latent)
}

/// The official decoding: at each step the whole prefix is decoded again (causal mask), and
/// the last position's logits give the argmax. Returns the ids and each step's logits.
fn redecode(
    decoder: &TransformerDecoder,
    params: &ParamStore<Cpu>,
    latent: &Mixture<Cpu>,
    labels: Option<&[usize]>,
) -> (Vec<Vec<usize>>, Vec<Vec<f32>>) {
    let mut rng = seeded(6);
    let mut ctx = Ctx {
        params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let mut prefix = vec![vec![CLS]; BATCH.0];
    let mut steps = Vec::new();
    for len in 1..=STEPS {
        let ids = prefix.concat();
        let keep = vec![true; ids.len()];
        let hidden = decoder
            .hidden(&mut ctx, latent, labels, &ids, &keep, (BATCH, Seq(len)))
            .unwrap();
        let logits = decoder.output.forward(params, hidden).as_vec();
        let last: Vec<f32> = logits
            .chunks(len * VOCAB)
            .flat_map(|row| &row[(len - 1) * VOCAB..])
            .copied()
            .collect();
        for (p, row) in prefix.iter_mut().zip(last.chunks(VOCAB)) {
            p.push(argmax(row));
        }
        steps.push(last);
    }
    (prefix.into_iter().map(|p| p[1..].to_vec()).collect(), steps)
}

fn attentions() -> [Value; 2] {
    [
        json!({"kind": "sdpa", "config": {"heads": 2}}),
        json!({"kind": "denoising", "config": {"version": "head", "heads": 2}}),
    ]
}

#[test]
fn the_kv_cache_decodes_as_the_official_re_decoding() {
    for attention in attentions() {
        for kind in [LatentKind::Gaussian, LatentKind::Nvib] {
            let (decoder, params, latent) = setup(&attention, kind);
            let (want_ids, want_logits) = redecode(&decoder, &params, &latent, None);
            let mut rng = seeded(7);
            let mut ctx = Ctx {
                params: &params,
                mode: Mode::Eval,
                rng: &mut rng,
            };
            let mut logits = Vec::new();
            let ids = decoder
                .greedy_with(&mut ctx, &latent, None, CLS, STEPS, |l| {
                    logits.push(l.to_vec())
                })
                .unwrap();
            let case = format!("{} on {kind:?}", attention["kind"]);
            assert_eq!(ids, want_ids, "{case}");
            assert_eq!(logits.len(), STEPS);
            for (t, (got, want)) in logits.iter().zip(&want_logits).enumerate() {
                let worst = got
                    .iter()
                    .zip(want)
                    .map(|(g, w)| (g - w).abs())
                    .fold(0.0, f32::max);
                assert!(worst < 1e-4, "{case}, step {t}: logits differ by {worst}");
            }
            let mut distinct = ids.concat();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(distinct.len() > 2, "{case}: a degenerate decoder {ids:?}");
        }
    }
}

#[test]
fn greedy_dispatches_through_the_registry_and_decodes_in_evaluation() {
    let attention = &attentions()[1];
    let (decoder, params, latent) = setup(attention, LatentKind::Nvib);
    // The same declarations from the same generator: the same parameters.
    let mut rng = seeded(3);
    let mut pb = ParamBuilder::new(&mut rng);
    let registry = Registry::builtin().unwrap();
    registry
        .build_bottleneck("nvib", &json!({"version": "head"}), &mut pb, D_MODEL)
        .unwrap();
    let boxed = registry
        .build_decoder(NAME, &config(attention), &mut pb, D_MODEL, DATA)
        .unwrap();
    assert_eq!(pb.finish().len(), params.len());
    let mut rng = seeded(8);
    let mut greedy = |mode, steps| {
        let mut ctx = Ctx {
            params: &params,
            mode,
            rng: &mut rng,
        };
        Cpu::decoder(&*boxed).greedy(&mut ctx, &latent, None, CLS, steps)
    };
    let train = greedy(Mode::Train, STEPS).unwrap();
    assert_eq!(train, greedy(Mode::Eval, STEPS).unwrap(), "no dropout");
    assert_eq!(train.len(), BATCH.0);
    assert!(train.iter().all(|row| row.len() == STEPS));
    assert_eq!(greedy(Mode::Eval, 0).unwrap(), vec![Vec::<usize>::new(); 3]);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Eval,
        rng: &mut seeded(9),
    };
    let direct = decoder.greedy_with(&mut ctx, &latent, None, CLS, STEPS, |_| {});
    assert_eq!(direct.unwrap(), train);
    assert!(decoder
        .greedy_with(&mut ctx, &latent, None, VOCAB, 1, |_| {})
        .is_err());
}

#[test]
fn argmax_takes_the_first_maximum_and_skips_nan() {
    assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    assert_eq!(argmax(&[f32::NAN, 0.5, 2.0]), 2);
    assert_eq!(argmax(&[]), 0);
}

#[test]
fn a_class_conditional_decoder_reads_the_label_when_teacher_forced_and_decoding() {
    let mut cfg = config(&attentions()[0]);
    cfg["class_conditional"] = json!(true);
    let data = DataDims {
        classes: CLASSES,
        ..DATA
    };
    let (decoder, mut params, latent) = setup_with(cfg, data, LatentKind::Gaussian);
    let mut rng = seeded(7);
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let labels = [0, 1, 2];
    let ids = (decoder.greedy_with(&mut ctx, &latent, Some(&labels), CLS, STEPS, |_| {})).unwrap();
    assert_eq!(ids, redecode(&decoder, &params, &latent, Some(&labels)).0);
    let other = redecode(&decoder, &params, &latent, Some(&[2, 0, 1])).1;
    assert_ne!(other, redecode(&decoder, &params, &latent, Some(&labels)).1);
    let missing = decoder.greedy_with(&mut ctx, &latent, None, CLS, 1, |_| {});
    assert!(format!("{}", missing.unwrap_err()).contains("needs a class label"));

    // Teacher forcing: the gradients, the class embedding's included, match finite
    // differences (a step of 1e-3: 1e-2 crosses the feed-forward ReLUs' kinks).
    let ids = vec![CLS, 4, 5, 3, CLS, 7, 3, 0, CLS, 3, 0, 0];
    let keep: Vec<bool> = ids.iter().map(|&i| i != 0).collect();
    let tokens = vaezoo_core::plugin::TokenBatch::new(ids, keep, Seq(4)).unwrap();
    let obs = Observation::text(&Cpu::default(), tokens, Some(labels.to_vec()));
    let check = vaezoo_core::gradcheck::GradCheck {
        eps: 1e-3,
        atol: 5e-3,
        ..Default::default()
    };
    let report = check
        .run(&mut params, |p| {
            let mut rng = seeded(8);
            let mut ctx = Ctx {
                params: p,
                mode: Mode::Eval,
                rng: &mut rng,
            };
            decoder.nll(&mut ctx, &latent, &obs).unwrap().sum()
        })
        .unwrap();
    assert!(
        !report
            .zero_gradient
            .iter()
            .any(|n| n == "decoder.class_embedding"),
        "{report:?}"
    );
}
