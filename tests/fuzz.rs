//! Fuzz and fault-injection tests of the `vaezoo` command line (the harness is in
//! `tests/fuzz/`): mutated specs, odd numbers, damaged run and data folders, arguments at their
//! limits, SIGKILL at random moments and write failures. Every command must succeed or fail
//! with one clean `error:` line, leave the files of a run as they were when it fails, and a
//! killed run must resume to the very bytes of an uninterrupted one.
//!
//! `bounded_fuzz_suite` runs a fixed seed and a fixed number of cases per family with every
//! `cargo test`. The long suite is run by hand:
//!
//! ```text
//! VAEZOO_FUZZ_CASES=10000 cargo test --release --test fuzz -- --ignored --nocapture long_fuzz_suite
//! ```
//!
//! (`VAEZOO_FUZZ_SEED` picks the seed, `VAEZOO_FUZZ_CASE=<case-id>` runs one case of it
//! again.) A failing case prints its reproducer and keeps its input under
//! `target/fuzz-failures/<case-id>/`.

mod common;
#[path = "fuzz/mod.rs"]
mod fuzz;

use fuzz::Family;

/// The seed of the bounded suite.
const BOUNDED_SEED: u64 = 20_261_206;

/// Cases per family of the bounded suite: about 1.5 min alone on 2 cores with the release
/// binary (`cargo test --release`); a quarter of them with the much slower debug binary.
#[test]
fn bounded_fuzz_suite() {
    let scale = if cfg!(debug_assertions) { 4 } else { 1 };
    let counts = [
        (Family::Validate, 120),
        (Family::Train, 80),
        (Family::Damage, 150),
        (Family::Args, 120),
        (Family::Kill, 8),
        (Family::FullDisk, 30),
    ];
    let plan = fuzz::fixed_plan(&counts.map(|(family, n)| (family, n / scale)));
    fuzz::run_suite(BOUNDED_SEED, &plan, 2, None).report_and_assert(BOUNDED_SEED);
}

#[test]
#[ignore = "long: run by hand (see the file's documentation)"]
fn long_fuzz_suite() {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let cases = env("VAEZOO_FUZZ_CASES").map_or(10_000, |v| v.parse().expect("VAEZOO_FUZZ_CASES"));
    let seed = env("VAEZOO_FUZZ_SEED").map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        },
        |v| v.parse().expect("VAEZOO_FUZZ_SEED"),
    );
    let only = env("VAEZOO_FUZZ_CASE");
    eprintln!("fuzz: {cases} cases, seed {seed} (VAEZOO_FUZZ_SEED={seed} repeats them)");
    let plan = fuzz::random_plan(seed, cases);
    fuzz::run_suite(seed, &plan, 2, only.as_deref()).report_and_assert(seed);
}
