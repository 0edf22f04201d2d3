//! Bad plugin libraries: each is refused with a one-line error naming the file (and a hint),
//! a non-zero exit, and no panic or backtrace from vaezoo.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::plugin_build::{laplace_dir, laplace_spec, library_in, plugin_dir, Profile};
use common::repo;
use serde_json::json;

const FIXTURE: &str = "tests/fixtures/faulty_plugin";
const FIXTURE_LIB: &str = "vaezoo_faulty_plugin";

fn faulty(label: &str, features: &[&str]) -> PathBuf {
    plugin_dir(label, FIXTURE, FIXTURE_LIB, Profile::Release, features)
}

/// Runs vaezoo with `--plugin-dir` for each of `dirs`; asserts a one-line error (plus at most
/// a hint) that contains `expected`, and returns it.
fn refused(dirs: &[&Path], args: &[&str], expected: &str) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vaezoo"));
    for dir in dirs {
        command.arg("--plugin-dir").arg(dir);
    }
    let out = command.args(args).current_dir(repo()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expected),
        "{stderr}"
    );
    assert!(
        lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("hint: ")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("internal error") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    lines[0].to_string()
}

#[test]
fn libraries_that_are_not_plugins_are_refused_at_start_up() {
    let junk = repo().join("target/plugin-tests/dirs/junk");
    std::fs::create_dir_all(&junk).unwrap();
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(junk.join("libjunk.so"), bytes).unwrap();
    let line = refused(&[&junk], &["plugins"], "not a loadable library");
    assert!(line.contains("libjunk.so"), "{line}");

    let no_header = faulty("faulty-no-header", &["no_header"]);
    let line = refused(
        &[&no_header],
        &["plugins"],
        "no `vaezoo_plugin_header` symbol",
    );
    assert!(line.contains("libvaezoo_faulty_plugin.so"), "{line}");

    let wrong_abi = faulty("faulty-wrong-abi", &["wrong_abi"]);
    refused(
        &[&wrong_abi],
        &["plugins"],
        "built for plugin ABI version 2, this vaezoo speaks version 1",
    );

    let missing = repo().join("target/plugin-tests/dirs/does-not-exist");
    refused(&[&missing], &["plugins"], "does-not-exist");
}

#[test]
fn a_plugin_name_loaded_twice_names_both_files() {
    let release = laplace_dir(Profile::Release);
    let copy = repo().join("target/plugin-tests/dirs/laplace-copy");
    std::fs::create_dir_all(&copy).unwrap();
    let file = std::fs::read_dir(&release)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::copy(file.path(), copy.join(file.file_name())).unwrap();
    let line = refused(
        &[&release, &copy],
        &["plugins"],
        "`laplace_vib` is registered twice",
    );
    assert!(
        line.contains("laplace-release") && line.contains("laplace-copy"),
        "{line}"
    );
}

#[test]
fn plugins_that_fail_in_forward_stop_training_with_one_line() {
    let dir = faulty("faulty", &[]);
    let tmp = tempfile::tempdir().unwrap();
    for (fault, expected) in [
        ("panic", "forward failed (panic): panicked at src/lib.rs"),
        ("nan", "forward returned the non-finite value NaN in `z`"),
        (
            // Met first by the memory check's pass on two examples, before the first step.
            "wrong_shape",
            "forward returned a latent of shape [2, 1, 5], expected [2, 1, 4]",
        ),
    ] {
        let spec = laplace_spec(tmp.path(), fault, None);
        let mut value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap();
        value["bottleneck"] =
            json!({ "kind": "faulty", "config": { "latent_dim": 4, "fault": fault } });
        std::fs::write(&spec, value.to_string()).unwrap();
        let out = tmp.path().join(format!("run-{fault}"));
        let args = [
            "train",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        let line = refused(&[&dir], &args, expected);
        assert!(line.contains("libvaezoo_faulty_plugin.so"), "{line}");
    }
}

#[test]
fn the_conformance_kit_reports_what_a_loaded_plugin_gets_wrong() {
    // The fixture declares a second head that only its `wrong_shape` fault uses.
    let dir = faulty("faulty", &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_vaezoo"))
        .arg("--plugin-dir")
        .arg(&dir)
        .args(["conformance", "faulty"])
        .current_dir(repo())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("FAIL gradients: no gradient reaches bottleneck.wide.weight"),
        "{report}"
    );
    assert_eq!(report.matches("  ok   ").count(), 5, "{report}");
}

#[test]
fn a_library_cut_short_or_not_a_file_is_refused_not_a_crash() {
    let good = library_in(&laplace_dir(Profile::Release));
    let bytes = std::fs::read(&good).unwrap();
    let dir = repo().join("target/plugin-tests/dirs/cut-short");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A copy that stopped at 60 %: its segments reach past the end of the file.
    std::fs::write(dir.join("libcut.so"), &bytes[..bytes.len() * 6 / 10]).unwrap();
    let line = refused(&[&dir], &["plugins"], "the file is cut short");
    assert!(line.contains("libcut.so"), "{line}");
    // Named like a library but not a file: said, not passed over.
    std::fs::remove_file(dir.join("libcut.so")).unwrap();
    std::fs::create_dir_all(dir.join("libfolder.so")).unwrap();
    refused(&[&dir], &["plugins"], "libfolder.so");
    std::fs::remove_dir(dir.join("libfolder.so")).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.join("missing.so"), dir.join("libdangling.so")).unwrap();
        refused(&[&dir], &["plugins"], "libdangling.so");
    }
}
