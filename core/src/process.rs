//! Whether another process still runs: for files a killed process left behind (a checkpoint's
//! temporary file, a run folder being assembled), named after its process id.

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

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_runs_and_a_process_beyond_the_pid_range_does_not() {
        assert!(!super::has_exited(std::process::id()));
        #[cfg(target_os = "linux")]
        assert!(super::has_exited(u32::MAX));
    }
}
