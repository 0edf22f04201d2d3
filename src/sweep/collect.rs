//! `vaezoo sweep collect`: evaluates the finished runs not yet evaluated (a child `vaezoo eval`
//! each, `--jobs` at a time) and writes one table of every run: its id, seed, the value of each
//! axis, then every number of its `eval.json`, as `OUT/summary.csv` and `OUT/summary.md`.
//! Runs not finished yet are listed with empty metrics.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::run::is_done;
use super::Sweep;
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
}

/// Evaluates what is missing (`jobs` at a time; failures are reported and leave the run's
/// metrics empty) and writes the table.
pub fn collect(sweep: &Sweep, jobs: usize) -> Result<Table> {
    let pending: Vec<&str> = (sweep.runs.iter())
        .filter(|r| is_done(sweep, &r.id) && !sweep.run_dir(&r.id).join("eval.json").exists())
        .map(|r| r.id.as_str())
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while let Some(id) = pending.get(next.fetch_add(1, Ordering::SeqCst)) {
                    if let Err(e) = evaluate(sweep, id) {
                        eprintln!("{id}: evaluation failed: {e}");
                    }
                }
            });
        }
    });
    let evals: Vec<Option<Value>> = (sweep.runs.iter())
        .map(|r| {
            let path = sweep.run_dir(&r.id).join("eval.json");
            let text = std::fs::read_to_string(path).ok()?;
            serde_json::from_str(&text).ok()
        })
        .collect();
    // Every top-level number of any eval.json, in name order.
    let metrics: BTreeSet<String> = (evals.iter().flatten())
        .filter_map(Value::as_object)
        .flat_map(|m| {
            m.iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, _)| k.clone())
        })
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
                    .and_then(|e| e.get(m))
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
    Ok(Table {
        header,
        rows,
        files,
    })
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
