//! `vaezoo eval RUN` for text models (§F of `docs/nvib-math.md`), every latent read in
//! evaluation mode (posterior means, no dropout), on the test split:
//!
//! - token cross-entropy and the official PPL (teacher forcing), and each KL term;
//! - greedy reconstructions and their SacreBLEU-compatible corpus BLEU;
//! - vectors kept: `avg_num_vec`, `avg_prop_vec` (and NVIB's `avg_alpha0`);
//! - prior samples, their forward PPL under a language model `--lm RUN` and their reverse PPL
//!   (a fresh copy of that LM trained on the samples, scored on the test split;
//!   [`super::reverse_ppl`]);
//! - interpolations between test sentence i and N − 1 − i ([`super::text_interpolation`]).
//!
//! Reconstructions, samples and interpolations are written beside `eval.json` in
//! `RUN/text/` for reading.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vaezoo_core::plugin::{Ctx, Mode};
use vaezoo_core::rng::{seeded, HostRng};
use vaezoo_core::Backend;

use super::reverse_ppl::LanguageModel;
use super::text_interpolation::interpolation_stats;
use super::text_report::TextEvalReport;
use super::EvalOptions;
use crate::data::{Dataset, TextSet};
use crate::run::{check_replaceable, write_lines};
use crate::session::Restored;
use crate::text::generate::kept_statistics;
use crate::text::{corpus_bleu, TextModel, TextTokenizer, TokenCe};
use crate::{progress, Error, Result};

/// Why the perplexities of generated text are missing without a language model.
pub const NEEDS_LM: &str = "needs --lm RUN (a trained language model, e.g. of zoo/lm-wiki.json)";

/// Sentences per forward pass at most (a text batch's logits are Batch × Seq × Vocab).
pub const MAX_TEXT_BATCH: usize = 128;

/// Batches of example indices sorted by length, so that a batch decodes about as many steps as
/// its sentences need.
pub fn length_sorted_batches(set: &TextSet, batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..set.corpus.len()).collect();
    order.sort_by_key(|&i| set.encoded.ids[i].len());
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// Evaluates a restored text run; see the module docs.
pub fn evaluate_text<D: Backend>(
    r: &Restored<D>,
    opts: &EvalOptions,
    tokenizer: &TextTokenizer,
    test: Dataset,
) -> Result<TextEvalReport> {
    let tm = TextModel::of_run(r, tokenizer)?;
    let Dataset::Text(test) = test else {
        unreachable!("a text spec loads text")
    };
    let lm = (opts.lm.as_deref())
        .map(|root| LanguageModel::open(r.params.device(), root))
        .transpose()?;
    let mut rng = seeded(opts.seed);
    let batch = opts.batch_size.min(opts.max_rows).clamp(1, MAX_TEXT_BATCH);
    let batches = length_sorted_batches(&test, batch);
    let bar = progress::bar(
        test.corpus.len() as u64,
        opts.progress,
        "reconstruct {elapsed_precise} [{bar:30}] {pos}/{len} sentences ETA {eta}",
    );
    let mut ce = TokenCe::default();
    let (mut kl_sums, mut stat_sums) = (
        BTreeMap::<String, f64>::new(),
        BTreeMap::<String, f64>::new(),
    );
    let mut hypotheses = vec![String::new(); test.corpus.len()];
    let references: Vec<String> = (test.encoded.ids.iter())
        .map(|ids| tokenizer.decode(ids))
        .collect::<Result<_>>()?;
    for rows in &batches {
        let obs = test.observation(r.params.device(), rows)?;
        let tokens = obs.tokens.as_ref().expect("text batches carry tokens");
        let latent = tm.encode(&mut rng, &obs)?;
        let decoded = tm.decode(&mut rng, &latent, obs.labels.as_deref(), tokens.seq.0 - 1)?;
        for (&i, text) in rows.iter().zip(decoded) {
            hypotheses[i] = text;
        }
        let stats = match latent.stats.is_empty() {
            true => kept_statistics(&latent),
            false => latent.stats.clone(),
        };
        for (name, value) in stats {
            *stat_sums.entry(name.to_string()).or_default() += value * rows.len() as f64;
        }
        let mut ctx = Ctx {
            params: &r.params,
            mode: Mode::Eval,
            rng: &mut rng,
        };
        let losses = r.model.losses_of(&mut ctx, latent, &obs)?;
        ce.add(TokenCe::of_rows(&losses.rec.as_vec(), tokens));
        for term in losses.kl {
            *kl_sums.entry(term.name).or_default() += term
                .value
                .as_vec()
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>();
        }
        bar.inc(rows.len() as u64);
        r.params.device().empty_cache();
    }
    bar.finish_and_clear();
    let n = test.corpus.len().max(1) as f64;
    let mut report = TextEvalReport::new(r.checkpoint.step, test.corpus.len(), opts.seed);
    report.ce = ce.per_token();
    report.ppl = ce.ppl();
    report.kl_terms = kl_sums.into_iter().map(|(k, v)| (k, v / n)).collect();
    report.stats = stat_sums.into_iter().map(|(k, v)| (k, v / n)).collect();
    report.bleu = corpus_bleu(&hypotheses, &references).score;
    if !report.stats.contains_key("avg_alpha0") {
        let why = "no Dirichlet pseudo-counts: not an NVIB latent".to_string();
        report.not_applicable.insert("avg_alpha0".into(), why);
    }
    let pairs = references.iter().zip(&hypotheses);
    let mut files = PendingFiles::default();
    files.add(
        r.run.text_path("reconstructions.tsv"),
        pairs.map(|(s, h)| format!("{s}\t{h}")).collect(),
    );
    samples_and_lm(
        r,
        &tm,
        &test,
        lm.as_ref(),
        opts,
        &mut rng,
        &mut report,
        &mut files,
    )?;
    report.interpolation = Some(interpolation_stats(
        &tm,
        (&test, &references),
        lm.as_ref(),
        opts,
        &mut rng,
        (r.run.text_path("interpolations.tsv"), &mut files),
    )?);
    if lm.is_none() {
        report
            .not_applicable
            .insert("interpolation_f_ppl".into(), NEEDS_LM.into());
    }
    // Nothing is written unless every file, eval.json included, can be.
    let mut outputs: Vec<PathBuf> = files.0.iter().map(|(path, _)| path.clone()).collect();
    outputs.push(r.run.eval_path());
    check_replaceable(&outputs)?;
    files.write()?;
    Ok(report)
}

