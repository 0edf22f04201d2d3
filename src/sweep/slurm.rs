//! `vaezoo sweep submit --slurm`: the sweep as one Slurm job array. The script
//! (`OUT/sweep.sbatch`) has `--array=0-(n-1)`; task i runs `vaezoo sweep task FILE i`, which
//! trains (or resumes) run i with every CPU the task gets. Paths in it are absolute, and the
//! binary is the one that wrote it, so the nodes need the same file system paths (a shared
//! home or project folder) and the same binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Sweep;
use crate::run::write_atomic;
use crate::{Error, Result};

/// Slurm options of the array.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (Slurm's format, e.g. `02:00:00`).
    pub time: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<usize>,
}

/// Writes the array script of `sweep` and returns its path.
pub fn write_script(sweep: &Sweep, options: &SlurmOptions) -> Result<PathBuf> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| Error::io(p, e));
    let exe =
        std::env::current_exe().map_err(|e| Error::Usage(format!("no vaezoo binary: {e}")))?;
    let (out, file) = (absolute(&sweep.out)?, absolute(&sweep.file)?);
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name=vaezoo-{}", sweep.name),
        format!("#SBATCH --array=0-{}", sweep.runs.len().saturating_sub(1)),
        format!("#SBATCH --output={}/slurm/%A_%a.log", out.display()),
    ];
    if let Some(partition) = &options.partition {
        lines.push(format!("#SBATCH --partition={partition}"));
    }
    if let Some(time) = &options.time {
        lines.push(format!("#SBATCH --time={time}"));
    }
    if let Some(cpus) = options.cpus_per_task {
        lines.push(format!("#SBATCH --cpus-per-task={cpus}"));
        lines.push(format!("export RAYON_NUM_THREADS={cpus}"));
    }
    lines.push(format!(
        "exec {} sweep task {} \"$SLURM_ARRAY_TASK_ID\"",
        shell_quote(&exe),
        shell_quote(&file)
    ));
    std::fs::create_dir_all(out.join("slurm")).map_err(|e| Error::io(&out, e))?;
    let path = out.join("sweep.sbatch");
    write_atomic(&path, (lines.join("\n") + "\n").as_bytes())?;
    Ok(path)
}

/// Submits the script with `sbatch` and returns what it printed (the job id).
pub fn submit(script: &Path) -> Result<String> {
    let output = Command::new("sbatch")
        .arg(script)
        .output()
        .map_err(|e| Error::Usage(format!("cannot run sbatch ({e}); is Slurm installed here?")))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Usage(format!("sbatch failed: {}", stderr.trim())));
    }
    Ok(text)
}

/// `path` in single quotes for bash.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}
