//! `vaezoo eval RUN`: test-split metrics, printed as a table and written to `eval.json`.
//!
//! - the ELBO's parts, a mean over S posterior samples per image (`--elbo-samples`, default 1
//!   as the PyTorch reference), and the same at the posterior mean (z = μ, no noise);
//! - the importance-sampled NLL with K samples ([`is_nll`]);
//! - active units ([`active`]), from the posterior means;
//! - every number per test image in `eval.jsonl` ([`report::ExampleRow`]).
//!
//! Every sample comes from `--seed`: first the ELBO's (S per image, batch after batch), then
//! the importance samples, so the ELBO does not depend on K and the numbers are reproducible;
//! the posterior-mean pass draws from a stream of its own. A conditional model gets the labels
//! everywhere, so its numbers are conditional.
//!
//! Text runs get their own metrics ([`text`]): PPL, BLEU, vectors kept, forward and reverse
//! PPL of prior samples, and interpolation statistics.

pub mod active;
pub mod is_nll;
pub mod report;
pub mod reverse_ppl;
pub mod text;
pub mod text_interpolation;
pub mod text_report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vaezoo_core::axes::{Batch, Feature};
use vaezoo_core::plugin::{Ctx, Mode, Observation};
use vaezoo_core::rng::{seeded, HostRng};
use vaezoo_core::spec::DataSpec;
use vaezoo_core::Backend;

pub use report::{EvalReport, ExampleRow};
pub use text_report::TextEvalReport;

use crate::data::{Dataset, ImageSet};
use crate::device::{on_device, with_pool_awake, DeviceChoice};
use crate::memory;
use crate::run::{check_replaceable, write_json, write_lines};
use crate::session::{restore, Restored};
use crate::{progress, Result};
use is_nll::{log_weights, neg_log_mean_exp, PosteriorBatch, CHUNK_ROWS};

/// Options of `vaezoo eval`.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Seed of the posterior samples.
    pub seed: u64,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Importance samples per image for the IS-NLL; 0 skips it.
    pub iw_samples: usize,
    /// Posterior samples per image behind the −ELBO (at least 1).
    pub elbo_samples: usize,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// Where to compute.
    pub device: DeviceChoice,
    /// Text: prior samples for the forward and reverse PPL (0 skips them).
    pub samples: usize,
    /// Text: the language model run (e.g. of `zoo/lm-wiki.json`) of the forward and reverse
    /// PPL.
    pub lm: Option<PathBuf>,
    /// The most rows one forward pass may take: `vaezoo eval` lowers it to what the memory
    /// left holds ([`rows_in_memory`]), so that a large model evaluates in smaller batches
    /// instead of failing an allocation.
    pub max_rows: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            batch_size: 500,
            iw_samples: 500,
            elbo_samples: 1,
            progress: false,
            device: DeviceChoice::Cpu,
            samples: 200,
            lm: None,
            max_rows: usize::MAX,
        }
    }
}

/// The report of `vaezoo eval`: image and vector metrics, or text metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Evaluation {
    /// Of a model of images.
    Vector(EvalReport),
    /// Of a text model.
    Text(TextEvalReport),
}

impl Evaluation {
    /// The checkpoint's step.
    pub fn step(&self) -> u64 {
        match self {
            Self::Vector(r) => r.step,
            Self::Text(r) => r.step,
        }
    }

    /// Test examples.
    pub fn examples(&self) -> usize {
        match self {
            Self::Vector(r) => r.examples,
            Self::Text(r) => r.examples,
        }
    }

    /// The printed table.
    pub fn table(&self) -> String {
        match self {
            Self::Vector(r) => r.table(),
            Self::Text(r) => r.table(),
        }
    }

    /// Every number by name.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        match self {
            Self::Vector(r) => r.metrics(),
            Self::Text(r) => r.metrics(),
        }
    }

    /// The vector report, for callers that only handle images.
    pub fn vector(self) -> Option<EvalReport> {
        match self {
            Self::Vector(r) => Some(r),
            Self::Text(_) => None,
        }
    }
}

/// Evaluates the latest checkpoint of the run at `root`; writes `eval.json` when it succeeds.
pub fn evaluate(root: &Path, opts: &EvalOptions) -> Result<Evaluation> {
    on_device!(opts.device, |dev| {
        let r = restore(dev, root)?;
        let mut opts = opts.clone();
        let (report, json) = if matches!(r.spec.data, DataSpec::Text { .. }) {
            let tokenizer = r.tokenizer()?;
            let test = r.test_data(Some(&tokenizer))?;
            opts.max_rows = opts.max_rows.min(rows_in_memory(&r, &test)?);
            let report = awake(&r, || text::evaluate_text(&r, &opts, &tokenizer, test))?;
            let json = serde_json::to_value(&report).expect("reports serialise");
            (Evaluation::Text(report), json)
        } else {
            let test = r.test_split()?;
            let data = Dataset::Images(test);
            opts.max_rows = opts.max_rows.min(rows_in_memory(&r, &data)?);
            let Dataset::Images(test) = data else {
                unreachable!("image data stays image data")
            };
            let (report, rows) = awake(&r, || evaluate_on(&r, &opts, test))?;
            let lines = rows.iter().map(|row| serde_json::json!(row));
            check_replaceable(&[r.run.eval_examples_path(), r.run.eval_path()])?;
            write_lines(&r.run.eval_examples_path(), lines)?;
            let json = serde_json::to_value(&report).expect("reports serialise");
            (Evaluation::Vector(report), json)
        };
        write_json(&r.run.eval_path(), &json)?;
        Ok(report)
    })
}

