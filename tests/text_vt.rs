//! The Variational Transformer baselines end to end on `zoo/data/wiki_sentences`:
//! `transformer_encoder` → `vt_variable` (VTV, VTS) or `vt_pooled` (VTP) → `vt_normal` →
//! `transformer_decoder` with `sdpa` cross-attention, the latent width left to default to
//! d_model. Each trains with Adam on a few batches (the token CE must fall), and reports its
//! `kl_g` and the proportion of vectors kept.

mod common;

use common::tiny_text::train_tiny;
use serde_json::{json, Value};
use vaezoo_core::plugin::{Ctx, Mode};
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
    let run = train_tiny(&spec(bottleneck), steps);
    assert_eq!(
        run.model.latent_dim(),
        D_MODEL,
        "the latent width defaults to d_model"
    );
    for kl in &run.kl {
        assert!(kl.is_finite() && *kl >= 0.0, "kl {kl}");
    }
    let mut rng = seeded(2);
    let mut ctx = Ctx {
        params: &run.params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let stats = (run.model)
        .losses(&mut ctx, &run.batches[0].obs)
        .unwrap()
        .stats;
    Run {
        first: run.first,
        last: run.last,
        kl_names: run.kl_names,
        stats,
        tokens: run.batches[0].tokens.clone(),
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
