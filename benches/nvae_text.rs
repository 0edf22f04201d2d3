//! The NVAE text model, the workloads of `bench/pytorch/nvae_text.py`. The model is the spec
//! `benches/nvae_text.json`, read, checked and built through the registry as `vaezoo train`
//! does: d_model 256 (feed-forward 1024), 2 layers, 4 heads, dropout 0.1, one token embedding
//! for encoder and decoder, NVIB v1 (κ = 1), 4-head v1 denoising cross-attention without
//! biases, untied output projection with bias; λ_G 1e-3, λ_D 1, δ 0.3; Adam lr 1e-4, global
//! grad-norm clip 0.1; batch 64. With a vocabulary of 8000 it has 7,921,217 parameters, as the
//! reference.
//!
//! - `nvae_text_train`: one training step exactly as the trainer's loop runs it (the buffer
//!   cache emptied every 4 steps as for any text data, the batch built from host ids, forward,
//!   objective, backward, gradient read-out, clipping, Adam), vocabulary 8000. Data: 8 fixed
//!   batches (seed 0), cycled; each sentence n ~ U{6..49} ids uniform in [3, 8000), as
//!   `[CLS] w₁…wₙ [SEP]` (PAD 0, CLS 1, SEP 2) padded to the batch's longest. tokens/s counts
//!   the non-pad encoder-input tokens (n + 1 per sentence). 20 timed steps after 3 warm-up.
//! - `nvae_text_greedy`: in evaluation, the posterior means of one of those batches, then
//!   vaezoo's greedy decoding (`Model::greedy`: the KV-cache decoder) for exactly 50 steps
//!   from `[CLS]`; the buffer cache emptied after each batch as `vaezoo eval` does.
//!   tokens/s = 64·50 / median. 5 timed batches after 1 warm-up.
//! - `nvae_text_train_wiki`: the training step on the zoo's Wikipedia sentences (the spec's
//!   data: `zoo/data/wiki_sentences`, the WordPiece vocabulary of 2000 trained on its train
//!   split, at most 52 ids per sentence), in the trainer's own length-bucketed batches of
//!   epoch 0 (seed 0), step i on batch i. It writes those batches' ids (`--ids-out`, default
//!   `target/bench/wiki_batches.json`: the vocabulary size, the special ids and per batch a
//!   list of unpadded id lists) for `nvae_text.py --ids-file`. tokens/s counts the non-pad
//!   encoder-input tokens. 20 timed steps after 3 warm-up.
//!
//! Where this differs from the PyTorch reference: vaezoo's self-attention has no dropout on
//! the attention weights (PyTorch's `nn.MultiheadAttention` drops them with p = 0.1 in
//! training); the random batches are drawn by vaezoo's generator (same recipe, other draws:
//! the batch shapes and token counts differ a little); greedy decoding keeps a KV cache
//! (O(t) work per step), where the reference re-decodes the whole prefix at every step, as
//! the official code does (O(t²)); vaezoo builds each batch from host ids inside the step and
//! empties its buffer cache as its trainer and evaluation do.
//!
//! Run: `cargo bench --bench nvae_text` (`-- --steps N --warmup N --only W[,W]
//! --ids-out PATH`), with `RAYON_NUM_THREADS` setting the threads; one JSON line per workload
//! (see `benches/common`). `python3 bench/compare.py` runs them against PyTorch.

mod common;
mod trainer;

use std::path::{Path, PathBuf};

use rand::Rng;
use serde_json::{json, Value};
use vaezoo::data::Dataset;
use vaezoo::spec_file::{read_spec, resolve_paths};
use vaezoo::Result;
use vaezoo_core::axes::Seq;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::plugin::{Ctx, Mode, Observation, TokenBatch};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::Spec;

use common::{report, time_awake_steps, time_steps, Flags, Timing};
use trainer::Job;

/// The benchmark model's spec.
const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/nvae_text.json");
/// Where `nvae_text_train_wiki` writes its batches unless `--ids-out` says.
const IDS_OUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/bench/wiki_batches.json"
);
/// The vocabulary of the random-data workloads, and their special ids.
const VOCAB: usize = 8000;
const PAD: usize = 0;
const CLS: usize = 1;
const SEP: usize = 2;
/// Fixed random batches, cycled.
const RANDOM_BATCHES: usize = 8;
/// Greedy decoding steps.
const GREEDY_STEPS: usize = 50;

