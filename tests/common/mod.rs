//! Helpers shared by the CLI integration tests: run the built `vaezoo` binary, make specs.

#![allow(dead_code)] // each test binary uses its own subset

pub mod plugin_build;
pub mod tiny_text;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root (where `zoo/` is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `vaezoo ARGS…` run from the repository root.
pub fn vaezoo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vaezoo"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the vaezoo binary runs")
}

/// `vaezoo ARGS` with its address space limited to `bytes` (as `ulimit -v`).
pub fn vaezoo_within(bytes: u64, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_vaezoo"));
    command.args(args).env_remove("VAEZOO_MAX_PARAMS");
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    command.output().unwrap()
}

/// Starts `vaezoo PREFIX… train SPEC --out RUN`, waits for its first checkpoint, kills it with
/// SIGKILL and returns the step of the checkpoint it left.
pub fn train_until_killed(prefix: &[&str], spec: &Path, run: &Path) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaezoo"))
        .args(prefix)
        .args([
            "train",
            spec.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = run.join("checkpoints/latest.safetensors");
    let start = Instant::now();
    while !ckpt.exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(30));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    vaezoo_core::checkpoint::Checkpoint::load(&ckpt)
        .unwrap()
        .step
}

/// stdout + stderr as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts success, printing the output otherwise.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "vaezoo failed:\n{}", text(&out));
    text(&out)
}

/// A spec like `zoo/vae-optdigits-tiny.json` with the `training` section replaced, written to
/// `dir/name.json` (its data path made absolute).
pub fn tiny_spec(dir: &Path, name: &str, training: serde_json::Value) -> PathBuf {
    tiny_spec_with(dir, name, |spec| spec["training"] = training)
}

/// A spec like `zoo/vae-optdigits-tiny.json` changed by `edit`, written to `dir/name.json`
/// (its data path made absolute).
pub fn tiny_spec_with(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("zoo/vae-optdigits-tiny.json")).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    spec["name"] = name.into();
    spec["data"]["dir"] = repo()
        .join("zoo/data/optdigits")
        .display()
        .to_string()
        .into();
    edit(&mut spec);
    spec.as_object_mut().unwrap().remove("$schema");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    path
}

/// Every file under `dir` with its bytes (a link: where it points, not followed), sorted by
/// path.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let (p, kind) = (entry.path(), entry.file_type().unwrap());
            if kind.is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                let mut bytes = b"link to ".to_vec();
                bytes.extend(target.to_string_lossy().as_bytes());
                out.push((p, bytes));
            } else if kind.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}
