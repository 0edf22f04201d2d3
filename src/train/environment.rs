//! What a run records about where it was trained: the versions of vaezoo and its plugins (in
//! every checkpoint) and `env.json` (seed, device, plugins, the commit the binary was built
//! from, the git revision of the directory the run started in, threads, the CPU, Slurm ids).

use std::collections::BTreeMap;

use serde_json::json;
use vaezoo_core::spec::Spec;

use crate::device::DeviceChoice;
use crate::registry;
use crate::run::utc_stamp;

/// Versions of vaezoo and of every registered plugin.
pub(super) fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::from([("vaezoo".to_string(), env!("CARGO_PKG_VERSION").to_string())]);
    if let Ok(reg) = registry() {
        for e in reg.entries() {
            v.insert(format!("plugin:{}", e.name), e.version.clone());
        }
    }
    v
}

/// `env.json`: versions, seed, device, plugins, `build_commit` (the commit the binary was
/// built at, uncommitted changes not counted; null outside a git checkout), `git_revision`
/// (`git rev-parse HEAD` where the run started: the researcher's own repository, say), the
/// threads of the pool the run computes on, and the CPU's model name (`cpu`, null where
/// `/proc/cpuinfo` does not give one): the same binary and seed can train differently on
/// another CPU, whose GEMM blocking follows its caches.
pub(super) fn environment(spec: &Spec, device: DeviceChoice) -> serde_json::Value {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let plugins: Vec<_> = registry()
        .map(|r| r.entries().map(|e| json!({"kind": e.kind.as_str(), "name": e.name, "version": e.version, "origin": e.origin.to_string()})).collect())
        .unwrap_or_default();
    // Under Slurm (a sweep's array task): which job and task trained the run.
    let slurm: serde_json::Map<String, serde_json::Value> =
        ["SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"]
            .into_iter()
            .filter_map(|key| Some((key.to_lowercase(), json!(std::env::var(key).ok()?))))
            .collect();
    json!({
        "vaezoo": env!("CARGO_PKG_VERSION"),
        "versions": versions(),
        "seed": spec.training.seed,
        "device": device.name(),
        "threads": rayon::current_num_threads(),
        "cpu": cpu_model(),
        "build_commit": option_env!("VAEZOO_BUILD_COMMIT"),
        "git_revision": git,
        "started_utc": utc_stamp(),
        "plugins": plugins,
        "slurm": slurm,
    })
}

/// The CPU's model name, from `/proc/cpuinfo` (Linux); `None` elsewhere or where it has none.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .filter(|name| !name.is_empty())
}