/// One fixed random batch: sentences `[CLS] w₁…wₙ [SEP]` padded with PAD to the longest.
struct RandomBatch {
    ids: Vec<usize>,
    keep: Vec<bool>,
    seq: usize,
    /// Non-pad encoder-input tokens: n + 1 per sentence.
    src_tokens: usize,
}

impl RandomBatch {
    /// The reference's recipe: `batch` sentences of n ~ U{6..49} ids uniform in [3, vocab).
    fn new(rng: &mut impl Rng, batch: usize, vocab: usize) -> Self {
        let n: Vec<usize> = (0..batch).map(|_| rng.gen_range(6..=49)).collect();
        let seq = n.iter().max().map_or(0, |m| m + 2);
        let (mut ids, mut keep) = (vec![PAD; batch * seq], vec![false; batch * seq]);
        for (b, &n) in n.iter().enumerate() {
            let row = &mut ids[b * seq..(b + 1) * seq];
            row[0] = CLS;
            row[1..=n]
                .iter_mut()
                .for_each(|w| *w = rng.gen_range(3..vocab));
            row[n + 1] = SEP;
            keep[b * seq..b * seq + n + 2].fill(true);
        }
        Self {
            ids,
            keep,
            seq,
            src_tokens: n.iter().map(|n| n + 1).sum(),
        }
    }

    fn observation(&self, dev: &Cpu) -> Result<Observation<Cpu>> {
        let tokens = TokenBatch::new(self.ids.clone(), self.keep.clone(), Seq(self.seq))?;
        Ok(Observation::text(dev, tokens, None))
    }
}

/// The benchmark spec, read and checked as `vaezoo train` reads a spec file.
fn bench_spec() -> Result<Spec> {
    let path = Path::new(SPEC);
    let mut spec = read_spec(path)?;
    resolve_paths(&mut spec, path)?;
    Ok(spec)
}

fn text_dims(vocab: usize) -> DataDims {
    DataDims {
        features: 0,
        classes: 0,
        vocab,
    }
}

/// The fixed random batches of the random-data workloads.
fn random_batches(batch: usize) -> Vec<RandomBatch> {
    let mut rng = seeded(0);
    (0..RANDOM_BATCHES)
        .map(|_| RandomBatch::new(&mut rng, batch, VOCAB))
        .collect()
}

/// The JSON line's model description, with the keys of the reference's.
fn model_config(job: &Job, mode: &str, vocab: usize) -> Value {
    let enc = &job.spec.encoder.config;
    json!({
        "mode": mode,
        "layers": enc["layers"],
        "d_model": enc["d_model"],
        "heads": enc["heads"],
        "ffn": enc["d_model"].as_u64().map(|d| 4 * d),
        "vocab": vocab,
        "da_impl": "vaezoo",
        "output_proj": "untied",
        "params": job.params.num_scalars(),
        "spec": "benches/nvae_text.json",
    })
}

/// Trains `job` for the flags' steps, step i on the batch `obs(i, device)` of `tokens(i)`
/// non-pad encoder-input tokens.
fn train(
    flags: &Flags,
    job: &mut Job,
    tokens: impl Fn(usize) -> usize,
    obs: impl Fn(usize, &Cpu) -> Result<Observation<Cpu>>,
) -> Result<Timing> {
    let (steps, warmup) = (flags.steps(20), flags.warmup(3));
    let total = (warmup + steps) as u64;
    time_steps(steps, warmup, |i| {
        job.step(true, total, |dev| obs(i, dev))?;
        Ok(tokens(i))
    })
}

fn train_random(flags: &Flags, spec: Spec) -> Result<()> {
    let batch = spec.training.batch_size;
    let mut job = Job::new(spec, text_dims(VOCAB))?;
    let batches = random_batches(batch);
    let at = |i: usize| &batches[i % batches.len()];
    let timing = train(
        flags,
        &mut job,
        |i| at(i).src_tokens,
        |i, dev| at(i).observation(dev),
    )?;
    let mut config = model_config(&job, "train", VOCAB);
    config["mean_src_tokens_per_step"] = json!(timing.mean_units());
    report("nvae_text_train", batch, &timing, "tokens_per_s", config);
    Ok(())
}

