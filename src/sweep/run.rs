//! Running a sweep's runs: locally by `--jobs` workers, each run a child `vaezoo train` (or
//! `resume`, for a run folder that exists) with its share of the threads, or one run per Slurm
//! array task ([`run_task`]). A run that finished is skipped (its `OUT/done/<id>` marker), a
//! failed one is reported and the others go on; every run is resumable, so a sweep that was
//! stopped is started again with the same command.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{PlannedRun, Sweep};
use crate::run::write_json;
use crate::{Error, Result};

/// What became of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Trained to its end by this call.
    Trained,
    /// Already finished before.
    Skipped,
    /// Its command failed, with the last line it printed.
    Failed(String),
}

/// Runs every run of `sweep` not yet finished, `jobs` at a time, and returns each run's outcome
/// in plan order.
pub fn run_sweep(sweep: &Sweep, jobs: usize) -> Result<Vec<(String, Outcome)>> {
    prepare(sweep)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_job = (threads / jobs.max(1)).max(1);
    let outcomes = in_parallel(&sweep.runs, jobs, |run| {
        let outcome = run_one(sweep, run, Some(per_job));
        match &outcome {
            Ok(Outcome::Failed(why)) => eprintln!("{}: failed: {why}", run.id),
            Ok(outcome) => eprintln!("{}: {}", run.id, describe(outcome)),
            Err(e) => eprintln!("{}: failed: {e}", run.id),
        }
        outcome.unwrap_or_else(|e| Outcome::Failed(e.to_string()))
    });
    Ok(sweep
        .runs
        .iter()
        .map(|r| r.id.clone())
        .zip(outcomes)
        .collect())
}

/// `f` of every item, `jobs` threads taking the next item as each finishes; results in
/// item order.
pub(super) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new((0..items.len()).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let result = f(item);
                results.lock().expect("no worker panics")[i] = Some(result);
            });
        }
    });
    let results = results.into_inner().expect("no worker panics");
    results
        .into_iter()
        .map(|r| r.expect("every item was taken"))
        .collect()
}

/// Runs run `index` of `sweep` (a Slurm array task), with every thread of the task.
pub fn run_task(sweep: &Sweep, index: usize) -> Result<Outcome> {
    let Some(run) = sweep.runs.get(index) else {
        return Err(Error::Usage(format!(
            "task {index} of a sweep of {} runs",
            sweep.runs.len()
        )));
    };
    prepare(sweep)?;
    run_one(sweep, run, None)
}

/// Writes every run's resolved spec (unchanged ones are left as they are).
fn prepare(sweep: &Sweep) -> Result<()> {
    for run in &sweep.runs {
        let path = sweep.spec_path(&run.id);
        let unchanged = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v == run.spec);
        if !unchanged {
            std::fs::create_dir_all(path.parent().expect("a folder"))
                .map_err(|e| Error::io(&path, e))?;
            write_json(&path, &run.spec)?;
        }
    }
    Ok(())
}

/// Trains or resumes `run` in a child process (`threads` rayon threads, or the default).
fn run_one(sweep: &Sweep, run: &PlannedRun, threads: Option<usize>) -> Result<Outcome> {
    let done = done_marker(sweep, &run.id);
    if done.exists() {
        return Ok(Outcome::Skipped);
    }
    let dir = sweep.run_dir(&run.id);
    let exe =
        std::env::current_exe().map_err(|e| Error::Usage(format!("no vaezoo binary: {e}")))?;
    let mut command = Command::new(exe);
    if dir.join("spec.json").exists() {
        command.arg("resume").arg(&dir);
    } else {
        let spec = sweep.spec_path(&run.id);
        command.arg("train").arg(spec).arg("--out").arg(&dir);
    }
    if let Some(threads) = threads {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let output = command
        .output()
        .map_err(|e| Error::Usage(format!("cannot start: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .or(stderr.lines().last());
        return Ok(Outcome::Failed(last.unwrap_or("no message").to_string()));
    }
    std::fs::create_dir_all(done.parent().expect("a folder")).map_err(|e| Error::io(&done, e))?;
    std::fs::write(&done, b"").map_err(|e| Error::io(&done, e))?;
    Ok(Outcome::Trained)
}

/// `OUT/done/<id>`: written once run `id` trained to its end.
fn done_marker(sweep: &Sweep, id: &str) -> PathBuf {
    sweep.out.join("done").join(id)
}

/// Whether run `id` of `sweep` trained to its end.
pub fn is_done(sweep: &Sweep, id: &str) -> bool {
    done_marker(sweep, id).exists()
}

fn describe(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Trained => "trained",
        Outcome::Skipped => "finished before, skipped",
        Outcome::Failed(_) => "failed",
    }
}

/// On Linux, the child gets SIGKILL when this process dies, so that a killed sweep leaves no
/// run training behind it (the next start resumes it instead). A child whose parent died
/// before the request took effect (between fork and prctl) does not start: it would train on
/// beside the next start of the sweep, into the same run folder.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: prctl and getppid are async-signal-safe and change only the child's own
        // settings.
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other(
                        "the sweep ended before this run began",
                    ));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}
