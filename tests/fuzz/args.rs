//! (d) Command-line arguments at and past their limits: counts of 0, 1, 2^32, 2^64 - 1, 2^64,
//! -1, text; seeds at their extremes; odd floats; `--out` aimed at the run's own records or
//! folders. Each command runs on a copy of the pristine run (or trains the tiny spec), must
//! succeed or fail cleanly, and a failure must leave the run as it was.

use rand::Rng;

use super::files::copy_dir;
use super::gen::pick;
use super::report::Kind;
use super::runner::Cmd;
use super::Case;

/// Counts: small, at a limit, past every limit, not a number.
const COUNTS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "7",
    "1000",
    "1001",
    "10000",
    "10001",
    "100001",
    "86400",
    "86401",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "-1",
    "-0",
    "+5",
    "0x10",
    "1e3",
    " 5",
    "abc",
    "",
    "٣",
];

/// Seeds at their extremes.
const SEEDS: &[&str] = &[
    "0",
    "1",
    "18446744073709551615",
    "18446744073709551614",
    "9223372036854775808",
    "18446744073709551616",
    "-1",
    "abc",
];

/// Floats: zero, signs, huge, not finite, subnormal, text.
const FLOATS: &[&str] = &[
    "0", "-0", "1", "-1", "0.5", "1e38", "3.5e38", "1e-45", "NaN", "nan", "inf", "-inf", "1e309",
    "abc", "",
];

/// Counts for options whose every accepted value must be cheap: no values that would run
/// for minutes by design (e.g. 10^5 importance samples of 256 test images).
const CHEAP_COUNTS: &[&str] = &[
    "0",
    "1",
    "2",
    "7",
    "100001",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "abc",
    "",
];

/// Where `--out` may point, for a run at RUN in case folder CASE.
const OUTS: &[&str] = &[
    "RUN/spec.json",
    "RUN/env.json",
    "RUN/metrics.jsonl",
    "RUN/checkpoints/latest.safetensors",
    "RUN/checkpoints",
    "RUN/plots",
    "RUN",
    "RUN/./spec.json",
    "RUN/../run/metrics.jsonl",
    "RUN/plots/loss.png",
    "RUN/plots/out.png",
    "RUN/checkpoints/out.png",
    "CASE/link-to-metrics",
    "CASE/link-to-run/env.json",
    "CASE/out.png",
    "CASE/out",
    "CASE/missing/folder/out.png",
    "CASE/link-dangling",
];

/// (d) One option of one command at a limit.
pub fn case(c: &mut Case) {
    if c.rng.gen_range(0..6) == 0 {
        return text_case(c);
    }
    let run = c.dir().join("run");
    let complete = c.rng.gen();
    copy_dir(c.fx.image_run(complete), &run);
    let case_dir = c.dir().to_path_buf();
    let _ = std::os::unix::fs::symlink(run.join("metrics.jsonl"), case_dir.join("link-to-metrics"));
    let _ = std::os::unix::fs::symlink(&run, case_dir.join("link-to-run"));
    let _ = std::os::unix::fs::symlink(case_dir.join("gone"), case_dir.join("link-dangling"));
    let path = |s: &str| {
        if let Some(rest) = s.strip_prefix("RUN") {
            format!("{}{rest}", run.display())
        } else if let Some(rest) = s.strip_prefix("CASE") {
            format!("{}{rest}", case_dir.display())
        } else {
            s.to_string()
        }
    };
    let r = run.to_str().unwrap().to_string();
    let cmd = *pick(
        &mut c.rng,
        &[
            "sample",
            "eval",
            "traverse",
            "interpolate",
            "train",
            "resume",
        ],
    );
    let (flag, values): (&str, &[&str]) = match cmd {
        "sample" => *pick(
            &mut c.rng,
            &[
                ("-n", COUNTS),
                ("--seed", SEEDS),
                ("--class", COUNTS),
                ("--temperature", FLOATS),
                ("--out", OUTS),
            ],
        ),
        "eval" => *pick(
            &mut c.rng,
            &[
                ("--batch-size", COUNTS),
                ("--iw-samples", CHEAP_COUNTS),
                ("--elbo-samples", CHEAP_COUNTS),
                ("--samples", COUNTS),
                ("--seed", SEEDS),
                ("--lm", OUTS),
            ],
        ),
        "traverse" => *pick(
            &mut c.rng,
            &[
                ("--index", COUNTS),
                ("--dims", COUNTS),
                ("--range", FLOATS),
                ("--steps", COUNTS),
                ("--out", OUTS),
            ],
        ),
        "interpolate" => *pick(
            &mut c.rng,
            &[
                ("--from", COUNTS),
                ("--to", COUNTS),
                ("--steps", COUNTS),
                ("--out", OUTS),
            ],
        ),
        "train" => *pick(
            &mut c.rng,
            &[
                ("--seed", SEEDS),
                ("--stop-after", COUNTS),
                ("--status-every", COUNTS),
                ("--out", OUTS),
            ],
        ),
        _ => *pick(
            &mut c.rng,
            &[("--stop-after", COUNTS), ("--status-every", COUNTS)],
        ),
    };
    let chosen = *pick(&mut c.rng, values);
    let value = path(chosen);
    let mut args: Vec<String> = vec![cmd.into()];
    match cmd {
        "train" => {
            args.push(c.fx.tiny_spec.display().to_string());
            if flag != "--out" {
                args.extend(["--out".into(), c.dir().join("new").display().to_string()]);
            }
            if flag != "--stop-after" {
                args.extend(["--stop-after".into(), "2".into()]);
            }
        }
        _ => args.push(r),
    }
    match (cmd, flag) {
        ("eval", "--iw-samples") => {}
        ("eval", _) => args.extend(["--iw-samples".into(), "3".into()]),
        ("interpolate", "--from") => args.extend(["--to".into(), "1".into()]),
        ("interpolate", "--to") => args.extend(["--from".into(), "0".into()]),
        ("interpolate", _) => args.extend(["--from".into(), "0".into(), "--to".into(), "1".into()]),
        _ => {}
    }
    // Sometimes the option twice, the second at another value.
    let twice = c.rng.gen_range(0..10) == 0;
    args.extend([flag.to_string(), value.clone()]);
    if twice {
        let second = *pick(&mut c.rng, values);
        args.extend([flag.to_string(), path(second)]);
    }
    c.setup(format!(
        "copy of the pristine tiny run{} at {}; links link-to-metrics, link-to-run, link-dangling in {}",
        if complete { " (trained, evaluated)" } else { " (3 steps)" },
        run.display(),
        case_dir.display()
    ));
    let cmd = Cmd::vaezoo(&args);
    let (o, _) = c.check_unchanged(&cmd, &run);
    let new = c.dir().join("new");
    if args[0] == "train" && !o.success() && std::fs::symlink_metadata(&new).is_ok() {
        c.flag(
            Kind::ChangedFiles,
            &cmd,
            &o,
            "the failed train left its run folder",
        );
    }
}

