//! Records the commit HEAD pointed at when the `vaezoo` binary was built
//! (`VAEZOO_BUILD_COMMIT`), for each run's `env.json`; nothing when the source is not a git
//! checkout (a packaged crate). Uncommitted changes are not recorded.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(git_dir) = git(&["rev-parse", "--git-dir"]) else {
        return;
    };
    // A new commit or checkout moves HEAD's reflog.
    for file in ["HEAD", "logs/HEAD"] {
        let path = Path::new(&git_dir).join(file);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=VAEZOO_BUILD_COMMIT={commit}");
    }
}
