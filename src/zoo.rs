//! `vaezoo zoo reproduce ID`: trains `zoo/<ID>.json` with each seed, evaluates every run, and
//! summarises the metrics (per seed and their mean) in `runs/zoo/<ID>/summary.json`. A run
//! folder that already finished is evaluated again, not retrained; one that was interrupted is
//! resumed, so an interrupted reproduction loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::evaluate::{evaluate, EvalOptions};
use crate::run::write_json;
use crate::session::run_progress;
use crate::train::{resume, train, TrainOptions};
use crate::{Error, Result};

/// Options of `vaezoo zoo reproduce`.
#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    /// The seeds to train.
    pub seeds: Vec<u64>,
    /// The folder of the runs (`<out>/<ID>-seed<N>`) and of the summary (`<out>/<ID>/`).
    pub out: PathBuf,
    /// Progress bars on stderr.
    pub progress: bool,
    /// How to evaluate each run.
    pub eval: EvalOptions,
}

/// The metrics of every seed and their means.
#[derive(Clone, Debug)]
pub struct Reproduction {
    /// `(seed, its metrics by name)` in seed order.
    pub runs: Vec<(u64, BTreeMap<String, f64>)>,
    /// The mean of each metric every run reports.
    pub means: BTreeMap<String, f64>,
    /// Where the summary was written.
    pub summary: PathBuf,
}

/// Reproduces the zoo entry `zoo/<id>.json` (relative to the working folder).
pub fn reproduce(id: &str, opts: &ReproduceOptions) -> Result<Reproduction> {
    let spec = Path::new("zoo").join(format!("{id}.json"));
    if !spec.is_file() {
        return Err(Error::Usage(format!(
            "no zoo entry `{id}`: {} does not exist (run from the repository root; `ls zoo/` lists the entries)",
            spec.display()
        )));
    }
    let mut runs = Vec::new();
    for &seed in &opts.seeds {
        let root = opts.out.join(format!("{id}-seed{seed}"));
        let train_opts = TrainOptions {
            out: Some(root.clone()),
            seed: Some(seed),
            progress: opts.progress,
            ..TrainOptions::default()
        };
        let report = match run_progress(&root)? {
            None => Some(train(&spec, &train_opts)?),
            Some((done, total)) if done < total => Some(resume(&root, &train_opts)?),
            Some(_) => None,
        };
        if report.is_some_and(|r| r.interrupted.is_some()) {
            return Err(Error::Usage(format!(
                "interrupted while training {}; the same command continues it",
                root.display()
            )));
        }
        runs.push((seed, evaluate(&root, &opts.eval)?.metrics()));
    }
    let mut means = BTreeMap::new();
    if let Some((_, first)) = runs.first() {
        for name in first.keys() {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|(_, m)| m.get(name).copied())
                .collect();
            if values.len() == runs.len() {
                means.insert(
                    name.clone(),
                    values.iter().sum::<f64>() / values.len() as f64,
                );
            }
        }
    }
    let summary = opts.out.join(id).join("summary.json");
    let seeds: Vec<Value> = runs
        .iter()
        .map(|(seed, m)| json!({"seed": seed, "run": opts.out.join(format!("{id}-seed{seed}")), "metrics": m}))
        .collect();
    std::fs::create_dir_all(summary.parent().expect("a folder"))
        .map_err(|e| vaezoo_core::Error::io(&summary, e))?;
    write_json(
        &summary,
        &json!({"entry": id, "spec": spec, "eval_seed": opts.eval.seed, "iw_samples": opts.eval.iw_samples, "text_samples": opts.eval.samples, "lm": opts.eval.lm, "runs": seeds, "mean": means}),
    )?;
    Ok(Reproduction {
        runs,
        means,
        summary,
    })
}

impl Reproduction {
    /// One row per metric: each seed's value, then the mean.
    pub fn table(&self) -> String {
        let width = self
            .means
            .keys()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .max(16);
        let mut out = format!("{:<width$}", "metric");
        for (seed, _) in &self.runs {
            out += &format!(" {:>11}", format!("seed {seed}"));
        }
        out += &format!(" {:>11}\n", "mean");
        for (name, mean) in &self.means {
            out += &format!("{name:<width$}");
            for (_, m) in &self.runs {
                let v = m.get(name).copied().unwrap_or(f64::NAN);
                out += &format!(" {v:>11.3}");
            }
            out += &format!(" {mean:>11.3}\n");
        }
        out
    }
}
