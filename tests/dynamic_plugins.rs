//! The example third-party plugin (`examples/third_party_bottleneck`), built with cargo as its
//! author would and loaded with `--plugin-dir`: listing, schemas, validation, training,
//! pinning, exact resume after SIGKILL, and host and plugin built in different profiles.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::plugin_build::{
    cargo_build, laplace_dir, laplace_spec, library_in, sha256_of, target_dir, Profile,
};
use common::{ok, repo, text, train_until_killed};
use serde_json::json;
use vaezoo_core::checkpoint::Checkpoint;

/// `BINARY --plugin-dir DIR ARGS…`, run from the repository root.
fn with_plugins(binary: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .arg("--plugin-dir")
        .arg(dir)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the vaezoo binary runs")
}

fn vaezoo_with(dir: &Path, args: &[&str]) -> Output {
    with_plugins(Path::new(env!("CARGO_BIN_EXE_vaezoo")), dir, args)
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Trains the example spec with `binary`; asserts 24 steps and a falling loss.
fn trains(binary: &Path, dir: &Path, out: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = laplace_spec(tmp.path(), "laplace", None);
    let args = [
        "train",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let log = ok(with_plugins(binary, dir, &args));
    assert!(log.contains("trained 24 steps"), "{log}");
    let m = metrics(out);
    let loss = |i: usize| m[i]["loss"].as_f64().unwrap();
    assert!(
        loss(23) < loss(0) - 5.0,
        "the loss falls: {} → {}",
        loss(0),
        loss(23)
    );
    assert!(
        m.iter().all(|l| l["kl"].as_f64().unwrap() > 0.0),
        "the plugin's KL is logged"
    );
}

#[test]
fn the_example_is_listed_with_its_sha256_and_its_schema_checks_specs() {
    let dir = laplace_dir(Profile::Release);
    let sha = sha256_of(&library_in(&dir));
    let listing = ok(vaezoo_with(&dir, &["plugins"]));
    let line = listing
        .lines()
        .find(|l| l.contains("laplace_vib"))
        .expect(&listing);
    let path = library_in(&dir).canonicalize().unwrap();
    assert!(line.starts_with("bottleneck"), "{line}");
    assert!(
        line.contains(&format!("dynamic {} sha256:{sha}", path.display())),
        "{line}"
    );

    let out = tempfile::tempdir().unwrap();
    ok(vaezoo_with(
        &dir,
        &["schema", "--out", out.path().to_str().unwrap()],
    ));
    let schema = std::fs::read_to_string(out.path().join("plugins/laplace_vib.schema.json"));
    assert!(schema.unwrap().contains("latent_dim"));
    let spec = std::fs::read_to_string(out.path().join("spec.schema.json")).unwrap();
    assert!(spec.contains("plugin.laplace_vib"));

    ok(vaezoo_with(
        &dir,
        &["validate", "examples/third_party_bottleneck/laplace.json"],
    ));
    let bad = laplace_spec(out.path(), "bad", None);
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bad).unwrap()).unwrap();
    value["bottleneck"]["config"] = json!({ "latent_dim": 0, "scale": 2 });
    std::fs::write(&bad, value.to_string()).unwrap();
    let result = vaezoo_with(&dir, &["validate", bad.to_str().unwrap()]);
    assert!(!result.status.success());
    let report = text(&result);
    assert!(report.contains("/bottleneck/config/latent_dim"), "{report}");
    assert!(
        report.contains("/bottleneck/config") && report.contains("scale"),
        "{report}"
    );

    let kit = ok(vaezoo_with(&dir, &["conformance", "laplace_vib"]));
    assert_eq!(
        kit.lines()
            .filter(|l| l.trim_start().starts_with("ok "))
            .count(),
        6,
        "{kit}"
    );
    let faulty = vaezoo_with(&dir, &["conformance", "no_such_plugin"]);
    assert!(!faulty.status.success() && text(&faulty).contains("no_such_plugin"));

    // VAEZOO_PLUGIN_PATH loads the folder too (empty entries are skipped).
    let path = std::env::join_paths(["".into(), dir.clone()]).unwrap();
    let listed = Command::new(env!("CARGO_BIN_EXE_vaezoo"))
        .arg("plugins")
        .env("VAEZOO_PLUGIN_PATH", path)
        .output()
        .unwrap();
    assert!(ok(listed).contains(&format!("sha256:{sha}")));

    // Without the folder the plugin is unknown.
    let unknown = common::vaezoo(&["validate", "examples/third_party_bottleneck/laplace.json"]);
    assert!(!unknown.status.success() && text(&unknown).contains("laplace_vib"));
}

