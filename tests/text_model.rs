//! The text NVAE end to end on `zoo/data/wiki_sentences`: a WordPiece tokenizer trained on the
//! train split, `transformer_encoder` → `nvib` → `dirichlet_process` → `transformer_decoder`
//! (denoising cross-attention), trained with Adam on a few batches; the loss must fall.

use std::path::Path;

use serde_json::json;
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

fn observation(corpus: &EncodedCorpus, rows: &[usize]) -> Observation<Cpu> {
    let b = pad_batch(corpus, rows, 0);
    let tokens = TokenBatch::new(b.ids, b.mask, Seq(b.seq)).unwrap();
    Observation::text(&Cpu::default(), tokens, b.labels)
}

/// The mean token CE over the first and over the last pass through the 4 batches, training
/// `steps` Adam steps.
fn train(attention: &str, steps: usize) -> (f32, f32) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/data/wiki_sentences");
    let train = load_split(&dir, TextSplit::Train).unwrap();
    let tokenizer = TextTokenizer::train(&train.sentences[..2000], 400).unwrap();
    let corpus = EncodedCorpus::encode(&train, &tokenizer, 12).unwrap();
    let dims = DataDims {
        features: 0,
        classes: 0,
        vocab: tokenizer.vocab_size(),
    };
    let spec = spec(attention);
    let registry = vaezoo::registry().unwrap();
    let (model, init) = Model::build(registry, &spec, dims, &mut seeded(1)).unwrap();
    let mut params = ParamStore::new(&Cpu::default(), init);
    let mut adam = Adam::new(
        AdamConfig {
            lr: 3e-3,
            ..AdamConfig::default()
        },
        &params,
    );
    let batches: Vec<Observation<Cpu>> = (0..4)
        .map(|k| observation(&corpus, &(16 * k..16 * k + 16).collect::<Vec<_>>()))
        .collect();
    let mut rng = seeded(2);
    let mut grads = vec![Vec::new(); params.len()];
    let mut losses = Vec::new();
    for step in 0..steps {
        let mut ctx = Ctx {
            params: &params,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let l = model
            .losses(&mut ctx, &batches[step % batches.len()])
            .unwrap();
        let progress = Progress {
            step: step as u64,
            total_steps: steps as u64,
            epochs: 1,
        };
        let o = model.objective(l, &spec.training, progress).unwrap();
        losses.push(o.rec);
        let mut g = o.loss.backward();
        params.gradients_into(&mut g, &mut grads);
        clip_global_norm(&mut grads, 1.0);
        adam.step(&mut params, &grads);
    }
    let n = batches.len();
    let first = losses[..n].iter().sum::<f32>() / n as f32;
    let last = losses[steps - n..].iter().sum::<f32>() / n as f32;
    (first, last)
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
