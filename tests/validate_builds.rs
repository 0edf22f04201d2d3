//! `vaezoo validate` runs every check that `train` runs before its first step: each spec
//! below passes the plain schema of earlier versions but cannot train, and both `validate` and
//! `train` reject it, `validate` with the JSON pointer of the culprit. (That every zoo spec
//! validates, and so passes these checks, is `cli_specs::every_zoo_spec_is_valid`.)

mod common;

use std::path::Path;

use common::{repo, text, vaezoo};
use serde_json::{json, Value};

/// A zoo spec as JSON, its data folder made absolute so that it can live in a temp dir.
fn zoo_spec(id: &str) -> Value {
    let path = repo().join(format!("zoo/{id}.json"));
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dir = spec["data"]["dir"].as_str().unwrap().to_string();
    spec["data"]["dir"] = repo().join("zoo").join(dir).display().to_string().into();
    spec.as_object_mut().unwrap().remove("$schema");
    spec
}

fn write(dir: &Path, name: &str, spec: &Value) -> String {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(spec).unwrap()).unwrap();
    path.display().to_string()
}

/// (what is wrong, base spec, the change, what `validate` must print)
type Case = (&'static str, &'static str, fn(&mut Value), &'static str);

const CASES: &[Case] = &[
    (
        "unknown cross-attention kind",
        "nvae-wiki-tiny",
        |s| s["decoder"]["config"]["cross_attention"]["kind"] = "bogus".into(),
        "/decoder/config/cross_attention/kind: \"bogus\" is not one of",
    ),
    (
        "bad cross-attention config",
        "nvae-wiki-tiny",
        |s| s["decoder"]["config"]["cross_attention"]["config"]["heads"] = 0.into(),
        "/decoder/config/cross_attention/config/heads: 0 is less than the minimum of 1",
    ),
    (
        "heads that do not divide d_model",
        "nvae-wiki-tiny",
        |s| s["encoder"]["config"]["heads"] = 3.into(),
        "/encoder/config: plugin `transformer_encoder`: 3 heads must divide d_model 32",
    ),
    (
        "cross-attention heads that do not divide the latent width",
        "nvae-wiki-tiny",
        |s| s["decoder"]["config"]["cross_attention"]["config"]["heads"] = 5.into(),
        "/decoder/config/cross_attention/config: plugin `denoising`: 5 heads do not divide",
    ),
    (
        "a decoder narrower than the latent",
        "nvae-wiki-tiny",
        |s| s["decoder"]["config"]["d_model"] = 16.into(),
        "/decoder/config: plugin `transformer_decoder`: d_model 16 differs from the latent width 32",
    ),
    (
        "a prior without its partner bottleneck",
        "nvae-wiki-tiny",
        |s| s["bottleneck"] = json!({"kind": "identity"}),
        "/prior/config: plugin `dirichlet_process`: needs the bottleneck's `prior_mu`",
    ),
    (
        "a Transformer encoder over images",
        "vae-optdigits-tiny",
        |s| s["encoder"] = json!({"kind": "transformer_encoder", "config": {"d_model": 8}}),
        "/encoder/config: plugin `transformer_encoder`: needs text data",
    ),
    (
        "a KL schedule for a term the model lacks",
        "vae-optdigits-tiny",
        |s| s["training"]["kl_schedules"] = json!({"kl_d": {"type": "constant", "value": 1}}),
        "/training/kl_schedules: plugin `training.kl_schedules`: a schedule for `kl_d`",
    ),
    (
        "an Adam beta of 1 or more",
        "vae-optdigits-tiny",
        |s| s["training"]["optimizer"]["betas"] = json!([0.9, 1.5]),
        "/training/optimizer/betas/1: 1.5 is greater than or equal to the maximum of 1.0",
    ),
    (
        "an Adam eps of 0",
        "vae-optdigits-tiny",
        |s| s["training"]["optimizer"]["eps"] = 0.into(),
        "/training/optimizer/eps: 0 is less than or equal to the minimum of 0.0",
    ),
];

#[test]
fn validate_reports_what_train_rejects_with_its_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (what, base, change, expected)) in CASES.iter().enumerate() {
        let mut spec = zoo_spec(base);
        change(&mut spec);
        let path = write(dir.path(), &format!("case{i}"), &spec);
        let validated = vaezoo(&["validate", &path]);
        let out = text(&validated);
        if validated.status.success() || !out.contains(expected) || out.contains("panicked") {
            failures.push(format!("{what}: validate said\n{out}expected `{expected}`"));
        }
        let run = dir.path().join(format!("run{i}"));
        let trained = vaezoo(&[
            "train",
            &path,
            "--out",
            run.to_str().unwrap(),
            "--stop-after",
            "1",
        ]);
        if trained.status.success() {
            failures.push(format!("{what}: train accepted it"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
