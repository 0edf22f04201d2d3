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
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

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
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
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
        let parent = match partial.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
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
        let path = self.metrics_path();
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let committed = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        Ok(MetricsWriter {
            out: Some(BufWriter::new(file)),
            path,
            committed,
        })
    }
}

/// Appends one JSON line per step to `metrics.jsonl`. Lines count once [`Self::commit`]ted
/// (with the checkpoint that covers them): dropped before that, the writer cuts the file back
/// to its last committed length, so that a session that fails (a full disk at the checkpoint,
/// a numerical error) leaves `metrics.jsonl` as it was.
pub struct MetricsWriter {
    out: Option<BufWriter<fs::File>>,
    path: PathBuf,
    committed: u64,
}

impl MetricsWriter {
    /// Appends one line.
    pub fn write(&mut self, line: &Value) -> Result<()> {
        let out = self.out.as_mut().expect("open until dropped");
        writeln!(out, "{line}").map_err(|e| Error::io(&self.path, e))
    }

    /// Pushes buffered lines to the file (before the checkpoint that covers them).
    pub fn flush(&mut self) -> Result<()> {
        let out = self.out.as_mut().expect("open until dropped");
        out.flush().map_err(|e| Error::io(&self.path, e))
    }

    /// Makes the lines written so far permanent (once their checkpoint is saved).
    pub fn commit(&mut self) -> Result<()> {
        self.flush()?;
        let out = self.out.as_ref().expect("open until dropped");
        self.committed = out
            .get_ref()
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        Ok(())
    }
}

impl Drop for MetricsWriter {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            // Uncommitted lines are discarded, buffered or written; cutting a file back never
            // needs space, so this works on a full disk too.
            let (file, _unwritten) = out.into_parts();
            if file.metadata().is_ok_and(|m| m.len() != self.committed) {
                let _ = file.set_len(self.committed);
            }
        }
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
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
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
mod tests {
    use super::*;

    #[test]
    fn metrics_truncation_drops_later_steps_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(&dir.path().join("r"), |_| Ok(())).unwrap();
        let mut w = run.metrics_writer().unwrap();
        for step in 1..=5u64 {
            w.write(&serde_json::json!({ "step": step })).unwrap();
        }
        w.commit().unwrap();
        drop(w);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(run.metrics_path())
            .unwrap();
        f.write_all(b"{\"step\": 6, \"lo").unwrap();
        run.truncate_metrics(3).unwrap();
        let steps: Vec<u64> = run
            .read_metrics()
            .unwrap()
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2, 3]);
    }

    #[test]
    fn uncommitted_metric_lines_are_cut_back_when_the_writer_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(&dir.path().join("r"), |_| Ok(())).unwrap();
        let mut w = run.metrics_writer().unwrap();
        w.write(&serde_json::json!({ "step": 1 })).unwrap();
        w.commit().unwrap();
        let committed = fs::read(run.metrics_path()).unwrap();
        // Written to the file (flushed) and still buffered: both go.
        w.write(&serde_json::json!({ "step": 2 })).unwrap();
        w.flush().unwrap();
        w.write(&serde_json::json!({ "step": 3 })).unwrap();
        drop(w);
        assert_eq!(fs::read(run.metrics_path()).unwrap(), committed);
        // A new session starts from what is there.
        let mut w = run.metrics_writer().unwrap();
        w.write(&serde_json::json!({ "step": 2 })).unwrap();
        w.commit().unwrap();
        drop(w);
        assert_eq!(run.read_metrics().unwrap().len(), 2);
    }

    #[test]
    fn only_a_truly_absent_checkpoint_means_none() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(&dir.path().join("r"), |_| Ok(())).unwrap();
        let ckpt = run.checkpoint_path();
        let folder = ckpt.parent().unwrap().to_path_buf();
        let _ = fs::remove_dir_all(&folder);
        assert_eq!(
            run.latest_checkpoint().unwrap(),
            None,
            "no checkpoints folder"
        );
        fs::create_dir_all(&folder).unwrap();
        assert_eq!(
            run.latest_checkpoint().unwrap(),
            None,
            "an empty checkpoints folder"
        );
        fs::write(&ckpt, b"x").unwrap();
        assert_eq!(run.latest_checkpoint().unwrap(), Some(ckpt.clone()));
        // Damaged: each is an error that names the run, never "no checkpoint yet".
        let damaged = |setup: &dyn Fn()| {
            let _ = fs::remove_dir_all(&folder);
            let _ = fs::remove_file(&folder);
            setup();
            let e = run.latest_checkpoint().unwrap_err().to_string();
            assert!(e.contains("move it away"), "{e}");
        };
        damaged(&|| fs::create_dir_all(&ckpt).unwrap());
        damaged(&|| fs::write(&folder, b"not a folder").unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            damaged(&|| {
                fs::create_dir_all(&folder).unwrap();
                symlink(folder.join("missing"), &ckpt).unwrap();
            });
            damaged(&|| {
                fs::create_dir_all(&folder).unwrap();
                symlink(&ckpt, &ckpt).unwrap();
            });
            // A link to a real checkpoint file is fine.
            let _ = fs::remove_dir_all(&folder);
            fs::create_dir_all(&folder).unwrap();
            let real = dir.path().join("real.safetensors");
            fs::write(&real, b"x").unwrap();
            symlink(&real, &ckpt).unwrap();
            assert_eq!(run.latest_checkpoint().unwrap(), Some(ckpt.clone()));
        }
    }

    #[test]
    fn a_non_empty_folder_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keep.txt"), "x").unwrap();
        assert!(RunDir::create(dir.path(), |_| Ok(())).is_err());
        assert_eq!(
            fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "x"
        );
    }

    #[test]
    fn a_run_folder_appears_complete_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let listing = || {
            let mut names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        // While `init` writes, the run is only a hidden partial folder.
        let failed = RunDir::create(&root, |partial| {
            assert!(!root.exists());
            assert_eq!(listing(), [format!(".r.partial-{}", std::process::id())]);
            fs::write(partial.spec_path(), "{}").unwrap();
            Err(Error::Usage("the disk is full".into()))
        });
        assert!(failed.is_err());
        assert!(listing().is_empty(), "{:?}", listing());
        // A partial folder of a process that no longer runs goes; an empty target is reused.
        let abandoned = partial_path(&root, u32::MAX);
        fs::create_dir_all(&abandoned).unwrap();
        fs::create_dir_all(&root).unwrap();
        let run = RunDir::create(&root, |partial| {
            fs::write(partial.spec_path(), "{}").map_err(|e| Error::io(partial.root(), e))
        })
        .unwrap();
        assert_eq!(listing(), ["r"]);
        assert!(RunDir::open(run.root()).is_ok());
        assert!(run.root().join("checkpoints").is_dir() && run.root().join("plots").is_dir());
    }

    #[test]
    fn utc_stamp_has_the_expected_shape() {
        let s = utc_stamp();
        assert_eq!(s.len(), 15);
        assert_eq!(&s[8..9], "-");
    }
}