fn greedy(flags: &Flags, spec: Spec) -> Result<()> {
    let batch = spec.training.batch_size;
    let mut job = Job::new(spec, text_dims(VOCAB))?;
    let batches = random_batches(batch);
    let (steps, warmup) = (flags.steps(5), flags.warmup(1));
    let timing = time_awake_steps(steps, warmup, |i| {
        let obs = batches[i % batches.len()].observation(job.params.device())?;
        let mut ctx = Ctx {
            params: &job.params,
            mode: Mode::Eval,
            rng: &mut job.rng,
        };
        let latent = job.model.posterior(&mut ctx, &obs)?;
        let ids = job
            .model
            .greedy(&mut ctx, &latent, None, CLS, GREEDY_STEPS)?;
        std::hint::black_box(ids);
        job.params.device().empty_cache();
        Ok(batch * GREEDY_STEPS)
    })?;
    let mut config = model_config(&job, "eval", VOCAB);
    config["max_len"] = json!(GREEDY_STEPS);
    config["decoding"] = json!("kv_cache");
    report("nvae_text_greedy", batch, &timing, "tokens_per_s", config);
    Ok(())
}

fn train_wiki(flags: &Flags, spec: Spec) -> Result<()> {
    let (data, tokenizer) = Dataset::load_for_new_run(&spec.data)?;
    let (Dataset::Text(set), Some(tokenizer)) = (&data, tokenizer) else {
        unreachable!("the benchmark spec's data is text")
    };
    let (batch, seed) = (spec.training.batch_size, spec.training.seed);
    let needed = flags.warmup(3) + flags.steps(20);
    let batches: Vec<Vec<usize>> = (data.epoch_batches(batch, seed, 0).into_iter())
        .cycle()
        .take(needed)
        .collect();
    let ids: Vec<Vec<&[usize]>> = (batches.iter())
        .map(|rows| {
            rows.iter()
                .map(|&r| set.encoded.ids[r].as_slice())
                .collect()
        })
        .collect();
    let out = flags
        .value("--ids-out")
        .map_or(PathBuf::from(IDS_OUT), PathBuf::from);
    let file = json!({
        "source": "zoo/data/wiki_sentences, train split: vaezoo's length-bucketed batches of epoch 0",
        "seed": seed,
        "vocab_size": set.vocab,
        "pad_id": tokenizer.pad_id(),
        "bos_id": tokenizer.bos_id(),
        "eos_id": tokenizer.eos_id(),
        "batches": ids,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| vaezoo::Error::io(dir, e))?;
    }
    std::fs::write(&out, file.to_string()).map_err(|e| vaezoo::Error::io(&out, e))?;
    let tokens: Vec<usize> = (ids.iter())
        .map(|rows| rows.iter().map(|r| r.len() - 1).sum())
        .collect();
    let mut job = Job::new(spec, data.dims())?;
    let timing = train(
        flags,
        &mut job,
        |i| tokens[i % tokens.len()],
        |i, dev| data.observation(dev, &batches[i % batches.len()]),
    )?;
    let mut config = model_config(&job, "train", set.vocab);
    config["mean_src_tokens_per_step"] = json!(timing.mean_units());
    config["ids_file"] = json!(out.display().to_string());
    report(
        "nvae_text_train_wiki",
        batch,
        &timing,
        "tokens_per_s",
        config,
    );
    Ok(())
}

/// The whole benchmark on rayon's pool, as the `vaezoo` commands run.
fn main() -> Result<()> {
    vaezoo::device::on_compute_pool(run)
}

fn run() -> Result<()> {
    let flags = Flags::parse();
    let spec = bench_spec()?;
    if flags.selected("nvae_text_train") {
        train_random(&flags, spec.clone())?;
    }
    if flags.selected("nvae_text_greedy") {
        greedy(&flags, spec.clone())?;
    }
    if flags.selected("nvae_text_train_wiki") {
        train_wiki(&flags, spec)?;
    }
    Ok(())
}
