//! Forward and reverse perplexity of generated sentences (§F of `docs/nvib-math.md`), both
//! through a language model run `--lm RUN`, as the official code uses its Transformer
//! autoencoder T:
//!
//! - **F-PPL**: the LM's perplexity on the generated sentences (fluency);
//! - **R-PPL**: a fresh copy of the LM's spec (same config, tokenizer, epochs and seed)
//!   trained on the generated sentences, then its perplexity on the real test sentences
//!   (coverage). Its run folder (`RUN/rppl/`) is kept for inspection; the final checkpoint is
//!   scored (the official code picks the best epoch on validation data).

use std::path::Path;

use vaezoo_core::rng::seeded;
use vaezoo_core::spec::DataSpec;
use vaezoo_core::Backend;

use super::text::{text_model, tokenizer_of, MAX_TEXT_BATCH};
use super::EvalOptions;
use crate::run::{write_atomic, write_json};
use crate::session::restore;
use crate::spec_file::read_spec;
use crate::text::TokenCe;
use crate::train::{train, TrainOptions};
use crate::{Error, Result};

/// The official PPL of `sentences` under the text run at `lm`.
pub fn forward_ppl<D: Backend>(
    dev: &D,
    lm: &Path,
    sentences: &[String],
    opts: &EvalOptions,
) -> Result<f64> {
    let r = restore(dev, lm)?;
    let tokenizer = tokenizer_of(&r)?;
    let tm = text_model(&r, &tokenizer)?;
    let mut rng = seeded(opts.seed);
    let mut ce = TokenCe::default();
    for chunk in sentences.chunks(opts.batch_size.clamp(1, MAX_TEXT_BATCH)) {
        let obs = tm.observation(chunk, None)?;
        ce.add(tm.token_ce(&mut rng, &obs)?);
        dev.empty_cache();
    }
    Ok(ce.ppl())
}

/// Trains the LM's spec on `samples` in `out` (replacing an earlier one) and returns its PPL
/// on `test`.
pub fn reverse_ppl(
    lm: &Path,
    samples: &[String],
    test: &[String],
    out: &Path,
    opts: &EvalOptions,
) -> Result<f64> {
    let lm_run = crate::run::RunDir::open(lm)?;
    let mut spec = read_spec(&lm_run.spec_path())?;
    let DataSpec::Text { .. } = spec.data else {
        return Err(Error::Usage(format!(
            "--lm {}: not a text run",
            lm.display()
        )));
    };
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| vaezoo_core::Error::io(out, e))?;
    }
    let data = out.join("data");
    std::fs::create_dir_all(&data).map_err(|e| vaezoo_core::Error::io(&data, e))?;
    // The spec written below is read relative to its own folder: give it absolute paths.
    let absolute = |p: &Path| p.canonicalize().map_err(|e| vaezoo_core::Error::io(p, e));
    let (data, lm_tokenizer) = (absolute(&data)?, absolute(&lm_run.tokenizer_path())?);
    let lines = |v: &[String]| v.iter().map(|s| format!("{s}\n")).collect::<String>();
    write_atomic(&data.join("train.txt"), lines(samples).as_bytes())?;
    write_atomic(&data.join("test.txt"), lines(test).as_bytes())?;
    if let DataSpec::Text {
        dir,
        tokenizer,
        train_limit,
        test_limit,
        ..
    } = &mut spec.data
    {
        *dir = data.display().to_string();
        *tokenizer = Some(lm_tokenizer.display().to_string());
        (*train_limit, *test_limit) = (None, None);
    }
    spec.name = format!("{}-rppl", spec.name);
    let spec_path = out.join("spec.json");
    write_json(
        &spec_path,
        &serde_json::to_value(&spec).expect("specs serialise"),
    )?;
    let run = out.join("run");
    let trained = train(
        &spec_path,
        &TrainOptions {
            out: Some(run.clone()),
            progress: opts.progress,
            device: opts.device,
            ..TrainOptions::default()
        },
    )?;
    on_cpu_ppl(&trained.run, test, opts)
}

fn on_cpu_ppl(run: &Path, sentences: &[String], opts: &EvalOptions) -> Result<f64> {
    crate::device::on_device!(opts.device, |dev| forward_ppl(dev, run, sentences, opts))
}
