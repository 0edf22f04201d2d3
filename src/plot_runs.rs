//! `vaezoo plot RUN…`: the proportion of vectors kept against reconstruction BLEU, one point
//! per evaluated text run (from its `eval.json`), one colour per model family (the bottleneck:
//! T, VTV/VTS, VTP, NVAE, LM); a sweep of NVIB's weights is the cloud of NVAE points. With
//! `--seeds`, one colour per configuration instead: the runs whose specs differ only in their
//! seed, each seed a ring, their mean a dot with error bars.

use std::collections::BTreeMap;
use std::path::Path;

use crate::run::RunDir;
use crate::spec_file::read_spec;
use crate::{plots, Error, Result};
use vaezoo_core::spec::Spec;

/// The family a bottleneck plugin's runs are drawn as.
fn family(bottleneck: &str) -> String {
    match bottleneck {
        "identity" => "T".into(),
        "vt_variable" => "VTV / VTS".into(),
        "vt_pooled" => "VTP".into(),
        "nvib" => "NVAE".into(),
        "learned_memory" => "LM".into(),
        other => other.into(),
    }
}

/// The configuration a run belongs to with `--seeds`: its spec without its name, description
/// and seed (as canonical JSON, the key), and its name without a `-seed<N>` ending (the label).
fn configuration(spec: &Spec, path: &Path) -> Result<(String, String)> {
    let mut value = serde_json::to_value(spec).map_err(|e| Error::Run {
        path: path.to_path_buf(),
        message: format!("cannot represent the spec as JSON: {e}"),
    })?;
    if let Some(fields) = value.as_object_mut() {
        for field in ["name", "description", "$schema"] {
            fields.remove(field);
        }
    }
    if let Some(training) = value.get_mut("training").and_then(|t| t.as_object_mut()) {
        training.remove("seed");
    }
    let name = &spec.name;
    let label = match name.rsplit_once("-seed") {
        Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => stem,
        _ => name,
    };
    Ok((value.to_string(), label.to_string()))
}

/// One run's point: `(avg_prop_vec, bleu)` from its `eval.json`, with its family and its
/// configuration (see [`configuration`]).
fn point(root: &Path, out: &Path) -> Result<RunPoint> {
    let run = RunDir::open(root)?;
    run.check_output(out)?;
    let spec = read_spec(&run.spec_path())?;
    let path = run.eval_path();
    let text = std::fs::read_to_string(&path).map_err(|e| vaezoo_core::Error::io(&path, e))?;
    let eval: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Run {
        path: path.clone(),
        message: format!("not an eval report: {e}"),
    })?;
    let number = |v: &serde_json::Value| v.as_f64();
    match (
        number(&eval["stats"]["avg_prop_vec"]),
        number(&eval["bleu"]),
    ) {
        (Some(kept), Some(bleu)) => Ok(RunPoint {
            family: family(&spec.bottleneck.kind),
            configuration: configuration(&spec, &run.spec_path())?,
            point: (kept, bleu),
        }),
        _ => Err(Error::Run {
            path,
            message: "has no avg_prop_vec and bleu: evaluate a text run with `vaezoo eval` first"
                .into(),
        }),
    }
}

/// A run's place in the figure.
pub struct RunPoint {
    /// Its model family (T, VTV / VTS, VTP, NVAE, LM, or the bottleneck's name).
    pub family: String,
    /// Its configuration with `--seeds`: (key, label).
    configuration: (String, String),
    /// `(avg_prop_vec, bleu)`.
    pub point: (f64, f64),
}

impl RunPoint {
    /// The configuration's label: the spec's name without a `-seed<N>` ending.
    pub fn configuration(&self) -> &str {
        &self.configuration.1
    }
}

/// Draws the runs at `roots` into the PNG `out`, one series per family, or with `by_seed` one
/// per configuration (mean and spread over its seeds); returns each run's point.
pub fn plot_vectors_vs_bleu(
    roots: &[impl AsRef<Path>],
    out: &Path,
    by_seed: bool,
) -> Result<Vec<RunPoint>> {
    let points: Vec<RunPoint> = roots
        .iter()
        .map(|r| point(r.as_ref(), out))
        .collect::<Result<_>>()?;
    // Series in order of first appearance among the runs given.
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &points {
        let (key, label) = match by_seed {
            true => (p.configuration.0.as_str(), p.configuration.1.clone()),
            false => (p.family.as_str(), p.family.clone()),
        };
        let i = *index.entry(key).or_insert_with(|| {
            series.push((label, Vec::new()));
            series.len() - 1
        });
        series[i].1.push(p.point);
    }
    let (title, marks) = match by_seed {
        true => (
            "Vectors kept vs BLEU (test split): seeds, mean ± 1 s.d.",
            plots::Marks::MeanAndSpread,
        ),
        false => (
            "Vectors kept vs reconstruction BLEU (test split)",
            plots::Marks::Dots,
        ),
    };
    let labels: Vec<String> = (series.iter())
        .map(|(label, pts)| match (by_seed, pts.len()) {
            (false, _) => label.clone(),
            (true, 1) => format!("{label} (1 seed)"),
            (true, n) => format!("{label} ({n} seeds)"),
        })
        .collect();
    let labelled: Vec<(&str, Vec<(f64, f64)>)> = (labels.iter())
        .zip(series)
        .map(|(label, (_, pts))| (label.as_str(), pts))
        .collect();
    plots::xy_chart(
        out,
        title,
        &labelled,
        ("proportion of vectors kept (avg_prop_vec)", "BLEU"),
        marks,
    )?;
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs whose specs differ in name and seed alone share a configuration, labelled by the
    /// name without its `-seed<N>`; any other difference makes another.
    #[test]
    fn configurations_ignore_name_and_seed_only() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/nvae-wiki-tiny.json");
        let spec = read_spec(&path).unwrap();
        let mut other_seed = spec.clone();
        other_seed.training.seed += 1;
        other_seed.name = format!("{}-seed7", spec.name);
        let mut other_lr = other_seed.clone();
        other_lr.training.optimizer.lr *= 2.0;
        let (key, label) = configuration(&spec, &path).unwrap();
        let (key_seed, label_seed) = configuration(&other_seed, &path).unwrap();
        assert_eq!(
            (key_seed.as_str(), label_seed.as_str()),
            (key.as_str(), label.as_str())
        );
        assert_eq!(label, spec.name);
        assert_ne!(configuration(&other_lr, &path).unwrap().0, key);
    }
}
