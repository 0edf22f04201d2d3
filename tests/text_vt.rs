//! The Variational Transformer baselines end to end on `zoo/data/wiki_sentences`:
//! `transformer_encoder` → `vt_variable` (VTV, VTS) or `vt_pooled` (VTP) → `vt_normal` →
//! `transformer_decoder` with `sdpa` cross-attention, the latent width left to default to
//! d_model. Each trains with Adam on a few batches (the token CE must fall), and reports its
//! `kl_g` and the proportion of vectors kept.

use std::path::Path;

use serde_json::{json, Value};
use vaezoo::model::Model;
use vaezoo::text::{load_split, pad_batch, EncodedCorpus, TextSplit, TextTokenizer};
use vaezoo_core::axes::Seq;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::optim::{clip_global_norm, Adam, AdamConfig};
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Observation, Progress, TokenBatch};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::Spec;

const D_MODEL: usize = 16;

fn spec(bottleneck: Value) -> Spec {
    serde_json::from_value(json!({
        "name": "tiny_vt",
        "data": {"format": "idx", "dir": "."},
        "encoder": {"kind": "transformer_encoder",
                    "config": {"d_model": D_MODEL, "heads": 2, "layers": 1, "dropout": 0.0}},
        "bottleneck": bottleneck,
        "prior": {"kind": "vt_normal", "config": {"lambda_g": 0.01}},
        "decoder": {"kind": "transformer_decoder",
                    "config": {"d_model": D_MODEL, "heads": 2, "layers": 1, "dropout": 0.0,
                               "cross_attention": {"kind": "sdpa", "config": {"heads": 1}}}},
    }))
    .unwrap()
}

/// What one training run saw.
struct Run {
    /// Mean token CE over the first and over the last pass through the batches.
    first: f32,
    last: f32,
    /// The KL terms' names and the evaluation statistics of the first batch.
    kl_names: Vec<String>,
    stats: Vec<(&'static str, f64)>,
    /// Unpadded encoder tokens per row of the first batch.
    tokens: Vec<usize>,
}

fn train(bottleneck: Value, steps: usize) -> Run {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/data/wiki_sentences");
    let split = load_split(&dir, TextSplit::Train).unwrap();
    let tokenizer = TextTokenizer::train(&split.sentences[..2000], 400).unwrap();
    let corpus = EncodedCorpus::encode(&split, &tokenizer, 12).unwrap();
    let dims = DataDims {
        features: 0,
        classes: 0,
        vocab: tokenizer.vocab_size(),
    };
    let spec = spec(bottleneck);
    let (model, init) = Model::build(vaezoo::registry().unwrap(), &spec, dims, &mut seeded(1))
        .expect("the latent width defaults to d_model");
    assert_eq!(model.latent_dim(), D_MODEL);
    let mut params = ParamStore::new(&Cpu::default(), init);
    let mut adam = Adam::new(
        AdamConfig {
            lr: 3e-3,
            ..AdamConfig::default()
        },
        &params,
    );
    let batches: Vec<(Observation<Cpu>, Vec<usize>)> = (0..4)
        .map(|k| {
            let rows: Vec<usize> = (16 * k..16 * k + 16).collect();
            let b = pad_batch(&corpus, &rows, 0);
            // The encoder reads ids[:, 1:]: every token but [CLS].
            let tokens = b.lengths.iter().map(|n| n - 1).collect();
            let t = TokenBatch::new(b.ids, b.mask, Seq(b.seq)).unwrap();
            (Observation::text(&Cpu::default(), t, b.labels), tokens)
        })
        .collect();
    let mut rng = seeded(2);
    let mut grads = vec![Vec::new(); params.len()];
    let (mut losses, mut kl_names) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let mut ctx = Ctx {
            params: &params,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let l = model
            .losses(&mut ctx, &batches[step % batches.len()].0)
            .unwrap();
        kl_names = l.kl.iter().map(|t| t.name.clone()).collect();
        let progress = Progress {
            step: step as u64,
            total_steps: steps as u64,
            epochs: 1,
        };
        let o = model.objective(l, &spec.training, progress).unwrap();
        assert!(o.kl.is_finite() && o.kl >= 0.0, "kl {}", o.kl);
        losses.push(o.rec);
        let mut g = o.loss.backward();
        params.gradients_into(&mut g, &mut grads);
        clip_global_norm(&mut grads, 1.0);
        adam.step(&mut params, &grads);
    }
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let stats = model.losses(&mut ctx, &batches[0].0).unwrap().stats;
    let n = batches.len();
    Run {
        first: losses[..n].iter().sum::<f32>() / n as f32,
        last: losses[steps - n..].iter().sum::<f32>() / n as f32,
        kl_names,
        stats,
        tokens: batches[0].1.clone(),
    }
}

/// `avg_num_vec` and `avg_prop_vec` of a run.
fn kept(run: &Run) -> (f64, f64) {
    let names: Vec<&str> = run.stats.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["avg_num_vec", "avg_prop_vec"]);
    (run.stats[0].1, run.stats[1].1)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn the_variational_transformers_learn_to_reconstruct() {
    let steps = 120;
    let vtv = train(json!({"kind": "vt_variable"}), steps);
    let vts = train(
        json!({"kind": "vt_variable", "config": {"stride_perc": 0.5}}),
        steps,
    );
    let vtp = train(
        json!({"kind": "vt_pooled", "config": {"pooling": "mean"}}),
        steps,
    );
    for (name, run) in [("vtv", &vtv), ("vts", &vts), ("vtp", &vtp)] {
        println!(
            "{name}: token CE {} → {}, eval stats {:?}",
            run.first, run.last, run.stats
        );
        assert!(run.first.is_finite() && run.last.is_finite(), "{name}");
        assert!(
            run.last < 0.8 * run.first,
            "{name}: token CE {} → {}",
            run.first,
            run.last
        );
        assert_eq!(run.kl_names, ["kl_g"], "{name}");
    }
    let tokens = || vtv.tokens.iter().map(|&n| n as f64);
    let (num, prop) = kept(&vtv);
    assert!((num - mean(tokens())).abs() < 1e-9 && (prop - 1.0).abs() < 1e-12);
    // The 0.5 stride keeps the even positions: ⌈n/2⌉ of n tokens.
    let (num, prop) = kept(&vts);
    let half = |n: f64| (n / 2.0).ceil();
    assert!((num - mean(tokens().map(half))).abs() < 1e-9, "{num}");
    assert!(
        (prop - mean(tokens().map(|n| half(n) / n))).abs() < 1e-9,
        "{prop}"
    );
    let (num, prop) = kept(&vtp);
    assert!(num == 1.0 && (prop - mean(tokens().map(|n| 1.0 / n))).abs() < 1e-9);
}
