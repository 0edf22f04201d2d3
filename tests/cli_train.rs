//! End-to-end tests of `vaezoo train | resume | eval | sample` on a tiny real dataset, as a user
//! runs them: outputs, exact resume after SIGKILL, and damaged checkpoints.

mod common;

use common::{ok, snapshot, text, tiny_spec, train_until_killed, vaezoo};
use serde_json::json;
use vaezoo_core::checkpoint::Checkpoint;

#[test]
fn train_eval_sample_write_the_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = ok(vaezoo(&[
        "train",
        "zoo/vae-optdigits-tiny.json",
        "--out",
        run.to_str().unwrap(),
    ]));
    assert!(out.contains("trained 24 steps in"), "{out}");
    for file in [
        "spec.json",
        "env.json",
        "metrics.jsonl",
        "checkpoints/latest.safetensors",
        "plots/loss.png",
    ] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 24);
    // The spec's `$schema` (relative in zoo/) still leads to the schema from the run folder.
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("spec.json")).unwrap()).unwrap();
    let schema = std::path::Path::new(spec["$schema"].as_str().unwrap());
    assert!(schema.is_absolute() && schema.is_file(), "{schema:?}");
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(
        last["loss"].as_f64() < first["loss"].as_f64(),
        "the loss falls"
    );

    let out = ok(vaezoo(&["eval", run.to_str().unwrap()]));
    assert!(
        out.contains("-elbo") && out.contains("rec") && out.contains("kl"),
        "{out}"
    );
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let (neg_elbo, rec, kl) = (
        eval["neg_elbo"].as_f64().unwrap(),
        eval["rec"].as_f64().unwrap(),
        eval["kl"].as_f64().unwrap(),
    );
    assert!((neg_elbo - (rec + kl)).abs() < 1e-6 * neg_elbo.abs());
    assert!(kl >= 0.0 && rec > 0.0 && eval["examples"] == 256);
    let again = ok(vaezoo(&["eval", run.to_str().unwrap()]));
    assert_eq!(out, again, "eval is deterministic for a given seed");

    ok(vaezoo(&["sample", run.to_str().unwrap(), "-n", "9"]));
    let png = std::fs::read(run.join("plots/samples.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn an_existing_run_folder_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let out = vaezoo(&[
        "train",
        "zoo/vae-optdigits-tiny.json",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine"
    );
}

/// Training long enough to be killed: 60 epochs of 512 digits at batch 16 = 1920 steps.
fn long_training() -> serde_json::Value {
    json!({ "epochs": 60, "batch_size": 16, "optimizer": { "lr": 0.003 }, "seed": 5, "checkpoint_every": 50 })
}

#[test]
fn resume_after_sigkill_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "killed", long_training());
    let (full, killed) = (dir.path().join("full"), dir.path().join("killed"));
    ok(vaezoo(&[
        "train",
        spec.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]));

    let at_kill = train_until_killed(&[], &spec, &killed);
    assert!(
        at_kill < 1920,
        "the run was killed before it finished (step {at_kill})"
    );

    let out = ok(vaezoo(&["resume", killed.to_str().unwrap()]));
    assert!(out.contains("trained 1920 steps"), "{out}");
    let (a, b) = (
        Checkpoint::load(&full.join("checkpoints/latest.safetensors")).unwrap(),
        Checkpoint::load(&killed.join("checkpoints/latest.safetensors")).unwrap(),
    );
    assert_eq!(a.step, 1920);
    assert_eq!(a.params, b.params, "final weights are bit-identical");
    assert_eq!(a.optimizer, b.optimizer);
    assert_eq!(a.rng, b.rng);
    let metrics =
        |run: &std::path::Path| std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics(&full),
        metrics(&killed),
        "the metric log is the same, with no duplicates"
    );
    let eval = |run: &std::path::Path| {
        ok(vaezoo(&["eval", run.to_str().unwrap()]));
        std::fs::read_to_string(run.join("eval.json")).unwrap()
    };
    assert_eq!(eval(&full), eval(&killed));
}