/// `op`, an evaluation of `_run`, with the pool's threads awake on the CPU
/// ([`with_pool_awake`]).
fn awake<D: Backend, R>(_run: &Restored<D>, op: impl FnOnce() -> R) -> R {
    with_pool_awake::<D, R>(op)
}

/// The most rows of `data` per forward pass that fit in the memory left
/// ([`memory::rows_that_fit`]); said on stderr when fewer than the defaults of a batch.
pub fn rows_in_memory<D: Backend>(r: &Restored<D>, data: &Dataset) -> Result<usize> {
    let lengths = memory::row_lengths(data);
    let observe = |rows: &[usize]| data.observation(r.params.device(), rows);
    let training = &r.spec.training;
    let fit = memory::rows_that_fit(&r.params, &r.model, training, &lengths, &observe)?;
    let fit = fit.unwrap_or(usize::MAX);
    if fit < text::MAX_TEXT_BATCH {
        eprintln!("note: {fit} examples per forward pass, as many as the memory left holds");
    }
    Ok(fit)
}

/// Test examples `rows` as a batch on the device, with their labels.
pub fn observation<D: Backend>(
    dev: &D,
    set: &ImageSet,
    rows: std::ops::Range<usize>,
) -> Observation<D> {
    let f = set.features();
    let x = set.images[rows.start * f..rows.end * f].to_vec();
    Observation {
        x: dev.tensor_from_vec(x, (Batch(rows.len()), Feature(f))),
        labels: Some(set.labels[rows].iter().map(|&l| usize::from(l)).collect()),
        tokens: None,
    }
}

/// Seed offset of the posterior-mean pass's stream (it draws nothing for the built-in
/// plugins; a stream of its own keeps the sampled numbers independent of it).
const MEAN_STREAM: u64 = 0x6d65_616e;

fn evaluate_on<D: Backend>(
    r: &Restored<D>,
    opts: &EvalOptions,
    test: ImageSet,
) -> Result<(EvalReport, Vec<ExampleRow>)> {
    let dev = r.params.device();
    let batch = opts.batch_size.min(opts.max_rows).max(1);
    let samples = opts.elbo_samples.max(1);
    let share = 1.0 / samples as f64;
    let mut rng = seeded(opts.seed);
    let mut mean_rng = seeded(opts.seed.wrapping_add(MEAN_STREAM));
    let (mut rec_sum, mut kl_sums) = (0.0f64, BTreeMap::<String, f64>::new());
    let (mut rec_at_mean, mut kl_at_mean) = (0.0f64, 0.0f64);
    let mut stats = BTreeMap::new();
    let mut rows_out: Vec<ExampleRow> = (0..test.n)
        .map(|i| ExampleRow::new(i, usize::from(test.labels[i])))
        .collect();
    for start in (0..test.n).step_by(batch) {
        let rows = start..(start + batch).min(test.n);
        let obs = observation(dev, &test, rows.clone());
        let out = &mut rows_out[rows.clone()];
        for _ in 0..samples {
            let mut ctx = Ctx {
                params: &r.params,
                mode: Mode::Train,
                rng: &mut rng,
            };
            let losses = r.model.losses(&mut ctx, &obs)?;
            let rec = losses.rec.as_vec();
            rec_sum += sum(rec.clone()) * share;
            for (row, v) in out.iter_mut().zip(rec) {
                row.rec += f64::from(v) * share;
            }
            for (name, value) in &losses.stats {
                *stats.entry(name.to_string()).or_insert(0.0) += value * rows.len() as f64 * share;
            }
            for term in losses.kl {
                let kl = term.value.as_vec();
                *kl_sums.entry(term.name).or_insert(0.0) += sum(kl.clone()) * share;
                for (row, v) in out.iter_mut().zip(kl) {
                    *row.kl.get_or_insert(0.0) += f64::from(v) * share;
                }
            }
        }
        let mut ctx = Ctx {
            params: &r.params,
            mode: Mode::Eval,
            rng: &mut mean_rng,
        };
        let at_mean = r.model.losses(&mut ctx, &obs)?;
        let rec = at_mean.rec.as_vec();
        rec_at_mean += sum(rec.clone());
        for (row, v) in out.iter_mut().zip(rec) {
            row.rec_at_mean = f64::from(v);
        }
        for term in at_mean.kl {
            let kl = term.value.as_vec();
            kl_at_mean += sum(kl.clone());
            for (row, v) in out.iter_mut().zip(kl) {
                *row.kl_at_mean.get_or_insert(0.0) += f64::from(v);
            }
        }
    }
    let n = test.n.max(1) as f64;
    let kl_terms: BTreeMap<String, f64> = kl_sums.into_iter().map(|(k, v)| (k, v / n)).collect();
    let kl = (!kl_terms.is_empty()).then(|| kl_terms.values().sum::<f64>());
    let mut report = EvalReport {
        step: r.checkpoint.step,
        examples: test.n,
        conditional: r.is_conditional(),
        neg_elbo: kl.map(|kl| rec_sum / n + kl),
        rec: rec_sum / n,
        kl,
        elbo_samples: samples,
        neg_elbo_at_mean: kl.map(|_| (rec_at_mean + kl_at_mean) / n),
        rec_at_mean: rec_at_mean / n,
        kl_terms,
        is_nll: None,
        iw_samples: opts.iw_samples,
        active_units: None,
        latent_dim: r.model.latent_dim(),
        seed: opts.seed,
        stats: stats.into_iter().map(|(k, v)| (k, v / n)).collect(),
        not_applicable: BTreeMap::new(),
        definitions: report::definitions(),
    };
    if kl.is_none() {
        let why = "no KL term: an autoencoder";
        for metric in ["neg_elbo", "kl", "neg_elbo_at_mean"] {
            report.not_applicable.insert(metric.into(), why.into());
        }
    }
    posterior_metrics(r, &test, opts, &mut rng, &mut report, &mut rows_out)?;
    Ok((report, rows_out))
}

