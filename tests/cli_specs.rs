//! `vaezoo validate`, `schema` and `plugins`: spec mistakes reported with JSON pointers, the
//! committed schemas up to date and self-contained (checked by a second validator), and every
//! built-in plugin registered.

mod common;

use std::collections::BTreeSet;

use common::{ok, repo, text, tiny_spec_with, vaezoo};
use vaezoo_core::schema::schema_files;

const VALID: &str = r#"{
  "name": "t",
  "data": { "format": "idx", "dir": "data/optdigits", "pixel_max": 16 },
  "encoder": { "kind": "mlp_encoder", "config": { "hidden": [8] } },
  "bottleneck": { "kind": "gaussian_vib", "config": { "latent_dim": 2 } },
  "prior": { "kind": "standard_normal" },
  "decoder": { "kind": "mlp_decoder", "config": { "likelihood": { "type": "bernoulli" } } }
}"#;

/// Runs `vaezoo validate` on `spec` text (its data folder made absolute: validate reads the
/// data as `train` would); returns (success, output).
fn validate(spec: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    let data = repo().join("zoo/data/optdigits");
    let spec = spec.replace(
        "\"data/optdigits\"",
        &format!("{:?}", data.display().to_string()),
    );
    std::fs::write(&path, spec).unwrap();
    let out = vaezoo(&["validate", path.to_str().unwrap()]);
    let all = text(&out);
    assert!(!all.contains("panicked"), "{all}");
    (out.status.success(), all)
}

