//! End-to-end tests of damaged runs and hostile input: damaged checkpoints and run folders,
//! kills during start-up, outputs aimed at a run's records, sizes past every limit, data that
//! changed; each must fail in one line and leave every file as it was, or recover exactly.

mod common;

use common::{ok, snapshot, vaezoo};
use serde_json::json;
use vaezoo_core::checkpoint::Checkpoint;

#[test]
fn a_damaged_checkpoint_is_one_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(vaezoo(&[
        "train",
        "zoo/vae-optdigits-tiny.json",
        "--out",
        run.to_str().unwrap(),
    ]));
    let ckpt = run.join("checkpoints/latest.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    for damaged in [
        bytes[..bytes.len() / 2].to_vec(),
        flipped,
        b"not a checkpoint".to_vec(),
    ] {
        std::fs::write(&ckpt, &damaged).unwrap();
        let before = snapshot(&run);
        for cmd in [&["eval"][..], &["sample"], &["resume"]] {
            let mut args = cmd.to_vec();
            args.push(run.to_str().unwrap());
            let out = vaezoo(&args);
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(
                !out.status.success(),
                "{cmd:?} accepted a damaged checkpoint"
            );
            let lines: Vec<&str> = stderr.lines().collect();
            assert!(
                lines[0].starts_with("error: ") && lines[0].contains("checkpoint"),
                "{stderr}"
            );
            assert!(lines.len() <= 2 && !stderr.contains("panicked"), "{stderr}");
            assert_eq!(before, snapshot(&run), "{cmd:?} changed the run folder");
        }
    }
}

/// A run of the tiny optdigits VAE in a fresh temporary folder, stopped after `stop_after`
/// steps (`None`: trained to the end).
fn tiny_run(stop_after: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = vec!["train", "zoo/vae-optdigits-tiny.json", "--out"];
    args.push(run.to_str().unwrap());
    if let Some(n) = stop_after {
        args.extend(["--stop-after", n]);
    }
    ok(vaezoo(&args));
    (dir, run)
}