#[test]
fn a_model_with_the_example_trains_evaluates_and_honours_pins() {
    let dir = laplace_dir(Profile::Release);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    trains(Path::new(env!("CARGO_BIN_EXE_vaezoo")), &dir, &run);
    let env = std::fs::read_to_string(run.join("env.json")).unwrap();
    assert!(
        env.contains(&sha256_of(&library_in(&dir))),
        "env.json records the library"
    );
    let eval = ok(vaezoo_with(&dir, &["eval", run.to_str().unwrap()]));
    assert!(eval.contains("kl"), "{eval}");

    let pinned = |sha: &str| {
        let spec = laplace_spec(tmp.path(), "pinned", None);
        let mut value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap();
        value["plugins"] = json!([{ "name": "laplace_vib", "sha256": sha }]);
        std::fs::write(&spec, value.to_string()).unwrap();
        spec
    };
    let good = pinned(&sha256_of(&library_in(&dir)));
    ok(vaezoo_with(&dir, &["validate", good.to_str().unwrap()]));
    let bad = pinned(&"0".repeat(64));
    let out = tmp.path().join("refused");
    let result = vaezoo_with(
        &dir,
        &[
            "train",
            bad.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.lines().next().unwrap().contains("sha256 mismatch"),
        "{stderr}"
    );
    assert!(stderr.lines().count() <= 2, "{stderr}");
    assert!(!out.exists(), "nothing was trained");
}

#[test]
fn resume_after_sigkill_with_the_plugin_equals_an_uninterrupted_run() {
    let dir = laplace_dir(Profile::Release);
    let tmp = tempfile::tempdir().unwrap();
    let training = json!({ "epochs": 60, "batch_size": 16, "optimizer": { "lr": 0.003 }, "seed": 5, "checkpoint_every": 50 });
    let spec = laplace_spec(tmp.path(), "killed", Some(training));
    let (full, killed) = (tmp.path().join("full"), tmp.path().join("killed"));
    ok(vaezoo_with(
        &dir,
        &[
            "train",
            spec.to_str().unwrap(),
            "--out",
            full.to_str().unwrap(),
        ],
    ));

    let at_kill = train_until_killed(&["--plugin-dir", dir.to_str().unwrap()], &spec, &killed);
    assert!(at_kill < 1920, "killed before the end (step {at_kill})");

    let out = ok(vaezoo_with(&dir, &["resume", killed.to_str().unwrap()]));
    assert!(out.contains("trained 1920 steps"), "{out}");
    let a = Checkpoint::load(&full.join("checkpoints/latest.safetensors")).unwrap();
    let b = Checkpoint::load(&killed.join("checkpoints/latest.safetensors")).unwrap();
    assert!(a
        .params
        .iter()
        .any(|p| p.name.starts_with("bottleneck.location")));
    assert_eq!(a.params, b.params, "final weights are bit-identical");
    assert_eq!(a.optimizer, b.optimizer);
    assert_eq!(a.rng, b.rng);
    assert_eq!(metrics(&full), metrics(&killed));

    let refused = common::vaezoo(&["resume", killed.to_str().unwrap()]);
    assert!(!refused.status.success(), "resuming needs the plugin");
    assert!(text(&refused).contains("laplace_vib"), "{}", text(&refused));
}

#[test]
fn host_and_plugin_built_in_different_profiles_work_together() {
    let tmp = tempfile::tempdir().unwrap();
    // A release host with a debug plugin.
    trains(
        Path::new(env!("CARGO_BIN_EXE_vaezoo")),
        &laplace_dir(Profile::Debug),
        &tmp.path().join("release-host"),
    );
    // A debug host with a release plugin.
    cargo_build(".", Profile::Debug, &["--bin", "vaezoo"]);
    let debug_host = target_dir().join("debug/vaezoo");
    trains(
        &debug_host,
        &laplace_dir(Profile::Release),
        &tmp.path().join("debug-host"),
    );
}
