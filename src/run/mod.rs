//! The run folder: everything one training run writes, laid out as
//!
//! ```text
//! RUN/spec.json                         the resolved spec (absolute data path, final seed)
//! RUN/env.json                          versions, seed, device, plugins, git revision
//! RUN/metrics.jsonl                     one JSON line per training step
//! RUN/checkpoints/latest.safetensors    weights, optimiser, step, RNG (written atomically)
//! RUN/plots/                            loss curves, sample grids (PNG)
//! RUN/eval.json                         the last `vaezoo eval`
//! RUN/tokenizer.json                    a text run's tokenizer (+ tokenizer_config.json)
//! RUN/tensorboard/                      TensorBoard events of metrics.jsonl (`--tensorboard`)
//! ```
//!
//! Every file that is replaced is written to a temporary file and renamed, so an interrupted
//! run never destroys what was there; a new run folder is assembled under a hidden name and
//! renamed into place once its spec is written ([`RunDir::create`]).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::append::CommittedFile;
use crate::{Error, Result};

/// Where `path` leads: itself through every symlink when it exists, else its (resolved)
/// folder joined with its name; as given when neither resolves.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = fs::canonicalize(path) {
        return real;
    }
    // A dangling symlink: writing through it creates its target.
    if let Ok(target) = fs::read_link(path) {
        let parent = path.parent().unwrap_or(Path::new("."));
        if target != path {
            return resolved(&parent.join(target));
        }
    }
    let parent = vaezoo_core::process::folder_of(path);
    match (fs::canonicalize(parent), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Where process `pid` assembles the run folder `root` before renaming it into place: a
/// hidden sibling, `.NAME.partial-PID`.
fn partial_path(root: &Path, pid: u32) -> PathBuf {
    root.with_file_name(format!("{}{pid}", partial_prefix(root)))
}

/// The name of `root`'s partial folders up to the process id, `.NAME.partial-`.
fn partial_prefix(root: &Path) -> String {
    let name = root.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    format!(".{name}.partial-")
}

/// A run folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates a new run folder holding what `init` writes into it (its spec first of all):
    /// the folder is assembled under a hidden name beside `root` and renamed into place once
    /// `init` has succeeded, so that at every instant `root` is either absent (or the empty
    /// folder it was) or a complete run folder, whatever kills the process. An existing
    /// non-empty folder is refused, and nothing is touched; when `init` fails, the partial
    /// folder is removed.
    pub fn create(root: &Path, init: impl FnOnce(&RunDir) -> Result<()>) -> Result<Self> {
        if root.exists()
            && fs::read_dir(root)
                .map_err(|e| Error::io(root, e))?
                .next()
                .is_some()
        {
            return Err(Error::Run {
                path: root.to_path_buf(),
                message: "already exists and is not empty; use `vaezoo resume` to continue it or pick another --out".into(),
            });
        }
        let partial = partial_path(root, std::process::id());
        // The partial folders of `root` of processes killed while they assembled it.
        let prefix = partial_prefix(root);
        let parent = vaezoo_core::process::folder_of(&partial);
        vaezoo_core::process::remove_left_by_exited(parent, |entry| {
            entry.strip_prefix(&prefix)?.parse().ok()
        });
        let built = (|| {
            for dir in [
                partial.clone(),
                partial.join("checkpoints"),
                partial.join("plots"),
            ] {
                fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            init(&RunDir {
                root: partial.clone(),
            })?;
            // Replaces an empty `root` folder, as `rename` does on every supported system.
            fs::rename(&partial, root).map_err(|e| Error::io(root, e))
        })();
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing run folder (it must hold `spec.json`).
    pub fn open(root: &Path) -> Result<Self> {
        let run = Self {
            root: root.to_path_buf(),
        };
        if !run.spec_path().is_file() {
            return Err(Error::Run {
                path: root.to_path_buf(),
                message: "is not a vaezoo run folder (no spec.json)".into(),
            });
        }
        Ok(run)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `spec.json`.
    pub fn spec_path(&self) -> PathBuf {
        self.root.join("spec.json")
    }

    /// `env.json`.
    pub fn env_path(&self) -> PathBuf {
        self.root.join("env.json")
    }

    /// `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `tensorboard/`, the folder of TensorBoard event files.
    pub fn tensorboard_dir(&self) -> PathBuf {
        self.root.join(crate::tensorboard::FOLDER)
    }

    /// `checkpoints/latest.safetensors`.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.root.join("checkpoints").join("latest.safetensors")
    }

    /// The latest checkpoint when there is one (a regular file, or a link to one), `None` when
    /// there is truly none yet (neither it nor `checkpoints/` exists): only then may a run
    /// start from step 0. Anything else there (a folder, a dangling link or a link loop, a
    /// `checkpoints` that is a file, an unreadable folder) is an error, so that no caller
    /// mistakes a damaged run for a fresh one and overwrites what it holds.
    pub fn latest_checkpoint(&self) -> Result<Option<PathBuf>> {
        let path = self.checkpoint_path();
        let damaged = |what: String| Error::Run {
            path: self.root.clone(),
            message: format!("{what}; move it away or restore the checkpoint file"),
        };
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match fs::symlink_metadata(self.root.join("checkpoints")) {
                    Ok(dir) if !dir.is_dir() => {
                        Err(damaged("has a `checkpoints` that is not a folder".into()))
                    }
                    _ => Ok(None),
                }
            }
            Err(e) => Err(damaged(format!("cannot read {}: {e}", path.display()))),
            Ok(meta) if meta.is_file() => Ok(Some(path)),
            Ok(meta) if meta.file_type().is_symlink() => match fs::metadata(&path) {
                Ok(target) if target.is_file() => Ok(Some(path)),
                Ok(_) => Err(damaged(format!(
                    "has a link at {} that does not lead to a file",
                    path.display()
                ))),
                Err(e) => Err(damaged(format!(
                    "has a broken link at {} ({e})",
                    path.display()
                ))),
            },
            Ok(_) => Err(damaged(format!(
                "has {} but it is not a file",
                path.display()
            ))),
        }
    }

    /// `tokenizer.json`, the tokenizer of a text run.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }

    /// `tokenizer_config.json`: the special tokens of `tokenizer.json`, for Hugging Face's
    /// `PreTrainedTokenizerFast`.
    pub fn tokenizer_config_path(&self) -> PathBuf {
        self.root.join("tokenizer_config.json")
    }

    /// `text/<name>`: reconstructions, samples and interpolations of a text run.
    pub fn text_path(&self, name: &str) -> PathBuf {
        self.root.join("text").join(name)
    }

    /// `eval.json`.
    pub fn eval_path(&self) -> PathBuf {
        self.root.join("eval.json")
    }

    /// `eval.jsonl`: the evaluation's numbers per test example.
    pub fn eval_examples_path(&self) -> PathBuf {
        self.root.join("eval.jsonl")
    }

    /// `plots/<name>`.
    pub fn plot_path(&self, name: &str) -> PathBuf {
        self.root.join("plots").join(name)
    }

    /// Refuses `out`, an output a command was asked to write for this run, when it is one of
    /// the run's own records (spec, environment, metrics, evaluation, tokenizer, or anything in
    /// `checkpoints/`, `text/` or `tensorboard/`), by any path or symlink: outputs go to
    /// `plots/` or outside.
    pub fn check_output(&self, out: &Path) -> Result<()> {
        let Ok(root) = fs::canonicalize(&self.root) else {
            return Ok(());
        };
        let Ok(relative) = resolved(out).strip_prefix(&root).map(Path::to_path_buf) else {
            return Ok(());
        };
        let records = [
            self.spec_path(),
            self.env_path(),
            self.metrics_path(),
            self.eval_path(),
            self.eval_examples_path(),
            self.tokenizer_path(),
            self.tokenizer_config_path(),
        ];
        let is_record = records
            .iter()
            .any(|r| r.strip_prefix(&self.root) == Ok(&relative))
            || relative.as_os_str().is_empty()
            || relative.starts_with("checkpoints")
            || relative.starts_with("text")
            || relative.starts_with(crate::tensorboard::FOLDER);
        if is_record {
            return Err(Error::Run {
                path: out.to_path_buf(),
                message: format!(
                    "is a record of the run {}; write the output elsewhere (e.g. under its plots/)",
                    self.root.display()
                ),
            });
        }
        Ok(())
    }

    /// Makes sure `plots/` is a folder, creating it when it is missing (its files are derived
    /// and written again): for a session to check before its first write that the plots at
    /// its end can be written. A `plots` that is not a folder is an error.
    pub fn ensure_plots_dir(&self) -> Result<()> {
        let dir = self.root.join("plots");
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::Run {
                path: self.root.clone(),
                message: "has a `plots` that is not a folder; move it away".into(),
            }),
            Err(_) => fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e)),
        }
    }

    /// Reads the metric lines, skipping a torn last line (a run killed mid-write).
    pub fn read_metrics(&self) -> Result<Vec<Value>> {
        let path = self.metrics_path();
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| Error::io(&path, e))?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Keeps only the metric lines of steps `<= step` (those a checkpoint covers).
    pub fn truncate_metrics(&self, step: u64) -> Result<()> {
        let kept: Vec<Value> = self
            .read_metrics()?
            .into_iter()
            .filter(|v| v["step"].as_u64().is_some_and(|s| s <= step))
            .collect();
        let mut text = String::new();
        for v in kept {
            text.push_str(&v.to_string());
            text.push('\n');
        }
        write_atomic(&self.metrics_path(), text.as_bytes())
    }

    /// Opens `metrics.jsonl` for appending.
    pub fn metrics_writer(&self) -> Result<MetricsWriter> {
        CommittedFile::append(&self.metrics_path()).map(MetricsWriter)
    }
}