/// Runs `vaezoo cmd RUN extra…`, which must fail with an `error:` line and no panic and leave
/// every file of the run as it was; returns its stderr.
fn fails_unchanged(cmd: &str, run: &std::path::Path, extra: &[&str], what: &str) -> String {
    let before = snapshot(run);
    let mut args = vec![cmd, run.to_str().unwrap()];
    args.extend(extra);
    let out = vaezoo(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{cmd} accepted {what}");
    assert!(stderr.starts_with("error: "), "{what}, {cmd}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(before, snapshot(run), "{cmd} changed the run ({what})");
    stderr
}

#[test]
fn a_checkpoint_that_is_not_a_file_is_an_error_that_changes_nothing() {
    use std::fs;
    let (dir, run) = tiny_run(None);
    let folder = run.join("checkpoints");
    let ckpt = folder.join("latest.safetensors");
    let saved = dir.path().join("saved.safetensors");
    fs::rename(&ckpt, &saved).unwrap();
    let damages = [
        "a folder",
        "a dangling link",
        "a link loop",
        "checkpoints as a file",
    ];
    for what in damages {
        match what {
            "a folder" => fs::create_dir(&ckpt).unwrap(),
            "a dangling link" => std::os::unix::fs::symlink(folder.join("gone"), &ckpt).unwrap(),
            "a link loop" => std::os::unix::fs::symlink(&ckpt, &ckpt).unwrap(),
            _ => {
                fs::remove_dir_all(&folder).unwrap();
                fs::write(&folder, b"x").unwrap();
            }
        }
        for cmd in ["resume", "eval", "sample"] {
            fails_unchanged(cmd, &run, &[], what);
        }
        // Back to a checkpoints folder without the damage, for the next case.
        if fs::symlink_metadata(&folder).is_ok_and(|m| m.is_file()) {
            fs::remove_file(&folder).unwrap();
            fs::create_dir(&folder).unwrap();
        } else if fs::symlink_metadata(&ckpt).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir(&ckpt).unwrap();
        } else {
            fs::remove_file(&ckpt).unwrap();
        }
    }
    fs::rename(&saved, &ckpt).unwrap();
    ok(vaezoo(&["eval", run.to_str().unwrap()]));
}

#[test]
fn resume_recreates_a_missing_plots_folder_and_refuses_a_plots_file() {
    let (_dir, run) = tiny_run(Some("10"));
    let plots = run.join("plots");
    std::fs::remove_dir_all(&plots).unwrap();
    std::fs::write(&plots, b"not a folder").unwrap();
    let stderr = fails_unchanged("resume", &run, &[], "a plots file");
    assert!(stderr.contains("plots"), "{stderr}");
    std::fs::remove_file(&plots).unwrap();
    ok(vaezoo(&["resume", run.to_str().unwrap()]));
    assert!(plots.join("loss.png").is_file());
}

#[test]
fn checkpoint_counters_that_disagree_with_the_run_are_refused() {
    let (_dir, run) = tiny_run(Some("10"));
    let ckpt = run.join("checkpoints/latest.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    type Tamper = fn(&mut Checkpoint);
    let tamper: [(&str, Tamper); 4] = [
        ("Adam's update count", |c| {
            c.optimizer.step = 1_000_000_000_000
        }),
        ("the run length", |c| {
            c.trainer["total_steps"] = json!(u64::MAX)
        }),
        ("a step past the end", |c| {
            c.step = 1_000;
            c.optimizer.step = 1_000;
        }),
        ("another run's length", |c| {
            c.trainer["total_steps"] = json!(7)
        }),
    ];
    for (what, change) in tamper {
        let mut c = Checkpoint::load(&ckpt).unwrap();
        change(&mut c);
        c.save(&ckpt).unwrap();
        let stderr = fails_unchanged("resume", &run, &[], what);
        assert!(stderr.contains("step"), "{stderr}");
        std::fs::write(&ckpt, &good).unwrap();
    }
    ok(vaezoo(&["resume", run.to_str().unwrap()]));
}

#[test]
fn outputs_never_replace_the_runs_own_records() {
    let (dir, run) = tiny_run(None);
    let link = dir.path().join("link.png");
    #[cfg(unix)]
    std::os::unix::fs::symlink(run.join("metrics.jsonl"), &link).unwrap();
    let record = |name: &str| run.join(name).to_str().unwrap().to_string();
    let targets = [
        record("spec.json"),
        record("checkpoints/latest.safetensors"),
        record("checkpoints/other.png"),
        format!("{}/../run/env.json", run.display()),
        link.to_str().unwrap().to_string(),
    ];
    for target in &targets {
        for cmd in ["sample", "traverse"] {
            let stderr = fails_unchanged(cmd, &run, &["--out", target], target);
            assert!(stderr.contains("is a record of the run"), "{stderr}");
        }
    }
    // Its plots folder, or anywhere outside the run, is where outputs go.
    let grid = run.join("plots/grid.png");
    ok(vaezoo(&[
        "sample",
        run.to_str().unwrap(),
        "-n",
        "4",
        "--out",
        grid.to_str().unwrap(),
    ]));
    assert!(grid.is_file());
}

#[test]
fn command_line_sizes_are_bounded() {
    let (_dir, run) = tiny_run(None);
    let huge = "18446744073709551615";
    let cases: [(&str, &[&str]); 5] = [
        ("sample", &["-n", huge]),
        ("sample", &["-n", "0"]),
        ("traverse", &["--steps", huge]),
        ("interpolate", &["--steps", "1000000000"]),
        ("eval", &["--iw-samples", huge]),
    ];
    for (cmd, extra) in cases {
        let stderr = fails_unchanged(cmd, &run, extra, &extra.join(" "));
        assert!(stderr.contains("is not in"), "{cmd} {extra:?}: {stderr}");
    }
}

#[test]
fn a_run_killed_at_any_moment_of_its_start_is_absent_or_resumable() {
    use std::process::{Command, Stdio};
    use std::time::Duration;
    for delay_ms in [0, 3, 10, 25, 60, 150] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vaezoo"))
            .args(["train", "zoo/vae-optdigits-tiny.json", "--out"])
            .arg(&run)
            .current_dir(common::repo())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL on Unix; it may have finished already
        child.wait().unwrap();
        // Either there is no run yet (then training it again works) or a run to resume.
        let run_arg = run.to_str().unwrap();
        if run.exists() {
            ok(vaezoo(&["resume", run_arg]));
        } else {
            ok(vaezoo(&[
                "train",
                "zoo/vae-optdigits-tiny.json",
                "--out",
                run_arg,
            ]));
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["run"], "killed after {delay_ms} ms");
    }
}

#[test]
fn a_checkpoint_of_another_run_is_refused() {
    let (dir, run) = tiny_run(Some("6"));
    let other = dir.path().join("other");
    let other_arg = other.to_str().unwrap();
    let spec = "zoo/vae-optdigits-tiny.json";
    ok(vaezoo(&[
        "train",
        spec,
        "--seed",
        "1",
        "--stop-after",
        "6",
        "--out",
        other_arg,
    ]));
    let ckpt = "checkpoints/latest.safetensors";
    std::fs::copy(other.join(ckpt), run.join(ckpt)).unwrap();
    for cmd in ["resume", "eval"] {
        let stderr = fails_unchanged(cmd, &run, &[], "another run's checkpoint");
        assert!(stderr.contains("`training.seed` differs"), "{stderr}");
    }
}

#[test]
fn a_model_too_large_to_allocate_is_a_one_line_error_that_leaves_no_run() {
    let dir = tempfile::tempdir().unwrap();
    // Each size within its schema maximum, the model past 10^9 parameters.
    let cases = [
        (
            json!([1_000_000, 1_000_000]),
            json!(4),
            "parameter `encoder.",
        ),
        (json!([1000]), json!(1_000_000), "parameter `bottleneck."),
    ];
    for (hidden, latent_dim, culprit) in cases {
        let path = common::tiny_spec_with(dir.path(), "big", |spec| {
            spec["encoder"]["config"]["hidden"] = hidden;
            spec["bottleneck"]["config"]["latent_dim"] = latent_dim;
        });
        let run = dir.path().join("run");
        let out = vaezoo(&[
            "train",
            path.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        let expected = format!("error: the model is too large: {culprit}");
        assert!(stderr.starts_with(&expected), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!run.exists(), "no run folder is left");
    }
}

#[test]
fn a_model_whose_training_does_not_fit_the_memory_limit_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // 4·10^8 parameters: within the default limit of 10^9, but training them takes 6.4 GB,
    // more than half of the 2 GiB address space the process gets.
    let path = common::tiny_spec_with(dir.path(), "big", |spec| {
        spec["encoder"]["config"]["hidden"] = json!([20_000, 20_000]);
    });
    let run = dir.path().join("run");
    let out = common::vaezoo_within(
        2 << 30,
        &[
            "train",
            path.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: the model is too large: parameter `encoder."),
        "{stderr}"
    );
    assert!(
        stderr.contains("GB: values, gradients and Adam's moments"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!run.exists(), "no run folder is left");
}

#[test]
fn data_that_no_longer_fits_the_model_is_an_error_not_a_panic() {
    let (_dir, run) = tiny_run(None);
    let path = run.join("spec.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // 28 x 28 images where the model was trained on 8 x 8 ones.
    spec["data"]["dir"] = common::repo()
        .join("zoo/data/fashion_mnist")
        .display()
        .to_string()
        .into();
    spec["data"]["pixel_max"] = 255.into();
    std::fs::write(&path, spec.to_string()).unwrap();
    for cmd in ["eval", "traverse"] {
        let stderr = fails_unchanged(cmd, &run, &[], "data of another size");
        assert!(
            stderr.contains("784 values per example, the model was trained on 64"),
            "{stderr}"
        );
    }
}

#[test]
fn a_new_run_that_fails_before_its_first_checkpoint_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    // A learning rate that turns the loss NaN at the second step.
    let path = common::tiny_spec_with(dir.path(), "nan", |spec| {
        spec["training"]["optimizer"]["lr"] = json!(1e19);
    });
    let run = dir.path().join("run");
    let args = [
        "train",
        path.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    let out = vaezoo(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: numerical problem"), "{stderr}");
    assert!(!run.exists(), "the failed run's folder is gone");
}

#[test]
fn an_eval_output_that_is_a_folder_stops_eval_before_it_writes_anything() {
    let (_dir, run) = tiny_run(None);
    ok(vaezoo(&[
        "eval",
        run.to_str().unwrap(),
        "--iw-samples",
        "0",
    ]));
    std::fs::remove_file(run.join("eval.json")).unwrap();
    std::fs::create_dir(run.join("eval.json")).unwrap();
    let stderr = fails_unchanged(
        "eval",
        &run,
        &["--iw-samples", "0"],
        "eval.json as a folder",
    );
    assert!(
        stderr.contains("is a folder where a file belongs"),
        "{stderr}"
    );
}
