//! The fuzz and fault-injection harness of the `vaezoo` command line, black-box: each case
//! runs the built binary as a child process (see `runner`) on hostile input made from a seed
//! (spec mutations, damaged run and data folders, arguments at their limits, SIGKILL at random
//! moments, full and read-only disks) and checks that it succeeds or fails cleanly, leaving
//! every file as it was. The case families are in their own modules; this one plans and runs
//! cases in parallel and tallies what they found.

pub mod args;
pub mod damage;
pub mod files;
pub mod fixtures;
pub mod full_disk;
pub mod gen;
pub mod kill;
pub mod report;
pub mod runner;
pub mod specs;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use fixtures::Fixtures;
use report::{CaseInfo, Finding, Kind, Tally};
use runner::{classify, Cmd, Outcome, Verdict};

/// A family of cases, each a generator of many distinct cases from a seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Mutated zoo specs through `vaezoo validate`.
    Validate,
    /// Odd numbers in the tiny specs through `vaezoo train --stop-after 2`.
    Train,
    /// Damaged run folders and data folders.
    Damage,
    /// Command-line arguments at their limits.
    Args,
    /// SIGKILL at a random moment of training, then resume.
    Kill,
    /// No space left on the device, and read-only run folders.
    FullDisk,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Validate,
        Family::Train,
        Family::Damage,
        Family::Args,
        Family::Kill,
        Family::FullDisk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Validate => "validate",
            Family::Train => "train",
            Family::Damage => "damage",
            Family::Args => "args",
            Family::Kill => "kill",
            Family::FullDisk => "full-disk",
        }
    }

    /// The share of the family among random cases, in percent.
    fn weight(self) -> u32 {
        match self {
            Family::Validate => 30,
            Family::Train => 15,
            Family::Damage => 25,
            Family::Args => 17,
            Family::Kill => 4,
            Family::FullDisk => 9,
        }
    }

    fn run(self, case: &mut Case) {
        match self {
            Family::Validate => specs::validate_case(case),
            Family::Train => specs::train_case(case),
            Family::Damage => damage::case(case),
            Family::Args => args::case(case),
            Family::Kill => kill::case(case),
            Family::FullDisk => full_disk::case(case),
        }
    }
}

/// One case while it runs: its fixtures, folder, generator and findings.
pub struct Case<'a> {
    pub fx: &'a Fixtures,
    pub info: CaseInfo,
    pub rng: StdRng,
    pub findings: Vec<Finding>,
}

impl Case<'_> {
    /// The case's own folder.
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// Adds to the description of what the case did before its command.
    pub fn setup(&mut self, what: impl AsRef<str>) {
        if !self.info.setup.is_empty() {
            self.info.setup.push_str("; ");
        }
        self.info.setup.push_str(what.as_ref());
    }

    /// Records a finding about `cmd`.
    pub fn flag(&mut self, kind: Kind, cmd: &Cmd, o: &Outcome, detail: &str) {
        self.findings
            .push(Finding::new(kind, &self.info, cmd, o, detail));
    }

    /// Runs `cmd`, records a finding when it panicked, died, hung or failed unclearly.
    pub fn check(&mut self, cmd: &Cmd, validate: bool) -> (Outcome, Verdict) {
        let o = runner::run(cmd);
        let v = classify(&o, validate);
        self.flag_verdict(cmd, &o, v);
        (o, v)
    }

    /// Records the finding a verdict is, if any.
    pub fn flag_verdict(&mut self, cmd: &Cmd, o: &Outcome, v: Verdict) {
        if let Some(kind) = Kind::of(v) {
            let detail = match v {
                Verdict::Unclear => "not a clean one-line error",
                Verdict::Hang => "did not finish in time",
                Verdict::Signal => "killed by a signal",
                _ => "panicked",
            };
            self.flag(kind, cmd, o, detail);
        }
    }

    /// [`Case::check`], and when the command fails, every entry under `watched` must be as it
    /// was before it.
    pub fn check_unchanged(&mut self, cmd: &Cmd, watched: &Path) -> (Outcome, Verdict) {
        let before = files::snapshot(watched);
        let (o, v) = self.check(cmd, false);
        if !o.success() && v != Verdict::Killed {
            let changes = files::diff(&before, &files::snapshot(watched));
            if !changes.is_empty() {
                let detail = format!(
                    "the failing command changed {}: {changes}",
                    watched.display()
                );
                self.flag(Kind::ChangedFiles, cmd, &o, &detail);
            }
        }
        (o, v)
    }
}

