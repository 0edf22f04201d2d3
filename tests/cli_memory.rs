//! Memory limits end to end: a training batch whose step does not fit is refused before the
//! run folder exists (naming `training.batch_size`), commands that decode many rows split them
//! into calls that fit without changing what they compute, and a model near the parameter
//! limit checkpoints and resumes within the memory it was allowed (a checkpoint is written a
//! tensor at a time).

mod common;

use std::path::Path;
use std::process::Command;

use common::{ok, text, tiny_spec_with, vaezoo, vaezoo_within};
use serde_json::json;

/// The tiny digits VAE with `hidden` units in both MLPs and batches of `batch` (512 examples).
fn wide_spec(dir: &Path, name: &str, hidden: usize, batch: usize) -> String {
    let path = tiny_spec_with(dir, name, |spec| {
        spec["encoder"]["config"]["hidden"] = json!([hidden]);
        spec["decoder"]["config"]["hidden"] = json!([hidden]);
        spec["training"]["batch_size"] = json!(batch);
    });
    path.to_str().unwrap().to_string()
}

#[test]
fn a_batch_whose_step_does_not_fit_is_refused_before_the_run_folder_exists() {
    let dir = tempfile::tempdir().unwrap();
    // 8.9 million parameters (0.14 GB to train) fit a 600 MiB limit; a step on 512 rows of
    // 65,536 hidden units (about 0.8 MB a row) does not.
    let spec = wide_spec(dir.path(), "wide", 65_536, 512);
    let run = dir.path().join("run");
    let run_arg = run.to_str().unwrap();
    let out = vaezoo(&["--max-memory", "600M", "train", &spec, "--out", run_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: /training/batch_size: a training step of 512 rows would take"),
        "{stderr}"
    );
    assert!(stderr.contains("rows fit"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!run.exists(), "no run folder is left");
    // `validate` says the same, and the environment variable sets the same limit.
    let out = Command::new(env!("CARGO_BIN_EXE_vaezoo"))
        .args(["validate", &spec])
        .env("VAEZOO_MAX_MEMORY", "600M")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/training/batch_size: a training step"),
        "{}",
        text(&out)
    );
    // 16 rows fit, and train within the address space the limit describes.
    let spec = wide_spec(dir.path(), "narrow", 65_536, 16);
    ok(vaezoo_within(
        600 << 20,
        &["train", &spec, "--out", run_arg, "--stop-after", "2"],
    ));
}

#[test]
fn samples_split_into_calls_that_fit_are_the_samples_of_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let spec = wide_spec(dir.path(), "sampled", 8_192, 64);
    let run = dir.path().join("run");
    let run_arg = run.to_str().unwrap();
    ok(vaezoo(&[
        "train",
        &spec,
        "--out",
        run_arg,
        "--stop-after",
        "1",
    ]));
    let whole = dir.path().join("whole.png");
    let split = dir.path().join("split.png");
    ok(vaezoo(&[
        "sample",
        run_arg,
        "-n",
        "3000",
        "--out",
        whole.to_str().unwrap(),
    ]));
    // 3,000 rows of 8,192 hidden units (about 0.2 GB) do not fit in what a 300 MiB limit
    // leaves after its headroom.
    ok(vaezoo(&[
        "--max-memory",
        "300M",
        "sample",
        run_arg,
        "-n",
        "3000",
        "--out",
        split.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&split).unwrap()
    );
}

#[test]
fn a_model_near_the_parameter_limit_checkpoints_and_resumes_within_it() {
    let dir = tempfile::tempdir().unwrap();
    // 36 million parameters: 0.58 GB to train, within half of a 2 GiB address space. A
    // checkpoint that held copies of the whole state while it was written (weights and both
    // moments, copied, serialised and reordered) needed about 2.3 GB more and aborted.
    let spec = tiny_spec_with(dir.path(), "deep", |spec| {
        spec["encoder"]["config"]["hidden"] = json!([6000, 6000]);
        spec["training"]["batch_size"] = json!(16);
    });
    let spec = spec.to_str().unwrap();
    let run = dir.path().join("run");
    let run_arg = run.to_str().unwrap();
    let limit = 2 << 30;
    ok(vaezoo_within(
        limit,
        &["train", spec, "--out", run_arg, "--stop-after", "1"],
    ));
    assert!(run.join("checkpoints/latest.safetensors").is_file());
    ok(vaezoo_within(
        limit,
        &["resume", run_arg, "--stop-after", "2"],
    ));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
}
