//! Building plugin libraries the way a third party does (their own crate, their own
//! Cargo.lock, `cargo build`), for the tests that load them.
//!
//! Every build shares one target folder, `target/plugin-tests/cargo`, apart from the
//! workspace's own (so that no build waits on the lock of the `cargo test` that runs it), and
//! each built library is copied into a folder of its own under `target/plugin-tests/dirs/`:
//! a plugin folder loads every library in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::repo;

/// Debug or release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `cargo build`.
    Debug,
    /// `cargo build --release`.
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// The target folder of every build these tests run.
pub fn target_dir() -> PathBuf {
    repo().join("target/plugin-tests/cargo")
}

/// `cargo build` of the crate at `manifest_dir` (relative to the repository), offline.
pub fn cargo_build(manifest_dir: &str, profile: Profile, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = repo().join(manifest_dir).join("Cargo.toml");
    let mut command = Command::new(cargo);
    command
        .args(["build", "--offline", "--manifest-path"])
        .arg(&manifest)
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir());
    if profile == Profile::Release {
        command.arg("--release");
    }
    let out = command.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building {}:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The folder `label` holding only the library `lib<lib_name>.so` of the crate at
/// `manifest_dir`, built with `profile` and `features` (built once per test binary).
pub fn plugin_dir(
    label: &str,
    manifest_dir: &str,
    lib_name: &str,
    profile: Profile,
    features: &[&str],
) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(dir) = built.get(label) {
        return dir.clone();
    }
    let mut args = Vec::new();
    let joined = features.join(",");
    if !features.is_empty() {
        args.extend(["--features", joined.as_str()]);
    }
    cargo_build(manifest_dir, profile, &args);
    let file = format!(
        "{}{lib_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let dir = repo().join("target/plugin-tests/dirs").join(label);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        target_dir().join(profile.dir()).join(&file),
        dir.join(&file),
    )
    .unwrap();
    built.insert(label.to_string(), dir.clone());
    dir
}

/// The folder with the example plugin `laplace_vib` built with `profile`.
pub fn laplace_dir(profile: Profile) -> PathBuf {
    let label = format!("laplace-{}", profile.dir());
    plugin_dir(
        &label,
        "examples/third_party_bottleneck",
        "vaezoo_laplace_vib",
        profile,
        &[],
    )
}

/// The only library file in `dir`.
pub fn library_in(dir: &Path) -> PathBuf {
    let mut files = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path());
    files.next().expect("a library")
}

/// The SHA-256 of a file, lower-case hex.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The spec `examples/third_party_bottleneck/laplace.json` with `training` replaced (when
/// given) and its data path made absolute, written to `dir/name.json`.
pub fn laplace_spec(dir: &Path, name: &str, training: Option<serde_json::Value>) -> PathBuf {
    let path = repo().join("examples/third_party_bottleneck/laplace.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    spec["name"] = name.into();
    let data = repo().join("zoo/data/optdigits");
    spec["data"]["dir"] = data.display().to_string().into();
    if let Some(training) = training {
        spec["training"] = training;
    }
    spec.as_object_mut().unwrap().remove("$schema");
    let out = dir.join(format!("{name}.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    out
}
