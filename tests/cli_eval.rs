//! End-to-end tests of `vaezoo eval` (IS-NLL, active units), `sample --class`, `interpolate`
//! and `traverse` on tiny runs, as a user runs them.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, repo, vaezoo};
use serde_json::Value;

/// Trains `spec` (a zoo file, or a spec written by [`spec_with_prior`]) into `dir/run`.
fn trained(dir: &Path, spec: &str) -> PathBuf {
    let run = dir.join("run");
    ok(vaezoo(&["train", spec, "--out", run.to_str().unwrap()]));
    run
}

fn eval_json(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap()
}

/// The width and height of a PNG.
fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let info = decoder.read_info().unwrap();
    (info.info().width, info.info().height)
}

/// Fails with one `error:` line (and at most a hint), no panic; returns stderr.
fn fails_in_one_line(args: &[&str]) -> String {
    let out = vaezoo(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines.len() <= 2 && !stderr.contains("panicked") && !stderr.contains("internal"),
        "{stderr}"
    );
    stderr
}

#[test]
fn eval_reports_an_is_nll_below_the_elbo_and_the_active_units() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path(), "zoo/vae-optdigits-tiny.json");
    let out = ok(vaezoo(&[
        "eval",
        run.to_str().unwrap(),
        "--iw-samples",
        "200",
    ]));
    for row in ["-elbo", "rec", "kl", "is_nll (K=200)", "active_units"] {
        assert!(out.contains(row), "{row} missing:\n{out}");
    }
    let eval = eval_json(&run);
    let (is_nll, neg_elbo) = (
        eval["is_nll"].as_f64().unwrap(),
        eval["neg_elbo"].as_f64().unwrap(),
    );
    assert!(is_nll.is_finite() && is_nll > 0.0, "{eval}");
    assert!(
        is_nll <= neg_elbo,
        "IS-NLL {is_nll} above the -ELBO {neg_elbo}"
    );
    assert_eq!(eval["iw_samples"], 200);
    assert_eq!(eval["latent_dim"], 4);
    assert_eq!(eval["conditional"], false);
    assert!(eval["active_units"].as_u64().unwrap() <= 4);
    assert_eq!(eval["kl_terms"]["kl"], eval["kl"]);

    let out = ok(vaezoo(&[
        "eval",
        run.to_str().unwrap(),
        "--iw-samples",
        "50",
    ]));
    let table: Vec<&str> = out.lines().filter(|l| l.contains("is_nll")).collect();
    assert_eq!(table.len(), 1, "{out}");
    let value: f64 = table[0].split_whitespace().last().unwrap().parse().unwrap();
    assert!((value - eval_json(&run)["is_nll"].as_f64().unwrap()).abs() < 1e-3);

    let out = ok(vaezoo(&[
        "eval",
        run.to_str().unwrap(),
        "--iw-samples",
        "0",
    ]));
    assert!(out.contains("n/a (skipped with --iw-samples 0)"), "{out}");
    assert_eq!(eval_json(&run)["is_nll"], Value::Null);
}

