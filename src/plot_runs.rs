//! `vaezoo plot RUN…`: the proportion of vectors kept against reconstruction BLEU, one point
//! per evaluated text run (from its `eval.json`), one colour per model family (the bottleneck:
//! T, VTV/VTS, VTP, NVAE, LM); a sweep of NVIB's weights is the cloud of NVAE points.

use std::collections::BTreeMap;
use std::path::Path;

use crate::run::RunDir;
use crate::spec_file::read_spec;
use crate::{plots, Error, Result};

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

/// One run's point: `(avg_prop_vec, bleu)` from its `eval.json`.
fn point(root: &Path, out: &Path) -> Result<(String, (f64, f64))> {
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
        (Some(kept), Some(bleu)) => Ok((family(&spec.bottleneck.kind), (kept, bleu))),
        _ => Err(Error::Run {
            path,
            message: "has no avg_prop_vec and bleu: evaluate a text run with `vaezoo eval` first"
                .into(),
        }),
    }
}

/// Draws the runs at `roots` into the PNG `out`; returns each run's family and point.
pub fn plot_vectors_vs_bleu(
    roots: &[impl AsRef<Path>],
    out: &Path,
) -> Result<Vec<(String, (f64, f64))>> {
    let points: Vec<(String, (f64, f64))> = roots
        .iter()
        .map(|r| point(r.as_ref(), out))
        .collect::<Result<_>>()?;
    let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for (name, p) in &points {
        series.entry(name).or_default().push(*p);
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = series.into_iter().collect();
    plots::xy_chart(
        out,
        "Vectors kept vs reconstruction BLEU (test split)",
        &series,
        ("proportion of vectors kept (avg_prop_vec)", "BLEU"),
        false,
    )?;
    Ok(points)
}
