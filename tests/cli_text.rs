//! The text models end to end, as a user runs them: train the tiny LM, T and NVAE zoo specs,
//! `eval` the NVAE with the LM (every metric printed and in `eval.json`),
//! then `sample`, `reconstruct`, `interpolate`, `plot`, and resume after a stop.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, vaezoo};
use serde_json::Value;
use vaezoo_core::checkpoint::Checkpoint;

fn trained(dir: &Path, spec: &str, name: &str) -> PathBuf {
    let run = dir.join(name);
    ok(vaezoo(&["train", spec, "--out", run.to_str().unwrap()]));
    run
}

fn eval_json(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap()
}

#[test]
fn the_tiny_nvae_trains_and_eval_reports_every_text_metric() {
    let dir = tempfile::tempdir().unwrap();
    let lm = trained(dir.path(), "zoo/lm-wiki-tiny.json", "lm");
    let t = trained(dir.path(), "zoo/t-wiki-tiny.json", "t");
    let nvae = trained(dir.path(), "zoo/nvae-wiki-tiny.json", "nvae");
    assert!(nvae.join("tokenizer.json").is_file());
    let config = std::fs::read_to_string(nvae.join("tokenizer_config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["pad_token"], "[PAD]");
    assert_eq!(config["bos_token"], "[CLS]");
    let (nvae_s, lm_s, t_s) = (
        nvae.to_str().unwrap(),
        lm.to_str().unwrap(),
        t.to_str().unwrap(),
    );
    let out = ok(vaezoo(&["eval", nvae_s, "--lm", lm_s, "--samples", "40"]));
    for row in [
        "ce (nats/token)",
        "ppl",
        "kl_g",
        "kl_d",
        "bleu",
        "avg_num_vec",
        "avg_prop_vec",
        "avg_alpha0",
        "f_ppl (40 samples)",
        "r_ppl",
        "interp τ=0.5",
        "interp f_ppl τ=0.5",
    ] {
        let line = out.lines().find(|l| l.starts_with(row));
        let line = line.unwrap_or_else(|| panic!("{row} missing:\n{out}"));
        assert!(!line.contains("n/a"), "{line}");
    }
    let eval = eval_json(&nvae);
    let number = |key: &str| {
        eval[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {eval}"))
    };
    let (ce, ppl, bleu) = (number("ce"), number("ppl"), number("bleu"));
    assert!(
        ce > 0.0 && ppl >= ce.exp() && (0.0..=100.0).contains(&bleu),
        "{eval}"
    );
    assert!(number("f_ppl") > 1.0 && number("r_ppl") > 1.0, "{eval}");
    let kept = eval["stats"]["avg_prop_vec"].as_f64().unwrap();
    assert!(kept > 0.0 && kept <= 1.0, "{eval}");
    let taus = eval["interpolation"]["taus"].as_array().unwrap();
    assert_eq!(taus.len(), 5);
    let samples = std::fs::read_to_string(nvae.join("text/samples.txt")).unwrap();
    assert_eq!(samples.lines().count(), 40);
    assert!(nvae
        .join("rppl/run/checkpoints/latest.safetensors")
        .is_file());

    // Without a language model the perplexities of samples say why they are missing.
    let out = ok(vaezoo(&["eval", nvae_s, "--samples", "8"]));
    let f_ppl = out.lines().find(|l| l.starts_with("f_ppl")).unwrap();
    assert!(f_ppl.contains("n/a (needs --lm RUN"), "{out}");

    let out = ok(vaezoo(&["sample", nvae_s, "-n", "3"]));
    assert!(out.lines().count() >= 3, "{out}");
    let out = ok(vaezoo(&[
        "reconstruct",
        nvae_s,
        "the river flows into the sea.",
    ]));
    assert!(out.contains("→"), "{out}");
    let out = ok(vaezoo(&[
        "interpolate",
        nvae_s,
        "the river flows into the sea.",
        "he was born in london.",
        "--steps",
        "5",
    ]));
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(out.starts_with("0.00  "), "{out}");

    ok(vaezoo(&["eval", t_s, "--samples", "0"]));
    let png = dir.path().join("kept.png");
    let out = ok(vaezoo(&[
        "plot",
        nvae_s,
        t_s,
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(out.contains("NVAE") && out.contains("T "), "{out}");
    assert!(png.is_file());
    // By configuration: each run's spec name labels its series.
    let out = ok(vaezoo(&[
        "plot",
        "--seeds",
        nvae_s,
        t_s,
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(
        out.contains("nvae-wiki-tiny") && out.contains("t-wiki-tiny"),
        "{out}"
    );
}

#[test]
fn a_stopped_text_run_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let whole = trained(dir.path(), "zoo/nvae-wiki-tiny.json", "whole");
    let parts = dir.path().join("parts");
    let spec = "zoo/nvae-wiki-tiny.json";
    ok(vaezoo(&[
        "train",
        spec,
        "--out",
        parts.to_str().unwrap(),
        "--stop-after",
        "20",
    ]));
    ok(vaezoo(&["resume", parts.to_str().unwrap()]));
    let read = |run: &Path| Checkpoint::load(&run.join("checkpoints/latest.safetensors")).unwrap();
    let (a, b) = (read(&whole), read(&parts));
    assert_eq!(a.params, b.params, "final weights are bit-identical");
    assert_eq!((a.optimizer, a.rng), (b.optimizer, b.rng));
    let tok = |run: &Path| std::fs::read(run.join("tokenizer.json")).unwrap();
    assert_eq!(tok(&whole), tok(&parts));
}

#[test]
fn text_tools_refuse_wrong_input_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path(), "zoo/t-wiki-tiny.json", "t");
    let run = run.to_str().unwrap();
    let out = vaezoo(&["interpolate", run, "only one sentence"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.starts_with("error: "),
        "{stderr}"
    );
    assert!(stderr.contains("two sentences"), "{stderr}");
    let bad = dir.path().join("bad.json");
    let spec = std::fs::read_to_string("zoo/t-wiki-tiny.json")
        .unwrap()
        .replace("data/wiki_sentences", "data/no_such_corpus");
    std::fs::write(&bad, spec).unwrap();
    let out = vaezoo(&["train", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.lines().count() <= 2,
        "{stderr}"
    );
    assert!(stderr.contains("no_such_corpus"), "{stderr}");
}

/// A conditional text VAE: a learned prior p(z | party) and a decoder p(x | z, party).
#[test]
fn the_conditional_text_vae_samples_given_the_party() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path(), "zoo/cvae-sotu-tiny.json", "cvae");
    let run = run.to_str().unwrap();
    let out = ok(vaezoo(&["sample", run, "-n", "4", "--class", "1"]));
    assert!(
        out.contains("class 1\n") && !out.contains("no effect"),
        "{out}"
    );
    let out = vaezoo(&["sample", run, "--class", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("2 classes"),
        "{stderr}"
    );
    // The decoder reads the party too: reconstruction needs it, and eval samples both parties.
    let sentence = "we must work together.";
    let out = vaezoo(&["reconstruct", run, sentence]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a class label"), "{stderr}");
    ok(vaezoo(&["reconstruct", run, sentence, "--class", "0"]));
    let out = ok(vaezoo(&["eval", run, "--samples", "4"]));
    assert!(out.contains("bleu"), "{out}");
    assert!(eval_json(Path::new(run))["samples"] == 4);
}