/// `--elbo-samples S` averages S posterior samples per image (S = 1 unchanged), the value at
/// the posterior mean sits beside it, `eval.json` says which is which, and `eval.jsonl` holds
/// every test image's numbers, which average to the report's.
#[test]
fn eval_averages_elbo_samples_reports_the_posterior_mean_and_writes_every_example() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path(), "zoo/vae-optdigits-tiny.json");
    let r = run.to_str().unwrap();
    ok(vaezoo(&["eval", r, "--iw-samples", "20"]));
    let one = eval_json(&run);
    ok(vaezoo(&[
        "eval",
        r,
        "--iw-samples",
        "20",
        "--elbo-samples",
        "1",
    ]));
    assert_eq!(
        eval_json(&run)["neg_elbo"],
        one["neg_elbo"],
        "S = 1 is the default"
    );
    assert_eq!(one["elbo_samples"], 1);
    let out = ok(vaezoo(&[
        "eval",
        r,
        "--iw-samples",
        "20",
        "--elbo-samples",
        "16",
    ]));
    assert!(out.contains("-elbo (mean of 16 samples)"), "{out}");
    assert!(out.contains("-elbo at posterior mean"), "{out}");
    let many = eval_json(&run);
    assert_eq!(many["elbo_samples"], 16);
    for key in ["neg_elbo", "neg_elbo_at_mean", "rec_at_mean", "is_nll"] {
        assert!(
            many["definitions"][key].is_string(),
            "{key} undefined: {many}"
        );
    }
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap();
    // The posterior-mean numbers draw no samples; the KL of a Gaussian VIB is closed-form.
    assert_eq!(many["neg_elbo_at_mean"], one["neg_elbo_at_mean"]);
    assert_eq!(many["kl"], one["kl"]);
    assert!(f(&many, "neg_elbo") != f(&one, "neg_elbo"));
    assert!((f(&many, "neg_elbo") - f(&one, "neg_elbo")).abs() < 0.05 * f(&one, "neg_elbo"));
    assert!(
        f(&many, "rec_at_mean") <= f(&many, "rec"),
        "the mean decodes best on average"
    );

    let lines = std::fs::read_to_string(run.join("eval.jsonl")).unwrap();
    let rows: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), many["examples"].as_u64().unwrap() as usize);
    let mean = |key: &str| rows.iter().map(|r| f(r, key)).sum::<f64>() / rows.len() as f64;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
    assert!(close(mean("rec"), f(&many, "rec")));
    assert!(close(mean("kl"), f(&many, "kl")));
    assert!(close(
        mean("rec_at_mean") + mean("kl_at_mean"),
        f(&many, "neg_elbo_at_mean")
    ));
    assert!(close(mean("is_nll"), f(&many, "is_nll")));
    assert_eq!(rows[3]["index"], 3);
    assert!(rows.iter().all(|r| r["label"].as_u64().unwrap() < 10));
}

#[test]
fn a_model_without_a_prior_density_reports_why_it_has_no_is_nll() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("zoo/vae-optdigits-tiny.json")).unwrap();
    let mut spec: Value = serde_json::from_str(&text).unwrap();
    spec["prior"] = serde_json::json!({ "kind": "none" });
    spec["data"]["dir"] = repo()
        .join("zoo/data/optdigits")
        .display()
        .to_string()
        .into();
    spec.as_object_mut().unwrap().remove("$schema");
    let path = dir.path().join("ae.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let run = trained(dir.path(), path.to_str().unwrap());
    let out = ok(vaezoo(&[
        "eval",
        run.to_str().unwrap(),
        "--iw-samples",
        "20",
    ]));
    assert!(out.contains("the prior `none` has no density"), "{out}");
    let eval = eval_json(&run);
    assert_eq!(eval["neg_elbo"], Value::Null);
    assert_eq!(eval["is_nll"], Value::Null);
    assert!(eval["rec"].as_f64().unwrap() > 0.0);
    assert!(eval["not_applicable"]["neg_elbo"].is_string(), "{eval}");
}

#[test]
fn sample_by_class_checks_the_class() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path(), "zoo/vae-optdigits-tiny.json");
    let r = run.to_str().unwrap();
    let stderr = fails_in_one_line(&["sample", r, "--class", "10"]);
    assert!(stderr.contains("10 classes"), "{stderr}");
    let out = ok(vaezoo(&["sample", r, "--class", "3", "-n", "4"]));
    assert!(
        out.contains("class 3 (this model is unconditional"),
        "{out}"
    );
    assert_eq!(png_size(&run.join("plots/samples.png")), (3 * 19, 3 * 19));
}

