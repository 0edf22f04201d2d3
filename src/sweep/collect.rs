//! `vaezoo sweep collect`: evaluates the finished runs not yet evaluated (a child `vaezoo eval`
//! each, `--jobs` at a time) and writes one table of every run: its id, seed, the value of each
//! axis, then every number of its `eval.json`, as `OUT/summary.csv` and `OUT/summary.md`,
//! and a figure: vectors kept against BLEU for text runs, else the -ELBO against an axis.
//! Runs not finished yet are listed with empty metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::run::{in_parallel, is_done};
use super::Sweep;
use crate::plot_runs::plot_vectors_vs_bleu;
use crate::plots;
use crate::run::write_atomic;
use crate::{Error, Result};

/// The table [`collect`] wrote: its header and rows, and the files.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// One row per run, in plan order.
    pub rows: Vec<Vec<String>>,
    /// `OUT/summary.csv` and `OUT/summary.md`.
    pub files: [PathBuf; 2],
    /// The figure, when there is one (see [`collect`]).
    pub plot: Option<PathBuf>,
}

/// Evaluates what is missing (`jobs` at a time; failures are reported and leave the run's
/// metrics empty) and writes the table.
pub fn collect(sweep: &Sweep, jobs: usize) -> Result<Table> {
    let pending: Vec<&str> = (sweep.runs.iter())
        .filter(|r| is_done(sweep, &r.id) && !sweep.run_dir(&r.id).join("eval.json").exists())
        .map(|r| r.id.as_str())
        .collect();
    in_parallel(&pending, jobs, |id| {
        if let Err(e) = evaluate(sweep, id) {
            eprintln!("{id}: evaluation failed: {e}");
        }
    });
    let evals: Vec<Option<Value>> = (sweep.runs.iter())
        .map(|r| {
            let path = sweep.run_dir(&r.id).join("eval.json");
            let text = std::fs::read_to_string(path).ok()?;
            serde_json::from_str(&text).ok()
        })
        .collect();
    // Every number of any eval.json, nested ones as `stats.avg_prop_vec`, in name order.
    let metrics: BTreeSet<String> = (evals.iter().flatten())
        .flat_map(|e| numbers(e, ""))
        .collect();
    let mut header = vec!["id".to_string(), "seed".to_string()];
    header.extend(sweep.axes.iter().cloned());
    // eval.json's own `seed` (of its samples) and the like are told apart from the run's.
    let metric_column = |m: &String| match header.contains(m) {
        true => format!("eval.{m}"),
        false => m.clone(),
    };
    let metric_columns: Vec<String> = metrics.iter().map(metric_column).collect();
    header.extend(metric_columns);
    let rows: Vec<Vec<String>> = (sweep.runs.iter().zip(&evals))
        .map(|(run, eval)| {
            let mut row = vec![run.id.clone(), run.seed.to_string()];
            row.extend(run.overrides.iter().map(|(_, v)| compact(v)));
            row.extend(metrics.iter().map(|m| {
                eval.as_ref()
                    .and_then(|e| m.split('.').try_fold(e, |v, key| v.get(key)))
                    .map(compact)
                    .unwrap_or_default()
            }));
            row
        })
        .collect();
    let files = [sweep.out.join("summary.csv"), sweep.out.join("summary.md")];
    std::fs::create_dir_all(&sweep.out).map_err(|e| Error::io(&sweep.out, e))?;
    write_atomic(&files[0], csv(&header, &rows).as_bytes())?;
    write_atomic(&files[1], markdown(&header, &rows).as_bytes())?;
    let plot = plot(sweep, &evals)?;
    Ok(Table {
        header,
        rows,
        files,
        plot,
    })
}

/// The dotted names (under `prefix`) of the numbers in `value`'s objects, nested ones
/// included; arrays are not entered.
fn numbers(value: &Value, prefix: &str) -> Vec<String> {
    let Some(object) = value.as_object() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    // A key with a dot in it could not be told from a nested one: left out.
    for (key, v) in object.iter().filter(|(key, _)| !key.contains('.')) {
        let name = format!("{prefix}{key}");
        if v.is_number() {
            names.push(name);
        } else if v.is_object() {
            names.extend(numbers(v, &format!("{name}.")));
        }
    }
    names
}

