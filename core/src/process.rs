//! What the operating system tells about processes: whether another process still runs (for
//! files a killed process left behind, a checkpoint's temporary file or a run folder being
//! assembled, named after its process id), and how much memory this one may use.

use std::fs;
use std::path::Path;

/// Whether process `pid` is known to have exited: on Linux, when `/proc` has no entry for it.
/// Elsewhere, or for this process, `false`: such leftovers stay (hidden and harmless) rather
/// than risk removing the file of a process that is still writing it.
pub fn has_exited(pid: u32) -> bool {
    pid != std::process::id()
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the entries of `dir` left by processes that have exited: `owner` gives the process
/// id an entry's name carries (`None`: not such a leftover). A folder goes with its contents;
/// failures are ignored (a leftover is hidden and harmless).
pub fn remove_left_by_exited(dir: &Path, owner: impl Fn(&str) -> Option<u32>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_str().and_then(&owner);
        if pid.is_some_and(has_exited) {
            let path = entry.path();
            let _ = match entry.file_type() {
                Ok(kind) if kind.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
        }
    }
}

/// The memory this process may use, in bytes: the smallest of its address-space limit
/// (`ulimit -v`), its control group's memory limit and the machine's memory, as Linux reports
/// them; `None` where none of them is known.
pub fn memory_limit() -> Option<u64> {
    let read = |path: &str| fs::read_to_string(path).ok();
    let address_space = read("/proc/self/limits").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max address space"))?;
        line.split_whitespace().nth(3)?.parse::<u64>().ok()
    });
    let cgroup = read("/sys/fs/cgroup/memory.max").and_then(|t| t.trim().parse::<u64>().ok());
    let machine = read("/proc/meminfo").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
        kib.checked_mul(1024)
    });
    [address_space, cgroup, machine].into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_runs_and_a_process_beyond_the_pid_range_does_not() {
        assert!(!super::has_exited(std::process::id()));
        #[cfg(target_os = "linux")]
        assert!(super::has_exited(u32::MAX));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_memory_limit_is_known_on_linux_and_plausible() {
        let limit = super::memory_limit().expect("/proc/meminfo is readable");
        assert!(limit >= 64 << 20, "{limit} bytes");
    }
}