/// Sentences that are empty, long, or odd in their characters.
fn sentence(c: &mut Case) -> String {
    match c.rng.gen_range(0..12) {
        0 => String::new(),
        1 => " ".into(),
        2 => "word ".repeat(c.rng.gen_range(100..20_000)),
        3 => "é✓🦀 \u{202e}ltr".into(),
        4 => "\u{1}\u{7f}\u{ffff}".into(),
        5 => "one line\nand another".into(),
        6 => "[UNK] [PAD] [CLS] [SEP] [MASK] <s> </s> <pad>".into(),
        7 => "##ar ##".into(),
        8 => (0..3000)
            .filter_map(|i| char::from_u32(0x4e00 + i))
            .collect(),
        9 => "-n".into(),
        10 => "--".into(),
        _ => "the quick brown fox".into(),
    }
}

/// (d) on a text run: counts, floats and sentences at their limits.
fn text_case(c: &mut Case) {
    let run = c.dir().join("run");
    copy_dir(c.fx.text_pristine(), &run);
    let r = run.to_str().unwrap().to_string();
    let which = *pick(
        &mut c.rng,
        &["sample", "reconstruct", "interpolate", "eval"],
    );
    let mut args = vec![which.to_string(), r];
    let mut option = |c: &mut Case, flag: &str, values: &[&str]| {
        let value = pick(&mut c.rng, values).to_string();
        args.extend([flag.to_string(), value]);
    };
    match which {
        "sample" => {
            let (flag, values) = *pick(
                &mut c.rng,
                &[
                    ("-n", CHEAP_COUNTS),
                    ("--class", COUNTS),
                    ("--temperature", FLOATS),
                    ("--seed", SEEDS),
                ],
            );
            option(c, flag, values);
        }
        "eval" => {
            let (flag, values) = *pick(
                &mut c.rng,
                &[("--samples", CHEAP_COUNTS), ("--batch-size", COUNTS)],
            );
            option(c, flag, values);
            option(c, "--iw-samples", &["0"]);
            if flag != "--samples" {
                option(c, "--samples", &["3"]);
            }
        }
        "interpolate" => {
            if c.rng.gen() {
                option(c, "--steps", COUNTS);
            }
        }
        _ => {
            if c.rng.gen_range(0..4) == 0 {
                option(c, "--class", COUNTS);
            }
        }
    }
    if which == "interpolate" || which == "reconstruct" {
        // Sentences after `--`, so that one like "-n" stays a sentence.
        let n = if which == "interpolate" {
            2
        } else {
            c.rng.gen_range(1..4)
        };
        let sentences: Vec<String> = (0..n).map(|_| sentence(c)).collect();
        args.push("--".into());
        args.extend(sentences);
    }
    c.setup(format!(
        "copy of the pristine text run (nvae-wiki-tiny, 2 steps) at {}",
        run.display()
    ));
    let cmd = Cmd::vaezoo(&args);
    c.check_unchanged(&cmd, &run);
}
