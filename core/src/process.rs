//! Whether another process still runs: for files a killed process left behind (a checkpoint's
//! temporary file, a run folder being assembled), named after its process id.

use std::path::Path;

/// Whether process `pid` is known to have exited: on Linux, when `/proc` has no entry for it.
/// Elsewhere, or for this process, `false`: such leftovers stay (hidden and harmless) rather
/// than risk removing the file of a process that is still writing it.
pub fn has_exited(pid: u32) -> bool {
    pid != std::process::id()
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{pid}")).exists()
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
