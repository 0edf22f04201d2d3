//! (f) Write failures: in a user and mount namespace (`unshare -rm`), the run folder lies on a
//! small tmpfs, so that a checkpoint, metric, plot or eval write hits "No space left on
//! device", or on a tmpfs remounted read-only. The command must fail with a clean error that
//! names the file or folder, and leave the run's earlier files as they were (a failed train:
//! no run at all). Skipped, with a message, where namespaces do not work.

use std::path::Path;

use rand::Rng;

use super::damage::command_on;
use super::files::{diff_existing, snapshot};
use super::gen::pick;
use super::report::Kind;
use super::runner::{classify, quote, run, Cmd, Verdict};
use super::Case;

/// Exit codes of the wrapper script when the stage was not set (not a finding).
const NO_MOUNT: i32 = 96;
const NO_ROOM_FOR_THE_RUN: i32 = 97;

/// KiB a tmpfs needs to hold the files of `dir` (whole pages).
fn tmpfs_kib(dir: &Path) -> u64 {
    snapshot(dir)
        .values()
        .map(|e| match e {
            super::files::Entry::File { len, .. } => len.div_ceil(4096) * 4,
            _ => 0,
        })
        .sum()
}

pub fn case(c: &mut Case) {
    if !c.fx.namespaces() {
        return;
    }
    let mnt = c.dir().join("mnt");
    let after = c.dir().join("after");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&after).unwrap();
    let run_dir = mnt.join("run");
    let mode = *pick(&mut c.rng, &["train", "full", "full", "read-only"]);
    let pristine = c.fx.image_run(c.rng.gen());
    let extra = *pick(&mut c.rng, &[0u64, 0, 4, 8, 16, 32, 64, 128, 256]);
    let (size, inner) = if mode == "train" {
        let size = *pick(
            &mut c.rng,
            &[4u64, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256],
        );
        let spec = c.fx.tiny_spec.to_str().unwrap().to_string();
        let stop = c.rng.gen_range(1..30).to_string();
        let args = [
            "train",
            spec.as_str(),
            "--out",
            run_dir.to_str().unwrap(),
            "--stop-after",
            stop.as_str(),
        ];
        (size, Cmd::vaezoo(&args))
    } else {
        let size = tmpfs_kib(pristine) + if mode == "full" { extra } else { 64 };
        (size, command_on(c, &run_dir, false))
    };
    let m = quote(mnt.to_str().unwrap());
    let mut script = format!("mount -t tmpfs -o size={size}k tmpfs {m} || exit {NO_MOUNT}\n");
    if mode != "train" {
        script += &format!(
            "cp -a {} {m}/run 2>/dev/null || exit {NO_ROOM_FOR_THE_RUN}\n",
            quote(pristine.to_str().unwrap())
        );
    }
    if mode == "read-only" {
        script += &format!("mount -o remount,ro {m} || exit {NO_MOUNT}\n");
    }
    script += &format!(
        "\"$@\"\nrc=$?\ncp -a {m}/. {} 2>/dev/null\nexit $rc\n",
        quote(after.to_str().unwrap())
    );
    let mut args = vec![
        "-rm".to_string(),
        "sh".into(),
        "-c".into(),
        script,
        "sh".into(),
    ];
    args.push(inner.program.clone());
    args.extend(inner.args.iter().cloned());
    let cmd = Cmd::other("unshare", &args);
    c.setup(format!(
        "{mode}: a {size} KiB tmpfs at {}{}; inside: {}",
        mnt.display(),
        if mode == "train" {
            String::new()
        } else {
            format!(" holding a copy of {}", pristine.display())
        },
        inner.shell_line()
    ));
    let o = run(&cmd).through_shell();
    if matches!(o.code, Some(NO_MOUNT | NO_ROOM_FOR_THE_RUN)) {
        eprintln!(
            "fuzz: case {}: the stage was not set ({})",
            c.info.id,
            o.status_text()
        );
        return;
    }
    let v = classify(&o, false);
    c.flag_verdict(&cmd, &o, v);
    if o.success() || v == Verdict::Killed {
        return;
    }
    if v == Verdict::CleanError && !o.stderr.contains(mnt.to_str().unwrap()) {
        let detail = "the error does not name the file or folder it could not write";
        c.flag(Kind::Unclear, &cmd, &o, detail);
    }
    let left = after.join("run");
    if mode == "train" {
        return left_run_is_valid(c, &cmd, &o, &after);
    }
    let changes = diff_existing(&snapshot(pristine), &snapshot(&left));
    if !changes.is_empty() {
        let detail = format!("the failing command changed the run's earlier files: {changes}");
        c.flag(Kind::ChangedFiles, &cmd, &o, &detail);
    }
}

/// After a failed train on a full disk: the run folder is absent, or a valid run (resumable,
/// here on a copy outside the tmpfs), and nothing else (no partial folder) is left.
fn left_run_is_valid(c: &mut Case, cmd: &Cmd, o: &super::runner::Outcome, after: &Path) {
    let names: Vec<String> = std::fs::read_dir(after)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "run")
        .collect();
    if !names.is_empty() {
        let detail = format!("the failed train left {} on the tmpfs", names.join(", "));
        c.flag(Kind::ChangedFiles, cmd, o, &detail);
    }
    let left = after.join("run");
    if std::fs::symlink_metadata(&left).is_err() {
        return;
    }
    // The copy's spec still names the tiny data by its absolute path.
    let resume = Cmd::vaezoo(&["resume", left.to_str().unwrap()]);
    let r = run(&resume);
    if !r.success() {
        let detail = format!(
            "the failed train left a run that does not resume (copied out of the tmpfs to {}): `{}` gave {}: {}",
            left.display(),
            resume.shell_line(),
            r.status_text(),
            r.stderr.trim()
        );
        c.flag(Kind::ChangedFiles, cmd, o, &detail);
    }
}