/// The sweep's figure: for text runs with vectors kept and BLEU, those against each other
/// (`OUT/vectors-vs-bleu.png`, one series per configuration with its seeds' mean and spread); otherwise the -ELBO (or the first metric) against the first
/// numeric axis, one series per value of the other axes (`OUT/<metric>-vs-<axis>.png`).
/// `None` when no run is evaluated yet or no axis is numeric.
fn plot(sweep: &Sweep, evals: &[Option<Value>]) -> Result<Option<PathBuf>> {
    let evaluated: Vec<(&super::PlannedRun, &Value)> = (sweep.runs.iter().zip(evals))
        .filter_map(|(run, eval)| Some((run, eval.as_ref()?)))
        .collect();
    let Some(&(_, first)) = evaluated.first() else {
        return Ok(None);
    };
    if first["bleu"].is_number() && first["stats"]["avg_prop_vec"].is_number() {
        let out = sweep.out.join("vectors-vs-bleu.png");
        let dirs: Vec<PathBuf> = evaluated
            .iter()
            .map(|(r, _)| sweep.run_dir(&r.id))
            .collect();
        plot_vectors_vs_bleu(&dirs, &out, true)?;
        return Ok(Some(out));
    }
    let Some(axis) = (0..sweep.axes.len())
        .find(|&a| evaluated.iter().all(|(r, _)| r.overrides[a].1.is_number()))
    else {
        return Ok(None);
    };
    let numbers = first
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.is_number());
    let metric = match first["neg_elbo"].is_number() {
        true => "neg_elbo".to_string(),
        false => match numbers.map(|(k, _)| k.clone()).next() {
            Some(m) => m,
            None => return Ok(None),
        },
    };
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (run, eval) in &evaluated {
        let others: Vec<String> = (run.overrides.iter().enumerate())
            .filter(|(a, _)| *a != axis)
            .map(|(a, (_, v))| format!("{}={}", sweep.axes[a], compact(v)))
            .collect();
        let name = match others.is_empty() {
            true => metric.clone(),
            false => others.join(", "),
        };
        let x = run.overrides[axis].1.as_f64().unwrap_or(f64::NAN);
        let y = eval[&metric].as_f64().unwrap_or(f64::NAN);
        series.entry(name).or_default().push((x, y));
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, p)| (n.as_str(), p.clone()))
        .collect();
    let axis_name = &sweep.axes[axis];
    let out = sweep.out.join(format!("{metric}-vs-{axis_name}.png"));
    let title = format!(
        "{}: {metric} against {axis_name}, one dot per run",
        sweep.name
    );
    plots::xy_chart(
        &out,
        &title,
        &series,
        (axis_name, &metric),
        plots::Marks::Dots,
    )?;
    Ok(Some(out))
}

/// `vaezoo eval` of run `id` in a child process.
fn evaluate(sweep: &Sweep, id: &str) -> Result<()> {
    let exe =
        std::env::current_exe().map_err(|e| Error::Usage(format!("no vaezoo binary: {e}")))?;
    let output = Command::new(exe)
        .arg("eval")
        .arg(sweep.run_dir(id))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::Usage(format!("cannot start: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(Error::Usage(
        stderr.lines().next().unwrap_or("no message").to_string(),
    ))
}

/// A JSON value as one table cell: strings bare, anything else as compact JSON.
fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// RFC 4180 CSV: cells with a comma, quote or line break quoted.
fn csv(header: &[String], rows: &[Vec<String>]) -> String {
    let cell = |c: &String| match c.contains([',', '"', '\n']) {
        true => format!("\"{}\"", c.replace('"', "\"\"")),
        false => c.clone(),
    };
    std::iter::once(header)
        .chain(rows.iter().map(Vec::as_slice))
        .map(|r| r.iter().map(cell).collect::<Vec<_>>().join(",") + "\n")
        .collect()
}

/// A markdown table (`|` in cells escaped).
fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |r: &[String]| {
        let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut text = line(header);
    text.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    rows.iter().for_each(|r| text.push_str(&line(r)));
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn nested_numbers_get_dotted_names_and_arrays_and_strings_none() {
        let eval = serde_json::json!({
            "bleu": 46.2, "lm": null, "name": "x", "curve": [1, 2],
            "stats": {"avg_prop_vec": 0.6, "deep": {"n": 3}}, "odd.key": 1,
        });
        let names = super::numbers(&eval, "");
        assert_eq!(names, ["bleu", "stats.avg_prop_vec", "stats.deep.n"]);
    }
}
