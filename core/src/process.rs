//! What the operating system tells about processes: whether another process still runs (for
//! files a killed process left behind, a checkpoint's temporary file or a run folder being
//! assembled, named after its process id), and how much memory this one may use.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The folder `path` lies in: its parent, or `.` for a bare file name (whose parent is empty).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A temporary file for writing `name` in `dir` atomically: `.NAME.PID-N.tmp`, this call's own
/// (N counts the calls of this process), so that writers of one file at once each rename a
/// whole file of their own.
pub fn temp_file_for(dir: &Path, name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Removes the [`temp_file_for`] files of `name` in `dir` that exited processes left (killed
/// before their rename).
pub fn remove_temp_files_left_by_exited(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    remove_left_by_exited(dir, |entry| {
        let rest = entry.strip_prefix(&prefix)?.strip_suffix(".tmp")?;
        rest.split_once('-')?.0.parse().ok()
    });
}

/// The environment variable (and `--max-memory`) that lowers [`memory_limit`]: bytes, or a
/// number with `K`, `M`, `G` or `T` (powers of 1024), e.g. `8G`.
pub const MAX_MEMORY_VAR: &str = "VAEZOO_MAX_MEMORY";

/// `text` as a number of bytes: digits with an optional `K`, `M`, `G` or `T` (powers of 1024,
/// a trailing `B` or `iB` allowed), e.g. `512M`, `8G`, `8GiB`, `1.5G`; `None` if it is not one.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text
        .strip_suffix("iB")
        .or_else(|| text.strip_suffix('B'))
        .unwrap_or(text);
    let (number, scale) = match text.char_indices().last()? {
        (at, 'K' | 'k') => (&text[..at], 1u64 << 10),
        (at, 'M' | 'm') => (&text[..at], 1 << 20),
        (at, 'G' | 'g') => (&text[..at], 1 << 30),
        (at, 'T' | 't') => (&text[..at], 1 << 40),
        _ => (text, 1),
    };
    let value = number.trim().parse::<f64>().ok()?;
    let bytes = value * scale as f64;
    (value.is_finite() && value > 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The memory this process may use, in bytes: the smallest of [`MAX_MEMORY_VAR`] (when set),
/// its address-space limit (`ulimit -v`), its control group's memory limit and the machine's
/// memory, as Linux reports them; `None` where none of them is known.
pub fn memory_limit() -> Option<u64> {
    let asked = std::env::var(MAX_MEMORY_VAR)
        .ok()
        .and_then(|v| parse_bytes(&v));
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
    [asked, address_space, cgroup, machine]
        .into_iter()
        .flatten()
        .min()
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
