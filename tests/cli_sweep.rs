//! `vaezoo sweep`: plans checked before anything runs, a local sweep killed in the middle and
//! started again that ends as an uninterrupted one, and the Slurm array script.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, repo, vaezoo};
use serde_json::json;

/// A sweep of the tiny optdigits VAE in `dir` (2 learning rates × 2 latent sizes × 2 seeds,
/// runs in `dir/out`), with `edit` applied to the sweep file.
fn sweep_file(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let base = common::tiny_spec_with(dir, "base", |spec| {
        spec["training"]["epochs"] = json!(4);
    });
    let mut sweep = json!({
        "name": "tiny",
        "base": base.file_name().unwrap().to_str().unwrap(),
        "grid": [{"pointer": "/training/optimizer/lr", "values": [0.001, 0.003]}],
        "zip": [[{"pointer": "/bottleneck/config/latent_dim", "values": [2, 4], "name": "z"}]],
        "seeds": [0, 1],
        "out": "out"
    });
    edit(&mut sweep);
    let path = dir.join("sweep.json");
    std::fs::write(&path, sweep.to_string()).unwrap();
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_plan_names_the_run_and_pointer_of_a_problem_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "/bottleneck/config/no_such_field",
            json!([1]),
            "/bottleneck/config/no_such_field",
        ),
        (
            "/encoder/config/hidden",
            json!([[8], [0]]),
            "/encoder/config/hidden",
        ),
    ];
    for (pointer, values, culprit) in cases {
        let file = sweep_file(dir.path(), |s| {
            s["grid"][0] = json!({"pointer": pointer, "values": values});
        });
        for command in ["plan", "run"] {
            let out = vaezoo(&["sweep", command, arg(&file)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} {pointer}");
            assert!(stderr.starts_with("error: sweep run `tiny-"), "{stderr}");
            assert!(stderr.contains(culprit), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(!dir.path().join("out").exists(), "nothing is written");
        }
    }
}

/// Starts `vaezoo sweep run FILE --jobs 2`, kills it (SIGKILL) once `at_least` runs have
/// finished, and returns how many had.
fn run_until_killed(file: &Path, at_least: usize) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaezoo"))
        .args(["sweep", "run", arg(file), "--jobs", "2"])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let done = file.parent().unwrap().join("out/done");
    let count = || std::fs::read_dir(&done).map_or(0, |d| d.count());
    let start = Instant::now();
    while count() < at_least && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    count()
}

#[test]
fn a_sweep_killed_and_started_again_ends_as_an_uninterrupted_one() {
    let whole = tempfile::tempdir().unwrap();
    let file = sweep_file(whole.path(), |_| {});
    ok(vaezoo(&["sweep", "run", arg(&file), "--jobs", "2"]));
    let out = ok(vaezoo(&["sweep", "collect", arg(&file), "--jobs", "2"]));
    assert!(out.contains("neg_elbo-vs-lr.png"), "{out}");
    assert!(whole.path().join("out/neg_elbo-vs-lr.png").is_file());
    let expected = std::fs::read_to_string(whole.path().join("out/summary.csv")).unwrap();
    assert_eq!(expected.lines().count(), 9, "{expected}");

    let killed = tempfile::tempdir().unwrap();
    let file = sweep_file(killed.path(), |_| {});
    let finished = run_until_killed(&file, 2);
    assert!(
        (2..8).contains(&finished),
        "{finished} runs finished before the kill"
    );
    let out = ok(vaezoo(&["sweep", "run", arg(&file), "--jobs", "2"]));
    assert!(out.contains("finished before, skipped"), "{out}");
    assert!(out.contains("8 runs, 0 failed"), "{out}");
    ok(vaezoo(&["sweep", "collect", arg(&file), "--jobs", "2"]));
    let got = std::fs::read_to_string(killed.path().join("out/summary.csv")).unwrap();
    assert_eq!(got, expected);
    // Every run once: one training session per run folder, or two for those the kill cut.
    let markers = std::fs::read_dir(killed.path().join("out/done"))
        .unwrap()
        .count();
    assert_eq!(markers, 8);
}

#[test]
fn submit_writes_a_slurm_array_of_one_task_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = sweep_file(dir.path(), |_| {});
    let out = ok(vaezoo(&[
        "sweep",
        "submit",
        arg(&file),
        "--slurm",
        "--dry-run",
        "--partition",
        "cpu",
        "--time",
        "00:10:00",
    ]));
    let script = std::fs::read_to_string(dir.path().join("out/sweep.sbatch")).unwrap();
    assert!(out.contains(&script), "{out}");
    for line in [
        "#SBATCH --array=0-7",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=00:10:00",
        "sweep task",
        "\"$SLURM_ARRAY_TASK_ID\"",
    ] {
        assert!(script.contains(line), "{line} missing:\n{script}");
    }
    // A task is one run, as the array would run it.
    ok(vaezoo(&["sweep", "task", arg(&file), "3"]));
    assert!(dir
        .path()
        .join("out/runs/tiny-lr0.001-z4-seed1/checkpoints")
        .is_dir());
    let bad = vaezoo(&["sweep", "task", arg(&file), "8"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("task 8 of a sweep of 8 runs"));
}

#[test]
fn every_zoo_sweep_plans() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("zoo/sweeps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let out = ok(vaezoo(&["sweep", "plan", arg(&file)]));
        assert!(out.contains("each spec valid"), "{out}");
    }
}
