//! Forward and reverse perplexity of generated sentences (§F of `docs/nvib-math.md`), both
//! through a language model run `--lm RUN` (the official code uses its autoencoder T, which
//! copies its input; `zoo/lm-wiki.json` is a language model):
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

use super::text::MAX_TEXT_BATCH;
use super::EvalOptions;
use crate::run::{write_json, write_lines};
use crate::session::{restore, Restored};
use crate::text::{TextModel, TextTokenizer, TokenCe};
use crate::train::{train, TrainOptions};
use crate::Result;

/// A language model run, restored once, with its tokenizer.
pub struct LanguageModel<D: Backend> {
    run: Restored<D>,
    tokenizer: TextTokenizer,
}

impl<D: Backend> LanguageModel<D> {
    /// Restores the text run at `root`.
    pub fn open(dev: &D, root: &Path) -> Result<Self> {
        let run = restore(dev, root)?;
        let tokenizer = run.tokenizer()?;
        Ok(Self { run, tokenizer })
    }

    /// The official PPL of `sentences` under this model.
    pub fn ppl(&self, sentences: &[String], opts: &EvalOptions) -> Result<f64> {
        let tm = TextModel::of_run(&self.run, &self.tokenizer)?;
        let mut rng = seeded(opts.seed);
        let mut ce = TokenCe::default();
        for chunk in sentences.chunks(opts.batch_size.min(opts.max_rows).clamp(1, MAX_TEXT_BATCH)) {
            let obs = tm.observation(chunk, None)?;
            ce.add(tm.token_ce(&mut rng, &obs)?);
            self.run.params.device().empty_cache();
        }
        Ok(ce.ppl())
    }

    /// R-PPL: trains this model's spec on `samples` in `out` (replacing an earlier one) and
    /// returns the PPL of `test` under the trained copy.
    pub fn reverse_ppl(
        &self,
        samples: &[String],
        test: &[String],
        out: &Path,
        opts: &EvalOptions,
    ) -> Result<f64> {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| vaezoo_core::Error::io(out, e))?;
        }
        let data = out.join("data");
        write_lines(&data.join("train.txt"), samples)?;
        write_lines(&data.join("test.txt"), test)?;
        // The spec written below is read relative to its own folder: give it absolute paths.
        let absolute = |p: &Path| p.canonicalize().map_err(|e| vaezoo_core::Error::io(p, e));
        let lm_tokenizer = absolute(&self.run.run.tokenizer_path())?;
        let mut spec = self.run.spec.clone();
        if let DataSpec::Text {
            dir,
            tokenizer,
            train_limit,
            test_limit,
            ..
        } = &mut spec.data
        {
            *dir = absolute(&data)?.display().to_string();
            *tokenizer = Some(lm_tokenizer.display().to_string());
            (*train_limit, *test_limit) = (None, None);
        }
        spec.name = format!("{}-rppl", spec.name);
        let spec_path = out.join("spec.json");
        write_json(
            &spec_path,
            &serde_json::to_value(&spec).expect("specs serialise"),
        )?;
        let trained = train(
            &spec_path,
            &TrainOptions {
                out: Some(out.join("run")),
                progress: opts.progress,
                device: opts.device,
                ..TrainOptions::default()
            },
        )?;
        Self::open(self.run.params.device(), &trained.run)?.ppl(test, opts)
    }
}
