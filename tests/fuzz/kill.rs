//! (e) SIGKILL at a random moment: `vaezoo train` of a run of about a second is killed after
//! 0 to 1.5 s (start-up included), then resumed (or, where no run folder was left, trained
//! again), sometimes killed again, until it ends; its final checkpoint and metric log must
//! be byte-identical to those of the uninterrupted run of the same spec and seed.

use std::time::Duration;

use rand::Rng;

use super::report::Kind;
use super::runner::{Cmd, Verdict};
use super::Case;

/// At most this many commands (the first train, then resumes) per case.
const ROUNDS: usize = 6;

pub fn case(c: &mut Case) {
    let reference = c.fx.kill_reference();
    let spec = reference.spec.to_str().unwrap().to_string();
    let run = c.dir().join("run");
    let run_arg = run.to_str().unwrap().to_string();
    let mut kills = Vec::new();
    let mut finished = None;
    c.setup(format!(
        "spec {spec} (trains in {:.1} s uninterrupted)",
        reference.seconds
    ));
    // After a resume that failed cleanly, `train --out RUN` may start the run instead.
    let mut resume_failed = false;
    for round in 0..ROUNDS {
        let exists = std::fs::symlink_metadata(&run).is_ok();
        let resume = exists && !std::mem::take(&mut resume_failed);
        let mut cmd = if resume {
            Cmd::vaezoo(&["resume", run_arg.as_str()])
        } else {
            Cmd::vaezoo(&["train", spec.as_str(), "--out", run_arg.as_str()])
        };
        // Always killed the first time, a third of the time after that, never at the end.
        let kill = round == 0 || (round < ROUNDS - 1 && c.rng.gen_range(0..3) == 0);
        if kill {
            let ms = c.rng.gen_range(0..1500);
            cmd.kill_after = Some(Duration::from_millis(ms));
            kills.push(format!("{} killed after {ms} ms", cmd.args[0]));
        }
        c.setup(format!("round {round}: {}", cmd.shell_line()));
        let (o, v) = c.check(&cmd, false);
        match v {
            Verdict::Killed => continue,
            Verdict::Success => {
                finished = Some((cmd, o));
                break;
            }
            Verdict::CleanError if cmd.args[0] == "resume" && round < ROUNDS - 1 => {
                resume_failed = true;
                c.setup(format!("(resume failed: {})", o.stderr.trim()));
            }
            Verdict::CleanError => {
                let detail = format!(
                    "a run killed at random moments could not be continued ({})",
                    kills.join(", ")
                );
                c.flag(Kind::KillResume, &cmd, &o, &detail);
                return;
            }
            _ => return, // flagged by `check`
        }
    }
    let Some((cmd, o)) = finished else {
        return; // every round was killed: nothing to compare yet
    };
    let ckpt = std::fs::read(run.join("checkpoints/latest.safetensors")).unwrap_or_default();
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let mut wrong = Vec::new();
    if ckpt != reference.checkpoint {
        let how = if same_content(&ckpt, &reference.checkpoint) {
            "only in the order of its header's entries (same tensors, same metadata)"
        } else {
            "in content"
        };
        wrong.push(format!(
            "the final checkpoint is not byte-identical to the uninterrupted run's: it differs {how}"
        ));
    }
    if metrics != reference.metrics {
        wrong.push(format!(
            "metrics.jsonl differs from the uninterrupted run's ({} vs {} lines)",
            metrics.lines().count(),
            reference.metrics.lines().count()
        ));
    }
    let left: Vec<String> = std::fs::read_dir(c.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "run")
        .collect();
    let entries = super::files::entries(&run);
    if entries != reference.entries {
        wrong.push(format!(
            "the run holds {entries:?}, the uninterrupted one {:?}",
            reference.entries
        ));
    }
    if !left.is_empty() {
        wrong.push(format!("left beside the run: {}", left.join(", ")));
    }
    if !wrong.is_empty() {
        let detail = format!("{} ({})", wrong.join("; "), kills.join(", "));
        c.flag(Kind::KillResume, &cmd, &o, &detail);
    }
}

/// Whether two safetensors files hold the same header entries (in any order) and the same
/// tensor bytes.
fn same_content(a: &[u8], b: &[u8]) -> bool {
    let split = |f: &[u8]| -> Option<(serde_json::Value, Vec<u8>)> {
        let n = u64::from_le_bytes(f.get(..8)?.try_into().ok()?) as usize;
        let header = serde_json::from_slice(f.get(8..8 + n)?).ok()?;
        Some((header, f[8 + n..].to_vec()))
    };
    // serde_json's maps (here in insertion order) compare as maps, whatever the order.
    matches!((split(a), split(b)), (Some(x), Some(y)) if x == y)
}
