//! The text NVAE end to end on `zoo/data/wiki_sentences`: a WordPiece tokenizer trained on the
//! train split, `transformer_encoder` → `nvib` → `dirichlet_process` → `transformer_decoder`
//! (denoising cross-attention), trained with Adam on a few batches; the loss must fall.

mod common;

use common::tiny_text::train_tiny;
use serde_json::json;
use vaezoo_core::spec::Spec;

const D_MODEL: usize = 16;

fn spec(attention: &str) -> Spec {
    serde_json::from_value(json!({
        "name": "tiny_nvae",
        "data": {"format": "idx", "dir": "."},
        "encoder": {"kind": "transformer_encoder",
                    "config": {"d_model": D_MODEL, "heads": 2, "layers": 1, "dropout": 0.0}},
        "bottleneck": {"kind": "nvib", "config": {"version": "v1"}},
        "prior": {"kind": "dirichlet_process", "config": {"lambda_g": 0.001, "lambda_d": 1.0}},
        "decoder": {"kind": "transformer_decoder",
                    "config": {"d_model": D_MODEL, "heads": 2, "layers": 2, "dropout": 0.0,
                               "cross_attention": {"kind": attention, "config": {"heads": 1}}}},
    }))
    .unwrap()
}

/// The mean token CE over the first and over the last pass through the 4 batches, training
/// `steps` Adam steps.
fn train(attention: &str, steps: usize) -> (f32, f32) {
    let run = train_tiny(&spec(attention), steps);
    (run.first, run.last)
}

#[test]
fn the_text_nvae_learns_to_reconstruct() {
    let (first, last) = train("denoising", 200);
    assert!(first.is_finite() && last.is_finite());
    assert!(last < 0.6 * first, "token CE {first} → {last}");
}

#[test]
fn sdpa_cross_attention_also_trains() {
    let (first, last) = train("sdpa", 120);
    assert!(last < 0.7 * first, "token CE {first} → {last}");
}