/// Mixes the suite's seed and a case's index into the case's own seed.
fn case_seed(seed: u64, index: usize) -> u64 {
    let mut x = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `n` families drawn by their weights from `seed`.
pub fn random_plan(seed: u64, n: usize) -> Vec<Family> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total: u32 = Family::ALL.iter().map(|f| f.weight()).sum();
    (0..n)
        .map(|_| {
            let mut r = rng.gen_range(0..total);
            for f in Family::ALL {
                if r < f.weight() {
                    return f;
                }
                r -= f.weight();
            }
            unreachable!()
        })
        .collect()
}

/// `counts[i]` cases of each family, interleaved (so that slow families spread out).
pub fn fixed_plan(counts: &[(Family, usize)]) -> Vec<Family> {
    let most = counts.iter().map(|c| c.1).max().unwrap_or(0);
    let mut plan = Vec::new();
    for round in 0..most {
        for &(f, n) in counts {
            // Spread each family's cases evenly over the rounds.
            if n > 0 && (round * n) / most != ((round + 1) * n) / most {
                plan.push(f);
            }
        }
    }
    plan
}

/// What a suite found.
pub struct SuiteResult {
    pub tally: Tally,
    pub findings: Vec<Finding>,
    pub elapsed: Duration,
    /// Per family: cases and seconds spent.
    pub per_family: Vec<(Family, usize, f64)>,
    /// Cases that the harness could not run (its own bugs).
    pub harness_errors: Vec<String>,
}

/// Runs the cases of `plan` (`only`: just the case of this id) on `workers` threads.
pub fn run_suite(seed: u64, plan: &[Family], workers: usize, only: Option<&str>) -> SuiteResult {
    let fx = Fixtures::create();
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let harness_errors = Mutex::new(Vec::new());
    let shared = Mutex::new((Tally::default(), Vec::<Finding>::new(), Vec::new()));
    let work = || loop {
        let index = next.fetch_add(1, Ordering::SeqCst);
        let Some(&family) = plan.get(index) else {
            return;
        };
        let id = format!("{}-s{seed}-{index:05}", family.name());
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let started = Instant::now();
        let mut case = Case {
            fx: &fx,
            info: CaseInfo {
                dir: fx.case_dir(&id),
                id,
                family: family.name(),
                setup: String::new(),
            },
            rng: StdRng::seed_from_u64(case_seed(seed, index)),
            findings: Vec::new(),
        };
        // A bug of the harness itself fails the suite, after the other cases.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| family.run(&mut case)));
        if let Err(e) = ran {
            let what = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            harness_errors
                .lock()
                .unwrap()
                .push(format!("case {}: {what}", case.info.id));
        }
        if !case.findings.is_empty() {
            report::keep(&case.info, &mut case.findings);
        }
        let _ = std::fs::remove_dir_all(&case.info.dir);
        let seconds = started.elapsed().as_secs_f64();
        let mut s = shared.lock().unwrap();
        s.0.cases += 1;
        for f in case.findings {
            eprintln!("fuzz: found {:?} in case {}", f.kind, f.case);
            s.0.add(&f);
            s.1.push(f);
        }
        s.2.push((family, seconds));
        let n = done.fetch_add(1, Ordering::SeqCst) + 1;
        if n.is_multiple_of(100) {
            eprintln!(
                "fuzz: {n}/{} cases, {} findings ({} s)",
                plan.len(),
                s.1.len(),
                start.elapsed().as_secs()
            );
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(work);
        }
    });
    let (tally, findings, times) = shared.into_inner().unwrap();
    let per_family = Family::ALL
        .iter()
        .map(|&f| {
            let mine: Vec<f64> = times.iter().filter(|t| t.0 == f).map(|t| t.1).collect();
            (f, mine.len(), mine.iter().sum())
        })
        .collect();
    SuiteResult {
        harness_errors: harness_errors.into_inner().unwrap(),
        tally,
        findings,
        elapsed: start.elapsed(),
        per_family,
    }
}

impl SuiteResult {
    /// Prints the per-family times, every finding's reproducer and the summary line; fails
    /// when anything was found.
    pub fn report_and_assert(&self, seed: u64) {
        for (f, n, s) in self.per_family.iter().filter(|f| f.1 > 0) {
            eprintln!("fuzz: family {}: {n} cases, {s:.1} s", f.name());
        }
        for f in &self.findings {
            eprintln!("{}", f.render());
        }
        let summary = self.tally.summary(seed, self.elapsed.as_secs());
        eprintln!("{summary}");
        assert!(
            self.harness_errors.is_empty(),
            "the harness failed: {:#?}",
            self.harness_errors
        );
        assert_eq!(
            self.tally.bugs(),
            0,
            "{summary}\n(reproducers above; inputs kept under {})",
            report::failures_root().display()
        );
    }
}
