//! The golden runner: every `*.json` in the golden directory is dispatched on its `case` to the
//! port, and each output is compared with the official code's within the file's tolerance
//! (`tolerance_overrides` per output). An unknown case fails the run.
//!
//! The directory is `tests/data/golden` (copies of the shared goldens) unless
//! `VAEZOO_GOLDEN_DIR` names another, so freshly generated cases can be checked too.
//! f64 cases run in f64.

mod attention;
mod harness;
mod identity;
mod kl;
mod layer;
mod nvae;
mod special;
mod vt;

use harness::{compare, golden_dir, Golden, Produced};

/// A family of cases: `None` when the case is not one of its own.
type Handler = fn(&Golden) -> Option<Result<Produced, String>>;

const HANDLERS: &[Handler] = &[
    special::run,
    kl::run,
    attention::run,
    layer::run,
    identity::run,
    nvae::run,
    vt::run,
];

/// The port's outputs for `g`, or why there are none.
fn run(g: &Golden) -> Result<Produced, String> {
    HANDLERS
        .iter()
        .find_map(|h| h(g))
        .unwrap_or_else(|| Err(format!("unknown case `{}`", g.case)))
}

#[test]
fn every_golden_file_passes() {
    let dir = golden_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let result = Golden::load(file).and_then(|g| compare(&g, &run(&g)?));
        match result {
            Ok(n) => println!("ok   {name} ({n} values)"),
            Err(e) => {
                println!("FAIL {name}: {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn an_unknown_case_fails() {
    let g = Golden::from_json(serde_json::json!({
        "case": "no_such_case", "inputs": {}, "outputs": {},
        "tolerance": {"abs": 0.0, "rel": 0.0}
    }))
    .unwrap();
    assert!(run(&g).unwrap_err().contains("unknown case"));
}

#[test]
fn the_comparison_catches_wrong_missing_and_extra_outputs() {
    let g = Golden::from_json(serde_json::json!({
        "case": "c",
        "inputs": {},
        "outputs": {
            "y": {"shape": [3], "dtype": "f64", "data": [1.0, null, 3.0]},
            "z": {"shape": [], "dtype": "f64", "data": [2.0]}
        },
        "tolerance": {"abs": 1e-9, "rel": 1e-9},
        "tolerance_overrides": {"z": {"abs": 0.5, "rel": 0.0}}
    }))
    .unwrap();
    let produced = |y: Vec<f64>, z: f64| Produced::new().with("y", y).with("z", vec![z]);
    assert!(compare(&g, &produced(vec![1.0, 0.0, 3.0], 2.4)).is_ok());
    assert!(
        compare(&g, &produced(vec![1.0, 0.0, 3.001], 2.0)).is_err(),
        "value"
    );
    assert!(
        compare(&g, &produced(vec![1.0, 0.1, 3.0], 2.0)).is_err(),
        "NaN must be 0"
    );
    assert!(
        compare(&g, &produced(vec![1.0, 0.0, 3.0], 2.6)).is_err(),
        "override"
    );
    assert!(
        compare(&g, &Produced::new().with("y", vec![1.0, 0.0, 3.0])).is_err(),
        "missing"
    );
    assert!(
        compare(&g, &produced(vec![1.0, 0.0, 3.0], 2.0).with("w", vec![])).is_err(),
        "extra"
    );
    assert!(
        compare(&g, &produced(vec![1.0, 0.0], 2.0)).is_err(),
        "length"
    );
}
