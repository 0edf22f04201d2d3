//! `vaezoo eval RUN` for text models (§F of `docs/nvib-math.md`), every latent read in
//! evaluation mode (posterior means, no dropout), on the test split:
//!
//! - token cross-entropy and the official PPL (teacher forcing), and each KL term;
//! - greedy reconstructions and their SacreBLEU-compatible corpus BLEU;
//! - vectors kept: `avg_num_vec`, `avg_prop_vec` (and NVIB's `avg_alpha0`);
//! - prior samples, their forward PPL under a language model `--lm RUN` (a trained
//!   Transformer autoencoder, the paper's T) and their reverse PPL (a fresh copy of that LM
//!   trained on the samples, scored on the test split; [`super::reverse_ppl`]);
//! - interpolations between test sentence i and N − 1 − i ([`super::text_interpolation`]).
//!
//! Reconstructions, samples and interpolations are written beside `eval.json` in
//! `RUN/text/` for reading.

use std::collections::BTreeMap;
use std::path::Path;

use vaezoo_core::plugin::{Ctx, Mode};
use vaezoo_core::rng::{seeded, HostRng};
use vaezoo_core::spec::DataSpec;
use vaezoo_core::Backend;

use super::reverse_ppl::{forward_ppl, reverse_ppl};
use super::text_interpolation::interpolation_stats;
use super::text_report::TextEvalReport;
use super::EvalOptions;
use crate::data::{Dataset, TextSet};
use crate::run::write_atomic;
use crate::session::{run_tokenizer, Restored};
use crate::text::generate::kept_statistics;
use crate::text::{corpus_bleu, TextModel, TextTokenizer, TokenCe};
use crate::{progress, Error, Result};

/// Sentences per forward pass at most (a text batch's logits are Batch × Seq × Vocab).
pub const MAX_TEXT_BATCH: usize = 128;

/// Batches of example indices sorted by length, so that a batch decodes about as many steps as
/// its sentences need.
pub fn length_sorted_batches(set: &TextSet, batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..set.corpus.len()).collect();
    order.sort_by_key(|&i| set.encoded.ids[i].len());
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// The run's text model pieces.
pub fn text_model<'a, D: Backend>(
    r: &'a Restored<D>,
    tokenizer: &'a TextTokenizer,
) -> Result<TextModel<'a, D>> {
    let DataSpec::Text { max_len, .. } = r.spec.data else {
        return Err(Error::Usage(format!(
            "{} is not a text run",
            r.run.root().display()
        )));
    };
    Ok(TextModel {
        model: &r.model,
        params: &r.params,
        tokenizer,
        max_len,
    })
}

/// The run's tokenizer (a text run always has one).
pub fn tokenizer_of<D: Backend>(r: &Restored<D>) -> Result<TextTokenizer> {
    run_tokenizer(&r.run, &r.spec)?
        .ok_or_else(|| Error::Usage(format!("{} is not a text run", r.run.root().display())))
}

/// Evaluates a restored text run; see the module docs.
pub fn evaluate_text<D: Backend>(r: &Restored<D>, opts: &EvalOptions) -> Result<TextEvalReport> {
    let tokenizer = tokenizer_of(r)?;
    let tm = text_model(r, &tokenizer)?;
    let Dataset::Text(test) = r.test_data()? else {
        unreachable!("a text spec loads text")
    };
    let mut rng = seeded(opts.seed);
    let batch = opts.batch_size.clamp(1, MAX_TEXT_BATCH);
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
    let mut references = vec![String::new(); test.corpus.len()];
    let mut hypotheses = vec![String::new(); test.corpus.len()];
    for rows in &batches {
        let obs = test.observation(r.params.device(), rows)?;
        let tokens = obs.tokens.as_ref().expect("text batches carry tokens");
        let mut ctx = Ctx {
            params: &r.params,
            mode: Mode::Eval,
            rng: &mut rng,
        };
        let losses = r.model.losses(&mut ctx, &obs)?;
        ce.add(TokenCe::of_rows(&losses.rec.as_vec(), tokens));
        for term in losses.kl {
            *kl_sums.entry(term.name).or_default() += term
                .value
                .as_vec()
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>();
        }
        let latent = tm.encode(&mut rng, &obs)?;
        let stats = match losses.stats.is_empty() {
            true => kept_statistics(&latent),
            false => losses.stats,
        };
        for (name, value) in stats {
            *stat_sums.entry(name.to_string()).or_default() += value * rows.len() as f64;
        }
        let decoded = tm.decode(&mut rng, &latent, obs.labels.as_deref(), tokens.seq.0 - 1)?;
        for (&i, text) in rows.iter().zip(decoded) {
            references[i] = tokenizer.decode(&test.encoded.ids[i])?;
            hypotheses[i] = text;
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
    let text_dir = r.run.root().join("text");
    std::fs::create_dir_all(&text_dir).map_err(|e| vaezoo_core::Error::io(&text_dir, e))?;
    let lines: String = references
        .iter()
        .zip(&hypotheses)
        .map(|(s, h)| format!("{s}\t{h}\n"))
        .collect();
    write_atomic(&text_dir.join("reconstructions.tsv"), lines.as_bytes())?;
    samples_and_lm(r, &tm, &test, opts, &mut rng, &text_dir, &mut report)?;
    let lm = opts.lm.as_deref();
    report.interpolation = Some(interpolation_stats(
        &tm, &test, lm, opts, &mut rng, &text_dir,
    )?);
    if lm.is_none() {
        report.not_applicable.insert(
            "interpolation_f_ppl".into(),
            "needs --lm RUN (a trained Transformer autoencoder)".into(),
        );
    }
    Ok(report)
}

/// Prior samples, written to `RUN/text/samples.txt`, and their forward and reverse PPL.
fn samples_and_lm<D: Backend>(
    r: &Restored<D>,
    tm: &TextModel<D>,
    test: &TextSet,
    opts: &EvalOptions,
    rng: &mut HostRng,
    text_dir: &Path,
    report: &mut TextEvalReport,
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
        let n = (opts.samples - samples.len()).min(MAX_TEXT_BATCH);
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
    let lines: String = samples.iter().map(|s| format!("{s}\n")).collect();
    write_atomic(&text_dir.join("samples.txt"), lines.as_bytes())?;
    let Some(lm) = &opts.lm else {
        for metric in ["f_ppl", "r_ppl"] {
            let why = "needs --lm RUN (a trained Transformer autoencoder)".to_string();
            report.not_applicable.insert(metric.into(), why);
        }
        return Ok(());
    };
    report.lm = Some(lm.display().to_string());
    report.f_ppl = Some(forward_ppl(r.params.device(), lm, &samples, opts)?);
    let out = r.run.root().join("rppl");
    report.r_ppl = Some(reverse_ppl(
        lm,
        &samples,
        &test.corpus.sentences,
        &out,
        opts,
    )?);
    Ok(())
}