/// Active units and the IS-NLL, from the posterior (`Mode::Eval`) of every test example.
fn posterior_metrics<D: Backend>(
    r: &Restored<D>,
    test: &ImageSet,
    opts: &EvalOptions,
    rng: &mut HostRng,
    report: &mut EvalReport,
    rows_out: &mut [ExampleRow],
) -> Result<()> {
    let batch = opts.batch_size.min(opts.max_rows).max(1);
    let (k, latent, chunk) = (
        opts.iw_samples,
        report.latent_dim,
        CHUNK_ROWS.min(opts.max_rows),
    );
    let bar = progress::bar(
        test.n as u64,
        opts.progress,
        "IS-NLL {elapsed_precise} [{bar:30}] {pos}/{len} images {per_sec} ETA {eta}",
    );
    let mut means = Vec::with_capacity(test.n * latent);
    let mut is_sum = Some(0.0f64);
    let mut na = |metric: &str, why: String| {
        report.not_applicable.insert(metric.into(), why);
    };
    if k == 0 {
        is_sum = None;
        na("is_nll", "skipped with --iw-samples 0".into());
    }
    for start in (0..test.n).step_by(batch) {
        let rows = start..(start + batch).min(test.n);
        let obs = observation(r.params.device(), test, rows.clone());
        let mut ctx = Ctx {
            params: &r.params,
            mode: Mode::Eval,
            rng: &mut *rng,
        };
        let posterior = r.model.posterior(&mut ctx, &obs)?;
        let (_, comps, _) = posterior.dims();
        if !posterior.is_vector() {
            let why = format!("needs a one-component latent; this one has {}", comps.0);
            na("active_units", why.clone());
            if is_sum.take().is_some() {
                na("is_nll", why);
            }
            bar.finish_and_clear();
            return Ok(());
        }
        let mean = posterior.mean.as_vec();
        if let Some(total) = is_sum.as_mut() {
            let Some(log_var) = &posterior.log_var else {
                is_sum = None;
                na(
                    "is_nll",
                    "the posterior has no log-variance (deterministic, or not a diagonal \
                     Gaussian), so q(z | x) has no density to weigh samples by"
                        .into(),
                );
                means.extend(mean);
                continue;
            };
            let labels = obs.labels.as_deref();
            let posterior = PosteriorBatch {
                x: &test.images[rows.start * test.features()..rows.end * test.features()],
                labels,
                mean: &mean,
                log_var: &log_var.as_vec(),
                latent,
            };
            match log_weights(&r.model, &mut ctx, &posterior, k, chunk, &bar)? {
                Some(lw) => {
                    let nll: Vec<f64> = lw.chunks_exact(k).map(neg_log_mean_exp).collect();
                    *total += nll.iter().sum::<f64>();
                    for (row, v) in rows_out[rows.clone()].iter_mut().zip(nll) {
                        row.is_nll = Some(v);
                    }
                }
                None => {
                    is_sum = None;
                    let prior = &r.spec.prior.kind;
                    na("is_nll", format!("the prior `{prior}` has no density"));
                }
            }
        }
        means.extend(mean);
    }
    bar.finish_and_clear();
    report.is_nll = is_sum.map(|s| s / test.n.max(1) as f64);
    if report.is_nll.is_none() {
        rows_out.iter_mut().for_each(|row| row.is_nll = None);
    }
    report.active_units = Some(active::active_units(&active::mean_variances(
        &means, latent,
    )));
    Ok(())
}

fn sum(v: Vec<f32>) -> f64 {
    v.into_iter().map(f64::from).sum()
}
