//! A tiny text VAE trained in-process: a WordPiece vocabulary of 400 from 2,000 training
//! sentences of `zoo/data/wiki_sentences` (at most 12 ids each), four batches of 16 sentences,
//! Adam (lr 3e-3) with gradient clipping at 1.

use std::path::Path;

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

/// One padded batch and the unpadded encoder tokens per row (the encoder reads every token
/// but `[CLS]`).
pub struct TinyBatch {
    pub obs: Observation<Cpu>,
    pub tokens: Vec<usize>,
}

/// What a training run saw, and the trained model.
pub struct TinyRun {
    /// Mean token CE over the first and over the last pass through the batches.
    pub first: f32,
    pub last: f32,
    /// The summed KL of each step.
    pub kl: Vec<f32>,
    /// The KL terms' names at the last step.
    pub kl_names: Vec<String>,
    pub model: Model,
    pub params: ParamStore<Cpu>,
    pub batches: Vec<TinyBatch>,
}

/// Builds `spec` (its data section is not read) and trains it for `steps` Adam steps.
pub fn train_tiny(spec: &Spec, steps: usize) -> TinyRun {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/data/wiki_sentences");
    let split = load_split(&dir, TextSplit::Train).unwrap();
    let tokenizer = TextTokenizer::train(&split.sentences[..2000], 400).unwrap();
    let corpus = EncodedCorpus::encode(&split, &tokenizer, 12).unwrap();
    let dims = DataDims {
        features: 0,
        classes: 0,
        vocab: tokenizer.vocab_size(),
    };
    let registry = vaezoo::registry().unwrap();
    let (model, init) = Model::build(registry, spec, dims, &mut seeded(1)).unwrap();
    let mut params = ParamStore::new(&Cpu::default(), init);
    let mut adam = Adam::new(
        AdamConfig {
            lr: 3e-3,
            ..AdamConfig::default()
        },
        &params,
    );
    let batches: Vec<TinyBatch> = (0..4)
        .map(|k| {
            let rows: Vec<usize> = (16 * k..16 * k + 16).collect();
            let b = pad_batch(&corpus, &rows, 0);
            let tokens = b.lengths.iter().map(|n| n - 1).collect();
            let t = TokenBatch::new(b.ids, b.mask, Seq(b.seq)).unwrap();
            let obs = Observation::text(&Cpu::default(), t, b.labels);
            TinyBatch { obs, tokens }
        })
        .collect();
    let mut rng = seeded(2);
    let mut grads = vec![Vec::new(); params.len()];
    let (mut losses, mut kl, mut kl_names) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..steps {
        let mut ctx = Ctx {
            params: &params,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let l = model
            .losses(&mut ctx, &batches[step % batches.len()].obs)
            .unwrap();
        kl_names = l.kl.iter().map(|t| t.name.clone()).collect();
        let progress = Progress {
            step: step as u64,
            total_steps: steps as u64,
            epochs: 1,
        };
        let o = model.objective(l, &spec.training, progress).unwrap();
        losses.push(o.rec);
        kl.push(o.kl);
        let mut g = o.loss.backward();
        params.gradients_into(&mut g, &mut grads);
        clip_global_norm(&mut grads, 1.0);
        adam.step(&mut params, &grads);
    }
    let n = batches.len();
    TinyRun {
        first: losses[..n].iter().sum::<f32>() / n as f32,
        last: losses[steps - n..].iter().sum::<f32>() / n as f32,
        kl,
        kl_names,
        model,
        params,
        batches,
    }
}
