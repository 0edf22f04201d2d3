//! What `vaezoo eval` reports: [`EvalReport`] (written as `eval.json`) and its table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

/// Test-split metrics, in nats per example.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalReport {
    /// The checkpoint's step.
    pub step: u64,
    /// Test examples.
    pub examples: usize,
    /// Whether the model reads the class labels; every number is then conditional on them
    /// (e.g. the IS-NLL estimates −log p(x | c)).
    pub conditional: bool,
    /// −ELBO = rec + kl, a mean over `elbo_samples` posterior samples per example; `None`
    /// when the model has no KL term (an autoencoder), where it would only repeat `rec`.
    pub neg_elbo: Option<f64>,
    /// −log p(x | z), a mean over `elbo_samples` posterior samples z per example.
    pub rec: f64,
    /// KL(q(z | x) ‖ p(z)), all terms summed; `None` without KL terms.
    pub kl: Option<f64>,
    /// S, the posterior samples per example behind `neg_elbo` and `rec`.
    pub elbo_samples: usize,
    /// −ELBO with z at the posterior mean (evaluation mode, no sampling): `rec_at_mean` + the
    /// KL of the evaluation-mode posterior.
    pub neg_elbo_at_mean: Option<f64>,
    /// −log p(x | z) at z = the posterior mean.
    pub rec_at_mean: f64,
    /// Each KL term, unweighted (e.g. `kl`, or NVIB's `kl_g` and `kl_d`).
    pub kl_terms: BTreeMap<String, f64>,
    /// The importance-sampled NLL, −log (1/K Σ_k p(x, z_k) / q(z_k | x)), when it applies.
    pub is_nll: Option<f64>,
    /// K, the importance samples per example (0: not computed).
    pub iw_samples: usize,
    /// Latent dimensions whose posterior mean has a variance over the test set above 0.01.
    pub active_units: Option<usize>,
    /// The latent size.
    pub latent_dim: usize,
    /// The seed of the posterior samples.
    pub seed: u64,
    /// The bottleneck's statistics, averaged over batches weighted by their size.
    pub stats: BTreeMap<String, f64>,
    /// Why a metric is missing, by metric name.
    pub not_applicable: BTreeMap<String, String>,
    /// What each number is, by field name (so that `eval.json` explains itself).
    pub definitions: BTreeMap<String, String>,
}

/// One test example's numbers: a line of `eval.jsonl`, in nats.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExampleRow {
    /// The example's index in the test split.
    pub index: usize,
    /// Its class label.
    pub label: usize,
    /// −log p(x | z), the mean over the S posterior samples.
    pub rec: f64,
    /// Its KL terms summed, the mean over the S samples (`None` without KL terms).
    pub kl: Option<f64>,
    /// −log p(x | z) at the posterior mean.
    pub rec_at_mean: f64,
    /// The KL terms summed in evaluation mode.
    pub kl_at_mean: Option<f64>,
    /// The importance-sampled NLL, when computed.
    pub is_nll: Option<f64>,
}

impl ExampleRow {
    /// Example `index` of class `label`, its numbers still to add.
    pub fn new(index: usize, label: usize) -> Self {
        Self {
            index,
            label,
            rec: 0.0,
            kl: None,
            rec_at_mean: 0.0,
            kl_at_mean: None,
            is_nll: None,
        }
    }
}

