//! `vaezoo zoo reproduce`: trains and evaluates each seed, writes the per-seed metrics and
//! their means, evaluates finished runs again without retraining, and finishes interrupted
//! ones.

mod common;

use common::{ok, text, vaezoo};
use serde_json::Value;

fn json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn reproduce_trains_each_seed_and_averages_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    // Seed 1 is interrupted first: reproduce must finish it, not start it again.
    let seed1 = dir.path().join("vae-optdigits-tiny-seed1");
    let (s1, stop) = (seed1.to_str().unwrap(), ["--stop-after", "10"]);
    ok(vaezoo(
        &[
            &[
                "train",
                "zoo/vae-optdigits-tiny.json",
                "--seed",
                "1",
                "--out",
                s1,
            ][..],
            &stop,
        ]
        .concat(),
    ));
    let args = [
        "zoo",
        "reproduce",
        "vae-optdigits-tiny",
        "--seeds",
        "0,1",
        "--out",
        out,
        "--iw-samples",
        "10",
    ];
    let printed = ok(vaezoo(&args));
    assert!(
        printed.contains("seed 0") && printed.contains("mean"),
        "{printed}"
    );
    let summary = json(&dir.path().join("vae-optdigits-tiny/summary.json"));
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for name in ["neg_elbo", "is_nll", "rec", "kl"] {
        let per_seed: Vec<f64> = (0..2)
            .map(|s| {
                let eval = json(
                    &dir.path()
                        .join(format!("vae-optdigits-tiny-seed{s}/eval.json")),
                );
                eval[name].as_f64().unwrap()
            })
            .collect();
        let mean = summary["mean"][name].as_f64().unwrap();
        assert!(
            (mean - (per_seed[0] + per_seed[1]) / 2.0).abs() < 1e-9,
            "{name}"
        );
    }
    let metrics = std::fs::read_to_string(seed1.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        24,
        "seed 1 resumed to the end, each step once"
    );
    // A second call evaluates again without retraining.
    let checkpoint = dir
        .path()
        .join("vae-optdigits-tiny-seed0/checkpoints/latest.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    ok(vaezoo(&args));
    assert_eq!(before, std::fs::read(&checkpoint).unwrap());
}

#[test]
fn an_unknown_entry_is_one_line() {
    let out = vaezoo(&["zoo", "reproduce", "no-such-entry"]);
    assert!(!out.status.success());
    let all = text(&out);
    assert!(all.contains("no zoo entry `no-such-entry`"), "{all}");
    assert!(!all.contains("panicked"), "{all}");
}