/// The files of `RUN/text/` an evaluation writes, held until every metric is computed, so
/// that a failing evaluation leaves them as they were.
#[derive(Default)]
pub(super) struct PendingFiles(Vec<(PathBuf, Vec<String>)>);

impl PendingFiles {
    /// `path` is to hold `lines`, one per line.
    pub(super) fn add(&mut self, path: PathBuf, lines: Vec<String>) {
        self.0.push((path, lines));
    }

    /// Writes every file (each atomically).
    fn write(self) -> Result<()> {
        self.0
            .into_iter()
            .try_for_each(|(path, lines)| write_lines(&path, lines))
    }
}

/// Prior samples, to be written to `RUN/text/samples.txt`, and their forward and reverse PPL.
#[allow(clippy::too_many_arguments)]
fn samples_and_lm<D: Backend>(
    r: &Restored<D>,
    tm: &TextModel<D>,
    test: &TextSet,
    lm: Option<&LanguageModel<D>>,
    opts: &EvalOptions,
    rng: &mut HostRng,
    report: &mut TextEvalReport,
    files: &mut PendingFiles,
) -> Result<()> {
    if opts.samples == 0 {
        for metric in ["f_ppl", "r_ppl"] {
            let why = "skipped with --samples 0".to_string();
            report.not_applicable.insert(metric.into(), why);
        }
        return Ok(());
    }
    let mut samples = Vec::with_capacity(opts.samples);
    while samples.len() < opts.samples {
        let n = (opts.samples - samples.len()).min(MAX_TEXT_BATCH.min(opts.max_rows));
        // A conditional model samples every class in turn.
        let labels: Option<Vec<usize>> = (r.is_conditional() && r.state.classes > 0).then(|| {
            (samples.len()..samples.len() + n)
                .map(|i| i % r.state.classes)
                .collect()
        });
        match tm.sample(rng, n, labels.as_deref(), 1.0) {
            Ok(batch) => samples.extend(batch),
            Err(Error::Core(vaezoo_core::Error::Unsupported(why))) => {
                for metric in ["f_ppl", "r_ppl"] {
                    let why = format!("no prior samples: {why}");
                    report.not_applicable.insert(metric.into(), why);
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    report.samples = samples.len();
    files.add(r.run.text_path("samples.txt"), samples.clone());
    let (Some(lm), Some(lm_root)) = (lm, &opts.lm) else {
        for metric in ["f_ppl", "r_ppl"] {
            report.not_applicable.insert(metric.into(), NEEDS_LM.into());
        }
        return Ok(());
    };
    report.lm = Some(lm_root.display().to_string());
    report.f_ppl = Some(lm.ppl(&samples, opts)?);
    let out = r.run.root().join("rppl");
    report.r_ppl = Some(lm.reverse_ppl(&samples, &test.corpus.sentences, &out, opts)?);
    Ok(())
}