/// Appends one JSON line per step to `metrics.jsonl`. Lines count once [`Self::commit`]ted
/// (with the checkpoint that covers them): dropped before that, the writer cuts the file back
/// to its last committed length ([`CommittedFile`]), so that a session that fails (a full
/// disk at the checkpoint, a numerical error) leaves `metrics.jsonl` as it was.
pub struct MetricsWriter(CommittedFile);

impl MetricsWriter {
    /// Appends one line.
    pub fn write(&mut self, line: &Value) -> Result<()> {
        self.0.write_all(format!("{line}\n").as_bytes())
    }

    /// Pushes buffered lines to the file (before the checkpoint that covers them).
    pub fn flush(&mut self) -> Result<()> {
        self.0.flush()
    }

    /// Makes the lines written so far permanent (once their checkpoint is saved).
    pub fn commit(&mut self) -> Result<()> {
        self.0.commit()
    }
}

/// Fails, naming it, when one of `paths` is a folder, which [`write_atomic`] cannot replace:
/// checked before a command writes the first of several files, so that a failure leaves all
/// of them as they were.
pub fn check_replaceable(paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        if fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()) {
            return Err(Error::Run {
                path: path.clone(),
                message: "is a folder where a file belongs; move it away".into(),
            });
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
///
/// The temporary file ([`vaezoo_core::process::temp_file_for`]) is this call's own, so that
/// writers of the same path at once (the array tasks of a sweep writing its specs) each rename
/// a complete file of their own: the last rename wins, and none of them fails or leaves a torn
/// file. The temporary files of `path` that writers killed mid-write left go after the rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let dir = vaezoo_core::process::folder_of(path);
    let tmp = vaezoo_core::process::temp_file_for(dir, name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    // The temporary files of writers of `path` killed before their rename.
    vaezoo_core::process::remove_temp_files_left_by_exited(dir, name);
    Ok(())
}

/// Writes one line per item of `lines` to `path` atomically, creating its folder.
pub fn write_lines<S: std::fmt::Display>(
    path: &Path,
    lines: impl IntoIterator<Item = S>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| vaezoo_core::Error::io(dir, e))?;
    }
    let text: String = lines.into_iter().map(|l| format!("{l}\n")).collect();
    write_atomic(path, text.as_bytes())
}

/// Writes pretty JSON (with a final newline) atomically.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// The current UTC time as `YYYYMMDD-HHMMSS`, for default run-folder names.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