#[test]
fn stop_and_resume_continue_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(
        dir.path(),
        "stopped",
        json!({ "epochs": 2, "batch_size": 32, "seed": 1, "checkpoint_every": 3 }),
    );
    let (full, parts) = (dir.path().join("full"), dir.path().join("parts"));
    ok(vaezoo(&[
        "train",
        spec.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]));
    let out = ok(vaezoo(&[
        "train",
        spec.to_str().unwrap(),
        "--out",
        parts.to_str().unwrap(),
        "--stop-after",
        "10",
    ]));
    assert!(out.contains("stopped at step 10/32"), "{out}");
    ok(vaezoo(&[
        "resume",
        parts.to_str().unwrap(),
        "--stop-after",
        "21",
    ]));
    ok(vaezoo(&["resume", parts.to_str().unwrap()]));
    let load = |run: &std::path::Path| {
        Checkpoint::load(&run.join("checkpoints/latest.safetensors")).unwrap()
    };
    assert_eq!(load(&full).params, load(&parts).params);
}

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
fn an_nvib_spec_trains_and_reports_its_sparsity() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(vaezoo(&[
        "train",
        "zoo/nvib-optdigits-tiny.json",
        "--out",
        run.to_str().unwrap(),
    ]));
    let out = ok(vaezoo(&["eval", run.to_str().unwrap()]));
    for stat in ["avg_num_vec", "avg_prop_vec", "avg_alpha0"] {
        assert!(out.contains(stat), "{stat} missing:\n{out}");
    }
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let prop = eval["stats"]["avg_prop_vec"].as_f64().unwrap();
    assert!(prop > 0.0 && prop <= 1.0, "{prop}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().all(|l| l.contains("avg_prop_vec")));
    ok(vaezoo(&["sample", run.to_str().unwrap(), "-n", "4"]));
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

#[cfg(unix)]
#[test]
fn a_signal_checkpoints_the_step_under_way_and_the_resumed_run_ends_bit_identical() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    // Long enough to be stopped midway, with no checkpoint of its own before the end.
    let training = json!({"epochs": 60, "batch_size": 64, "seed": 0, "checkpoint_every": 1000000});
    let spec = tiny_spec(dir.path(), "long", training);
    let full = dir.path().join("full");
    ok(vaezoo(&[
        "train",
        spec.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]));
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let run = dir.path().join(format!("run{signal}"));
        let child = Command::new(env!("CARGO_BIN_EXE_vaezoo"))
            .args([
                "train",
                spec.to_str().unwrap(),
                "--out",
                run.to_str().unwrap(),
            ])
            .current_dir(common::repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let metrics = run.join("metrics.jsonl");
        let start = Instant::now();
        while std::fs::metadata(&metrics).map_or(true, |m| m.len() == 0) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "training never started"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{signal}: {stdout}");
        assert!(
            stdout.contains("stopped at step") && stdout.contains("checkpoint saved"),
            "{stdout}"
        );
        let lines = std::fs::read_to_string(&metrics).unwrap().lines().count() as u64;
        let ckpt = Checkpoint::load(&run.join("checkpoints/latest.safetensors")).unwrap();
        assert_eq!(
            ckpt.step, lines,
            "{signal}: the checkpoint is of the last logged step"
        );
        assert!(ckpt.step < 60 * 24, "{signal}: it stopped early");
        ok(vaezoo(&["resume", run.to_str().unwrap()]));
        let latest = |r: &std::path::Path| {
            Checkpoint::load(&r.join("checkpoints/latest.safetensors")).unwrap()
        };
        assert_eq!(
            latest(&run),
            latest(&full),
            "{signal}: the resumed run ends as the uninterrupted one"
        );
        let metrics_of =
            |r: &std::path::Path| std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics_of(&run), metrics_of(&full), "{signal}");
    }
}

#[test]
fn status_lines_report_progress_where_no_bar_is_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = vaezoo(&[
        "train",
        "zoo/vae-optdigits-tiny.json",
        "--status-every",
        "0",
        "--out",
        run.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        24,
        "one line a step at --status-every 0:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("step 1/24 epoch 1 loss "),
        "{}",
        lines[0]
    );
    assert!(lines[23].starts_with("step 24/24 epoch "), "{}", lines[23]);
    assert!(lines[23].ends_with(" it/s)"), "{}", lines[23]);
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
        let text =
            std::fs::read_to_string(common::repo().join("zoo/vae-optdigits-tiny.json")).unwrap();
        let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
        spec["encoder"]["config"]["hidden"] = hidden;
        spec["bottleneck"]["config"]["latent_dim"] = latent_dim;
        spec["data"]["dir"] = common::repo()
            .join("zoo/data/optdigits")
            .display()
            .to_string()
            .into();
        spec.as_object_mut().unwrap().remove("$schema");
        let path = dir.path().join("big.json");
        std::fs::write(&path, spec.to_string()).unwrap();
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
