//! What the fuzz cases found: each finding's kind, its reproducer (family, command line, the
//! input kept under `target/fuzz-failures/<case-id>/`, the child's output), the tally and the
//! one summary line.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::runner::{Cmd, Outcome, Verdict};

/// A kind of bug a case can reveal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Panic,
    Signal,
    Hang,
    Unclear,
    ChangedFiles,
    KillResume,
}

impl Kind {
    /// The kind of a verdict, `None` for an acceptable one.
    pub fn of(v: Verdict) -> Option<Kind> {
        match v {
            Verdict::Success | Verdict::CleanError | Verdict::Killed => None,
            Verdict::Panic => Some(Kind::Panic),
            Verdict::Signal => Some(Kind::Signal),
            Verdict::Hang => Some(Kind::Hang),
            Verdict::Unclear => Some(Kind::Unclear),
        }
    }
}

/// One bug found by one case.
#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: Kind,
    pub case: String,
    pub family: &'static str,
    /// What the case did before the command (the damage, the mutation), in words.
    pub setup: String,
    pub command: String,
    /// What was wrong, in words.
    pub detail: String,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    /// Where the case's inputs were kept.
    pub kept: Option<PathBuf>,
}

impl Finding {
    /// A finding about `cmd`'s outcome `o`.
    pub fn new(kind: Kind, cx: &CaseInfo, cmd: &Cmd, o: &Outcome, detail: &str) -> Self {
        Finding {
            kind,
            case: cx.id.clone(),
            family: cx.family,
            setup: cx.setup.clone(),
            command: cmd.shell_line(),
            detail: detail.to_string(),
            status: o.status_text(),
            stdout: o.stdout.clone(),
            stderr: o.stderr.clone(),
            kept: None,
        }
    }

    /// The reproducer, as printed.
    pub fn render(&self) -> String {
        let clip = |s: &str| {
            if s.len() > 4000 {
                let mut end = 4000;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}… ({} bytes)", &s[..end], s.len())
            } else {
                s.to_string()
            }
        };
        let mut r = String::new();
        let _ = writeln!(
            r,
            "=== {:?} in case {} (family {})",
            self.kind, self.case, self.family
        );
        let _ = writeln!(r, "setup:   {}", self.setup);
        let _ = writeln!(r, "command: {}", self.command);
        let _ = writeln!(r, "problem: {} ({})", self.detail, self.status);
        if let Some(k) = &self.kept {
            let _ = writeln!(r, "kept:    {}", k.display());
        }
        let _ = writeln!(r, "--- stdout\n{}", clip(&self.stdout));
        let _ = writeln!(r, "--- stderr\n{}", clip(&self.stderr));
        r
    }
}

/// The identity and setup of a case, for its findings.
#[derive(Clone, Debug)]
pub struct CaseInfo {
    pub id: String,
    pub family: &'static str,
    pub setup: String,
    /// The case's working folder (its inputs), kept when it finds a bug.
    pub dir: PathBuf,
}

/// `target/fuzz-failures`.
pub fn failures_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("fuzz-failures")
}

/// Copies `from` (a file, folder or link) to `to`, links as links; errors are ignored (what
/// can be copied is).
pub fn copy_tree(from: &Path, to: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(from) else {
        return;
    };
    if meta.file_type().is_symlink() {
        if let Ok(target) = std::fs::read_link(from) {
            let _ = std::os::unix::fs::symlink(target, to);
        }
    } else if meta.is_dir() {
        let _ = std::fs::create_dir_all(to);
        for e in std::fs::read_dir(from).into_iter().flatten().flatten() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        let _ = std::fs::copy(from, to);
    }
}

/// Keeps a failing case's folder and reproducers under `target/fuzz-failures/<case-id>/`.
pub fn keep(cx: &CaseInfo, findings: &mut [Finding]) {
    let dest = failures_root().join(&cx.id);
    let _ = std::fs::remove_dir_all(&dest);
    let _ = std::fs::create_dir_all(&dest);
    copy_tree(&cx.dir, &dest.join("work"));
    let mut text = String::new();
    for f in findings.iter_mut() {
        f.kept = Some(dest.clone());
        text.push_str(&f.render());
    }
    let _ = std::fs::write(dest.join("README.txt"), text);
}

/// Counts of findings by kind.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub cases: usize,
    pub panics: usize,
    pub signals: usize,
    pub hangs: usize,
    pub unclear: usize,
    pub changed: usize,
    pub kill_resume: usize,
}

impl Tally {
    pub fn add(&mut self, f: &Finding) {
        *match f.kind {
            Kind::Panic => &mut self.panics,
            Kind::Signal => &mut self.signals,
            Kind::Hang => &mut self.hangs,
            Kind::Unclear => &mut self.unclear,
            Kind::ChangedFiles => &mut self.changed,
            Kind::KillResume => &mut self.kill_resume,
        } += 1;
    }

    pub fn bugs(&self) -> usize {
        self.panics + self.signals + self.hangs + self.unclear + self.changed + self.kill_resume
    }

    /// `fuzz: N cases (seed S): 0 panics, … (M s)`.
    pub fn summary(&self, seed: u64, seconds: u64) -> String {
        format!(
            "fuzz: {} cases (seed {seed}): {} panics, {} signal deaths, {} hangs, {} unclear errors, {} changed files, {} kill/resume mismatches ({seconds} s)",
            self.cases, self.panics, self.signals, self.hangs, self.unclear, self.changed, self.kill_resume
        )
    }
}