#[test]
fn a_valid_spec_passes() {
    let (success, out) = validate(VALID);
    assert!(success, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
}

#[test]
fn every_kind_of_mistake_is_one_line_with_its_pointer() {
    let cases = [
        (
            "\"kind\": \"gaussian_vib\"",
            "\"kind\": \"gaussian\"",
            "/bottleneck/kind: \"gaussian\" is not one of",
        ),
        (
            "{ \"latent_dim\": 2 }",
            "{}",
            "/bottleneck/config: \"latent_dim\" is a required property",
        ),
        (
            "\"latent_dim\": 2",
            "\"latent_dim\": \"two\"",
            "/bottleneck/config/latent_dim: \"two\" is not of type \"integer\"",
        ),
        (
            "\"hidden\": [8]",
            "\"hidden\": [8], \"dropout\": 0.1",
            "/encoder/config: Additional properties are not allowed ('dropout' was unexpected)",
        ),
        (
            "\"latent_dim\": 2",
            "\"latent_dim\": 0",
            "/bottleneck/config/latent_dim: 0 is less than the minimum of 1",
        ),
        // Sizes that no machine would hold are refused by name, before anything is built.
        (
            "\"latent_dim\": 2",
            "\"latent_dim\": 4294967296",
            "/bottleneck/config/latent_dim: 4294967296 is greater than the maximum of 1048576",
        ),
        (
            "\"hidden\": [8]",
            "\"hidden\": [18446744073709551615]",
            "/encoder/config/hidden/0: 18446744073709551615 is greater than the maximum of 1048576",
        ),
    ];
    for (from, to, expected) in cases {
        let (success, out) = validate(&VALID.replace(from, to));
        assert!(!success, "{to}: accepted");
        assert!(
            out.contains(expected),
            "{to}: expected `{expected}` in\n{out}"
        );
        assert_eq!(out.lines().count(), 1, "{to}: one line per problem\n{out}");
    }
    let (success, out) = validate(
        &VALID
            .replace("\"kind\": \"gaussian_vib\"", "\"kind\": \"x\"")
            .replace("\"hidden\": [8]", "\"hidden\": \"8\""),
    );
    assert!(!success);
    assert_eq!(out.lines().count(), 2, "both problems:\n{out}");
}

#[test]
fn schedule_mistakes_are_reported_with_their_pointers() {
    let with = |schedules: &str| {
        VALID.replace(
            "\n}",
            &format!(",\n  \"training\": {{ \"kl_schedules\": {schedules} }}\n}}"),
        )
    };
    let (success, out) = validate(&with(r#"{"kl": {"type": "linear", "warmup_steps": 10}}"#));
    assert!(success, "{out}");
    let cases = [
        (
            r#"{"kl": {"type": "linear"}}"#,
            "/training/kl_schedules/kl: \"warmup_steps\" is a required property",
        ),
        (
            r#"{"kl": {"type": "cosine"}}"#,
            "/training/kl_schedules/kl/type: \"cosine\" is not one of \"constant\", \"linear\", \"cyclical\" or \"per_epoch\"",
        ),
        (
            r#"{"*": {"type": "cyclical", "cycles": 4, "ramp_fraction": 1.5}}"#,
            "/training/kl_schedules/*/ramp_fraction: 1.5 is greater than the maximum of 1.0",
        ),
        (
            r#"{"kl": {"type": "constant", "value": 1, "x": 2}}"#,
            "/training/kl_schedules/kl: Additional properties are not allowed ('x' was unexpected)",
        ),
        (r#"{"kl": 3}"#, "/training/kl_schedules/kl: 3 is not of type \"object\""),
        (r#"{"kl": {}}"#, "/training/kl_schedules/kl: \"type\" is a required property"),
    ];
    for (schedules, expected) in cases {
        let (success, out) = validate(&with(schedules));
        assert!(!success, "{schedules}: accepted");
        assert!(
            out.contains(expected),
            "{schedules}: expected `{expected}` in\n{out}"
        );
        assert_eq!(out.lines().count(), 1, "{schedules}: one line\n{out}");
    }
}

#[test]
fn malformed_json_reports_line_and_column() {
    let (success, out) = validate("{\n  \"name\": \"t\",\n  \"data\": {\n}");
    assert!(!success);
    assert!(out.contains(":4:1: malformed JSON"), "{out}");
    let (success, out) = validate("{\n  \"name\": \"t\" \"data\": 1\n}");
    assert!(!success);
    assert!(
        out.contains(":2:15: malformed JSON: expected `,` or `}`"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let out = vaezoo(&["validate", "no/such/spec.json"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no/such/spec.json"), "{}", text(&out));
}

#[test]
fn every_zoo_spec_is_valid() {
    let mut specs: Vec<String> = std::fs::read_dir(repo().join("zoo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.display().to_string())
        .collect();
    specs.sort();
    assert!(specs.len() >= 2);
    let mut args = vec!["validate"];
    args.extend(specs.iter().map(String::as_str));
    ok(vaezoo(&args));
}

#[test]
fn committed_schemas_are_up_to_date() {
    let registry = vaezoo::registry().unwrap();
    let expected = schema_files(registry);
    for (path, content) in &expected {
        let committed =
            std::fs::read_to_string(repo().join("schemas").join(path)).unwrap_or_default();
        assert!(
            committed == *content,
            "schemas/{} is stale: run `cargo run -- schema`",
            path.display()
        );
    }
    let on_disk: BTreeSet<_> = walk(&repo().join("schemas"));
    let generated: BTreeSet<_> = expected.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        on_disk, generated,
        "schemas/ holds files no plugin generates: run `cargo run -- schema` after removing them"
    );
}

fn walk(root: &std::path::Path) -> BTreeSet<std::path::PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}

#[test]
fn every_builtin_plugin_is_registered_and_listed() {
    let registry = vaezoo::registry().unwrap();
    let registered: BTreeSet<&str> = registry.entries().map(|e| e.name.as_str()).collect();
    let builtins: BTreeSet<&str> = vaezoo::builtin_plugin_names().into_iter().collect();
    assert_eq!(registered, builtins);
    assert_eq!(
        registered,
        BTreeSet::from([
            "ae",
            "beta_vae",
            "conditional_normal",
            "denoising",
            "dirichlet_process",
            "gaussian_vib",
            "identity",
            "learned_memory",
            "mlp_decoder",
            "mlp_encoder",
            "none",
            "nvib",
            "sdpa",
            "standard_normal",
            "transformer_decoder",
            "transformer_encoder",
            "vt_normal",
            "vt_pooled",
            "vt_variable",
        ])
    );
    let out = ok(vaezoo(&["plugins"]));
    for name in builtins {
        let line = out
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        assert!(
            line.contains("builtin") && line.contains(env!("CARGO_PKG_VERSION")),
            "{line}"
        );
    }
}

#[test]
fn a_closed_stdout_is_a_quiet_successful_exit() {
    use std::process::{Command, Stdio};
    for _ in 0..20 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vaezoo"))
            .arg("plugins")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away, as `| true` does
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{:?}: {stderr}",
            out.status
        );
    }
}

/// Python's `jsonschema` (a second, independent validator), offline: it may not fetch any
/// document, so every ref of `spec.schema.json` must resolve inside it.
const SECOND_VALIDATOR: &str = r#"
import json, sys
try:
    import jsonschema, referencing
except ImportError as e:
    print("SKIP", e)
    sys.exit(0)
def refuse(uri):
    raise LookupError(f"tried to fetch {uri}")
schema = json.load(open(sys.argv[1]))
cls = jsonschema.validators.validator_for(schema)
cls.check_schema(schema)
validator = cls(schema, registry=referencing.Registry(retrieve=refuse))
for path in sys.argv[2:]:
    errors = sorted("/".join(map(str, e.absolute_path)) for e in validator.iter_errors(json.load(open(path))))
    print(json.dumps({"spec": path, "errors": errors}))
"#;

#[test]
fn a_second_validator_gives_vaezoo_validate_s_verdicts_offline() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no python3 to run the second validator");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Broken specs, each with the pointer the second validator must name.
    type Edit = fn(&mut serde_json::Value);
    let broken: [(&str, Edit, &str); 5] = [
        (
            "zero",
            |s| s["bottleneck"]["config"]["latent_dim"] = 0.into(),
            "bottleneck/config/latent_dim",
        ),
        (
            "kind",
            |s| s["encoder"]["kind"] = "no_such_plugin".into(),
            "encoder/kind",
        ),
        (
            "type",
            |s| s["encoder"]["config"]["hidden"] = "wide".into(),
            "encoder/config/hidden",
        ),
        (
            "extra",
            |s| s["decoder"]["config"]["colour"] = "red".into(),
            "decoder/config",
        ),
        (
            "lr",
            |s| s["training"]["optimizer"]["lr"] = (-1).into(),
            "training/optimizer/lr",
        ),
    ];
    let mut specs: Vec<String> = std::fs::read_dir(repo().join("zoo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.display().to_string())
        .collect();
    specs.sort();
    let zoo = specs.len();
    for (name, edit, _) in &broken {
        specs.push(tiny_spec_with(dir.path(), name, edit).display().to_string());
    }
    let schema = repo().join("schemas/spec.schema.json");
    let out = std::process::Command::new("python3")
        .args(["-c", SECOND_VALIDATOR, schema.to_str().unwrap()])
        .args(&specs)
        .output()
        .unwrap();
    let stdout = text(&out);
    assert!(
        out.status.success(),
        "the second validator failed:\n{stdout}"
    );
    if stdout.starts_with("SKIP") {
        eprintln!("skipped: Python's jsonschema is not installed ({stdout})");
        return;
    }
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), specs.len(), "{stdout}");
    for (i, (spec, result)) in specs.iter().zip(&results).enumerate() {
        let errors = result["errors"].as_array().unwrap();
        // The same verdict as vaezoo's own validator.
        let ours = vaezoo(&["validate", spec.as_str()]).status.success();
        assert_eq!(errors.is_empty(), ours, "{spec}: {result}");
        if i >= zoo {
            let culprit = broken[i - zoo].2;
            assert!(errors.iter().any(|e| e == culprit), "{spec}: {result}");
        }
    }
}