/// The `definitions` of every `eval.json` of a vector model.
pub fn definitions() -> BTreeMap<String, String> {
    [
        ("neg_elbo", "rec + kl: the mean over elbo_samples posterior samples per test example, averaged over the test split"),
        ("rec", "-log p(x | z) with z sampled from q(z | x), the mean over elbo_samples samples"),
        ("kl", "the KL terms summed (kl_terms), unweighted, the mean over the same samples"),
        ("neg_elbo_at_mean", "rec_at_mean + the KL of the evaluation-mode posterior: the -ELBO with z at the posterior mean, no sampling"),
        ("rec_at_mean", "-log p(x | z) at z = the posterior mean"),
        ("is_nll", "-log (1/K sum_k p(x, z_k) / q(z_k | x)) with K = iw_samples importance samples"),
        ("active_units", "latent dimensions whose posterior mean varies over the test split with variance > 0.01"),
        ("eval.jsonl", "the same numbers per test example, one JSON object a line"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl EvalReport {
    /// The numeric metrics, by name.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([("rec".to_string(), self.rec)]);
        m.insert("rec_at_mean".to_string(), self.rec_at_mean);
        let optional = [
            ("neg_elbo", self.neg_elbo),
            ("kl", self.kl),
            ("is_nll", self.is_nll),
            ("neg_elbo_at_mean", self.neg_elbo_at_mean),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                m.insert(name.to_string(), v);
            }
        }
        if let Some(au) = self.active_units {
            m.insert("active_units".to_string(), au as f64);
        }
        m.extend(self.stats.iter().map(|(k, v)| (k.clone(), *v)));
        m
    }

    /// One aligned row per metric (`metric`, `value`), n/a rows saying why.
    pub fn table(&self) -> String {
        let mut t = MetricTable::new(&self.not_applicable);
        let nats = |v: f64| format!("{v:.3}");
        let per = match self.elbo_samples {
            1 => " (1 sample)".to_string(),
            s => format!(" (mean of {s} samples)"),
        };
        t.row(&format!("-elbo{per}"), "neg_elbo", self.neg_elbo.map(nats));
        t.row("rec", "rec", Some(nats(self.rec)));
        t.row("kl", "kl", self.kl.map(nats));
        if self.kl_terms.len() > 1 {
            for (name, value) in &self.kl_terms {
                t.row(name, name, Some(nats(*value)));
            }
        }
        let is_label = match self.iw_samples {
            0 => "is_nll".to_string(),
            k => format!("is_nll (K={k})"),
        };
        t.row(&is_label, "is_nll", self.is_nll.map(nats));
        t.row(
            "-elbo at posterior mean",
            "neg_elbo_at_mean",
            self.neg_elbo_at_mean.map(nats),
        );
        t.row(
            "rec at posterior mean",
            "rec_at_mean",
            Some(nats(self.rec_at_mean)),
        );
        let active = (self.active_units).map(|a| format!("{a}/{}", self.latent_dim));
        t.row("active_units", "active_units", active);
        for (name, value) in &self.stats {
            t.row(name, name, Some(nats(*value)));
        }
        let mut out = t.finish();
        if self.conditional {
            out.push_str("(conditional model: every number is given the class label)\n");
        }
        out
    }
}

/// A two-column table of metrics: labels, then numbers right-aligned in 10 columns, or
/// `n/a (why)` for a metric without a value.
pub struct MetricTable<'a> {
    rows: Vec<(String, String)>,
    not_applicable: &'a BTreeMap<String, String>,
}

impl<'a> MetricTable<'a> {
    /// An empty table; `not_applicable` gives the reasons by metric key.
    pub fn new(not_applicable: &'a BTreeMap<String, String>) -> Self {
        Self {
            rows: Vec::new(),
            not_applicable,
        }
    }

    /// A row labelled `label`; `key` names the metric in `not_applicable`.
    pub fn row(&mut self, label: &str, key: &str, value: Option<String>) {
        let value = value.unwrap_or_else(|| match self.not_applicable.get(key) {
            Some(why) => format!("n/a ({why})"),
            None => "n/a".into(),
        });
        self.rows.push((label.to_string(), value));
    }

    /// The aligned text.
    pub fn finish(self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let mut out = format!("{:<width$}  {:>10}\n", "metric", "value");
        for (name, value) in self.rows {
            let _ = if value.starts_with("n/a") || value.len() > 10 {
                writeln!(out, "{name:<width$}  {value}")
            } else {
                writeln!(out, "{name:<width$}  {value:>10}")
            };
        }
        out
    }
}
