//! End-to-end tests of `vaezoo train | resume | eval | sample` on a tiny real dataset, as a user
//! runs them: outputs, exact resume after SIGKILL or a signal, and status lines (damaged runs
//! and hostile input are in `cli_damage.rs`).

mod common;

use common::{ok, text, tiny_spec, train_until_killed, vaezoo};
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
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("env.json")).unwrap()).unwrap();
    assert!(env["threads"].as_u64() >= Some(1), "{env}");
    // The CPU's model name where /proc/cpuinfo gives one (every Linux x86-64 machine does).
    let cpu = &env["cpu"];
    assert!(
        cpu.is_null() || cpu.as_str().is_some_and(|c| !c.is_empty()),
        "{env}"
    );
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    assert!(cpu.is_string(), "{env}");
    // The binary's commit, where it was built in a git checkout.
    let commit = &env["build_commit"];
    let hex = |c: &str| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        commit.is_null() || commit.as_str().is_some_and(hex),
        "{env}"
    );
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
fn tensorboard_events_follow_the_metrics_across_a_resume() {
    use vaezoo::tensorboard::{read_events, What};
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_arg = run.to_str().unwrap();
    let spec = "zoo/vae-optdigits-tiny.json";
    ok(vaezoo(&[
        "train",
        spec,
        "--out",
        run_arg,
        "--stop-after",
        "4",
        "--tensorboard",
    ]));
    // No flag: a run with events keeps writing them.
    ok(vaezoo(&["resume", run_arg, "--stop-after", "9"]));
    let mut files: Vec<_> = std::fs::read_dir(run.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "one event file per session: {files:?}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let loss_at: Vec<f32> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap() as f32
        })
        .collect();
    // The first session's steps 1-4 (the checkpoint every 5 steps does not matter: the
    // stop writes one at step 4), then a START at 5 and steps 5-9.
    let mut steps = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let events = read_events(file).unwrap();
        assert_eq!(events[0].what, What::FileVersion("brain.Event:2".into()));
        if i == 1 {
            assert_eq!((events[1].step, &events[1].what), (5, &What::SessionLog(1)));
        }
        for event in &events {
            if let What::Scalars(scalars) = &event.what {
                let loss = scalars.iter().find(|(tag, _)| tag == "loss").unwrap().1;
                assert_eq!(
                    loss,
                    loss_at[event.step as usize - 1],
                    "step {}",
                    event.step
                );
                assert!(scalars.iter().any(|(tag, _)| tag == "kl"));
                steps.push(event.step);
            }
        }
    }
    assert_eq!(steps, (1..=9).collect::<Vec<u64>>());
}