#[test]
fn interpolate_and_traverse_write_grids_of_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path(), "zoo/vae-optdigits-tiny.json");
    let r = run.to_str().unwrap();
    // 8×8 images framed by one-pixel separators, enlarged 3 times: 9 pixels per image + 1.
    let out = ok(vaezoo(&[
        "interpolate",
        r,
        "--from",
        "0",
        "--to",
        "5",
        "--steps",
        "4",
    ]));
    let png = run.join("plots/interpolate-0-5.png");
    assert!(out.contains(png.to_str().unwrap()), "{out}");
    assert_eq!(png_size(&png), ((6 * 9 + 1) * 3, (9 + 1) * 3));

    let custom = dir.path().join("t.png");
    let args = ["traverse", r, "--index", "2", "--steps", "5", "--out"];
    let out = ok(vaezoo(&[&args[..], &[custom.to_str().unwrap()]].concat()));
    // The latent has 4 dimensions, fewer than the default 8 rows.
    assert_eq!(
        out.lines().filter(|l| l.contains(" dim ")).count(),
        4,
        "{out}"
    );
    assert_eq!(png_size(&custom), ((5 * 9 + 1) * 3, (4 * 9 + 1) * 3));
    let out = ok(vaezoo(&["traverse", r, "--dims", "2", "--steps", "3"]));
    assert!(out.contains("traverse-0.png"), "{out}");
    assert_eq!(
        png_size(&run.join("plots/traverse-0.png")),
        ((3 * 9 + 1) * 3, (2 * 9 + 1) * 3)
    );

    let stderr = fails_in_one_line(&["interpolate", r, "--from", "256", "--to", "0"]);
    assert!(stderr.contains("256 examples"), "{stderr}");
    fails_in_one_line(&["traverse", r, "--index", "9999"]);
    fails_in_one_line(&["interpolate", r, "--from", "0", "--to", "1", "--steps", "1"]);
}

#[test]
fn nvib_latents_interpolate_as_mixtures_and_do_not_traverse() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path(), "zoo/nvib-optdigits-tiny.json");
    let r = run.to_str().unwrap();
    let out = ok(vaezoo(&["eval", r, "--iw-samples", "10"]));
    assert!(out.contains("needs a one-component latent"), "{out}");
    ok(vaezoo(&[
        "interpolate",
        r,
        "--from",
        "1",
        "--to",
        "2",
        "--steps",
        "3",
    ]));
    assert_eq!(
        png_size(&run.join("plots/interpolate-1-2.png")),
        ((5 * 9 + 1) * 3, (9 + 1) * 3)
    );
    let stderr = fails_in_one_line(&["traverse", r]);
    assert!(stderr.contains("vector latents"), "{stderr}");
}

#[test]
fn a_conditional_run_evaluates_conditionally_and_samples_by_class() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path(), "zoo/cvae-optdigits-tiny.json");
    let r = run.to_str().unwrap();
    let out = ok(vaezoo(&["eval", r, "--iw-samples", "20"]));
    assert!(out.contains("conditional model"), "{out}");
    let report = eval_json(&run);
    assert_eq!(report["conditional"], true);
    assert!(report["is_nll"].as_f64().unwrap() <= report["neg_elbo"].as_f64().unwrap() + 1.0);
    let grid = |class: &str, temperature: &str| {
        let png = dir.path().join(format!("c{class}-t{temperature}.png"));
        let args = [
            "sample",
            r,
            "--class",
            class,
            "-n",
            "4",
            "--temperature",
            temperature,
        ];
        ok(vaezoo(
            &[&args[..], &["--out", png.to_str().unwrap()]].concat(),
        ));
        std::fs::read(png).unwrap()
    };
    assert_ne!(
        grid("1", "1"),
        grid("2", "1"),
        "the class changes the samples"
    );
    assert_ne!(
        grid("1", "1"),
        grid("1", "0"),
        "temperature 0 decodes the prior mean"
    );
    let stderr = fails_in_one_line(&["sample", r, "--temperature=-1"]);
    assert!(stderr.contains("--temperature"), "{stderr}");
    let stderr = fails_in_one_line(&["sample", r]);
    assert!(stderr.contains("class label"), "{stderr}");
}
