//! What `vaezoo eval` reports for a text run: [`TextEvalReport`] (written as `eval.json`)
//! and its table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::report::MetricTable;
use super::text_interpolation::InterpolationStats;

/// Test-split metrics of a text model.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TextEvalReport {
    /// The checkpoint's step.
    pub step: u64,
    /// Test sentences.
    pub examples: usize,
    /// The evaluation's seed.
    pub seed: u64,
    /// Mean token cross-entropy (nats per predicted token, `[SEP]` included), teacher-forced.
    pub ce: f64,
    /// The official perplexity, exp(Σ CE / word pieces without `[SEP]`).
    pub ppl: f64,
    /// Each KL term per sentence, unweighted (NVIB's `kl_g`, `kl_d`).
    pub kl_terms: BTreeMap<String, f64>,
    /// Corpus BLEU (SacreBLEU defaults) of the greedy reconstructions.
    pub bleu: f64,
    /// Vectors kept (`avg_num_vec`, `avg_prop_vec`, NVIB's `avg_alpha0`), per sentence.
    pub stats: BTreeMap<String, f64>,
    /// Prior samples drawn.
    pub samples: usize,
    /// The language model run of the forward and reverse PPL.
    pub lm: Option<String>,
    /// Forward PPL of the samples under the LM.
    pub f_ppl: Option<f64>,
    /// Reverse PPL: an LM trained on the samples, on the test sentences.
    pub r_ppl: Option<f64>,
    /// Interpolation statistics.
    pub interpolation: Option<InterpolationStats>,
    /// Why a metric is missing, by metric name.
    pub not_applicable: BTreeMap<String, String>,
}

impl TextEvalReport {
    /// An empty report for `examples` sentences at checkpoint `step`.
    pub fn new(step: u64, examples: usize, seed: u64) -> Self {
        Self {
            step,
            examples,
            seed,
            ce: f64::NAN,
            ppl: f64::NAN,
            kl_terms: BTreeMap::new(),
            bleu: f64::NAN,
            stats: BTreeMap::new(),
            samples: 0,
            lm: None,
            f_ppl: None,
            r_ppl: None,
            interpolation: None,
            not_applicable: BTreeMap::new(),
        }
    }

    /// Every number by name, flat (for `zoo reproduce` summaries and plots).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([
            ("ce".to_string(), self.ce),
            ("ppl".to_string(), self.ppl),
            ("bleu".to_string(), self.bleu),
        ]);
        m.extend(self.kl_terms.iter().map(|(k, v)| (k.clone(), *v)));
        m.extend(self.stats.iter().map(|(k, v)| (k.clone(), *v)));
        for (name, value) in [("f_ppl", self.f_ppl), ("r_ppl", self.r_ppl)] {
            if let Some(v) = value {
                m.insert(name.into(), v);
            }
        }
        if let Some(i) = &self.interpolation {
            for t in &i.taus {
                m.insert(format!("interp_differ@{}", t.tau), t.differ);
            }
            if let Some(v) = i.f_ppl_mid {
                m.insert("interp_f_ppl@0.5".into(), v);
            }
        }
        m
    }

    /// One aligned row per metric, n/a rows saying why.
    pub fn table(&self) -> String {
        let mut t = MetricTable::new(&self.not_applicable);
        let num = |v: f64| format!("{v:.3}");
        t.row("ce (nats/token)", "ce", Some(num(self.ce)));
        t.row("ppl", "ppl", Some(num(self.ppl)));
        for (name, value) in &self.kl_terms {
            t.row(name, name, Some(num(*value)));
        }
        t.row("bleu", "bleu", Some(format!("{:.2}", self.bleu)));
        for name in ["avg_num_vec", "avg_prop_vec", "avg_alpha0"] {
            t.row(name, name, self.stats.get(name).map(|v| num(*v)));
        }
        let sampled = format!("f_ppl ({} samples)", self.samples);
        t.row(&sampled, "f_ppl", self.f_ppl.map(num));
        t.row("r_ppl", "r_ppl", self.r_ppl.map(num));
        if let Some(i) = &self.interpolation {
            for s in &i.taus {
                let value = format!(
                    "{:.3} differ, BLEU {:.1} / {:.1}",
                    s.differ, s.bleu_s1, s.bleu_s2
                );
                t.row(&format!("interp τ={}", s.tau), "interpolation", Some(value));
            }
            let f = i.f_ppl_mid.map(num);
            t.row("interp f_ppl τ=0.5", "interpolation_f_ppl", f);
        }
        let mut out = t.finish();
        if let Some(i) = &self.interpolation {
            out += &format!("(interpolation: {} pairs; BLEU against s1 / s2)\n", i.pairs);
        }
        out
    }
}
