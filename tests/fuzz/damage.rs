//! (c) Damaged folders: a copy of a pristine run with one entry damaged (truncated, bits
//! flipped, garbage, a folder, a dangling link, a link loop, deleted, its JSON mutated) before
//! `eval`, `sample`, `resume`, `traverse`, `interpolate` or `reconstruct`; and a copy of the
//! optdigits data with one file damaged, trained on or evaluated with. A failing command must
//! leave every file as it was; a failing train must leave no run.

use std::path::Path;

use rand::Rng;
use serde_json::Value;

use super::files::{copy_dir, damage, entries};
use super::gen::{mutate_bytes, mutate_value, pick, to_text};
use super::report::Kind;
use super::runner::Cmd;
use super::Case;

/// A random command on `run` (a copy of a pristine run), small enough to be quick.
pub fn command_on(c: &mut Case, run: &Path, text: bool) -> Cmd {
    let run = run.to_str().unwrap().to_string();
    let mut cmds = vec!["eval", "sample", "resume", "traverse", "interpolate"];
    if text {
        cmds.extend(["reconstruct", "plot"]);
    }
    let cmd = *pick(&mut c.rng, &cmds);
    // Beside the run, so that it is not one of the run's files.
    let plot_out = format!("{run}-plot.png");
    let mut args = vec![cmd.to_string(), run];
    let iw = c.rng.gen_range(0..20).to_string();
    let more: Vec<&str> = match cmd {
        "eval" if text => vec!["--samples", "4", "--iw-samples", "0"],
        "eval" => vec!["--iw-samples", &iw],
        "sample" => vec!["-n", "4"],
        "resume" if c.rng.gen() => vec!["--stop-after", "6"],
        "interpolate" if text => vec!["the first one", "and the second"],
        "interpolate" => vec!["--from", "0", "--to", "1", "--steps", "3"],
        "reconstruct" => vec!["a sentence to rebuild"],
        "plot" => vec!["--out", &plot_out],
        _ => vec![],
    };
    args.extend(more.iter().map(|s| s.to_string()));
    Cmd::vaezoo(&args)
}

/// Mutates the JSON (or JSON lines) file `path`; returns what it did.
fn damage_json(c: &mut Case, path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if path.extension().is_some_and(|e| e == "jsonl") {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.is_empty() {
            lines.push("{}".into());
        }
        let i = c.rng.gen_range(0..lines.len());
        let what = match c.rng.gen_range(0..4) {
            0 => {
                lines.remove(i);
                format!("line {} removed", i + 1)
            }
            1 => {
                let line = lines[i].clone();
                lines.insert(i, line);
                format!("line {} doubled", i + 1)
            }
            2 => {
                let mut bytes = lines[i].clone().into_bytes();
                let what = mutate_bytes(&mut c.rng, &mut bytes);
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
                format!("line {}: {what}", i + 1)
            }
            _ => match serde_json::from_str::<Value>(&lines[i]) {
                Ok(mut v) => {
                    let what = mutate_value(&mut c.rng, &mut v);
                    lines[i] = serde_json::to_string(&v).unwrap();
                    format!("line {}: {what}", i + 1)
                }
                Err(_) => "left as is".into(),
            },
        };
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
        return what;
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(mut v) => {
            let what = mutate_value(&mut c.rng, &mut v);
            std::fs::write(path, to_text(&v)).unwrap();
            what
        }
        Err(_) => "left as is (no JSON)".into(),
    }
}

/// (c) A damaged run or data folder.
pub fn case(c: &mut Case) {
    if c.rng.gen_range(0..5) == 0 {
        return data_case(c);
    }
    let text = c.rng.gen_range(0..12) == 0;
    let complete = c.rng.gen();
    let pristine = if text {
        c.fx.text_pristine()
    } else {
        c.fx.image_run(complete)
    };
    let run = c.dir().join("run");
    copy_dir(pristine, &run);
    let targets = entries(&run);
    let target = pick(&mut c.rng, &targets).clone();
    let path = run.join(&target);
    let is_json = path.is_file()
        && path
            .extension()
            .is_some_and(|e| e == "json" || e == "jsonl");
    let what = if is_json && c.rng.gen_range(0..3) == 0 {
        damage_json(c, &path)
    } else {
        damage(&mut c.rng, &path, None)
    };
    c.setup(format!(
        "copy of a pristine {} run ({}) at {}; {}: {what}",
        match (text, complete) {
            (true, _) => "nvae-wiki-tiny --stop-after 2",
            (false, true) => "vae-optdigits-tiny, trained, evaluated, sampled",
            (false, false) => "vae-optdigits-tiny --stop-after 3",
        },
        pristine.display(),
        run.display(),
        target.display()
    ));
    let cmd = command_on(c, &run, text);
    c.check_unchanged(&cmd, &run);
}

/// A copy of `zoo/data/optdigits` with one file damaged, trained on for 2 steps or given to
/// a pristine run's spec before a command.
fn data_case(c: &mut Case) {
    let data = c.dir().join("data");
    copy_dir(&crate::common::repo().join("zoo/data/optdigits"), &data);
    let files = entries(&data);
    let file = pick(&mut c.rng, &files).clone();
    let name = file.to_string_lossy().into_owned();
    let header = (name.contains("idx3"))
        .then_some(16)
        .or(name.contains("idx1").then_some(8));
    let what = damage(&mut c.rng, &data.join(&file), header);
    c.setup(format!(
        "copy of zoo/data/optdigits at {}; {name}: {what}",
        data.display()
    ));
    let run = c.dir().join("run");
    if c.rng.gen() {
        let spec = crate::common::tiny_spec_with(c.dir(), "damaged-data", |s| {
            s["data"]["dir"] = data.display().to_string().into();
        });
        c.setup(format!("spec {} (tiny, data there)", spec.display()));
        let cmd = Cmd::vaezoo(&[
            "train",
            spec.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--stop-after",
            "2",
        ]);
        let (o, _) = c.check(&cmd, false);
        if !o.success() && std::fs::symlink_metadata(&run).is_ok() {
            c.flag(
                Kind::ChangedFiles,
                &cmd,
                &o,
                "the failed train left its run folder",
            );
        }
        return;
    }
    let complete = c.rng.gen();
    copy_dir(c.fx.image_run(complete), &run);
    let spec_path = run.join("spec.json");
    let mut spec: Value =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    spec["data"]["dir"] = data.display().to_string().into();
    std::fs::write(&spec_path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    c.setup(format!(
        "copy of the pristine tiny run{} at {}, its spec.json's data.dir set there",
        if complete {
            " (trained, evaluated)"
        } else {
            " (3 steps)"
        },
        run.display()
    ));
    let cmd = if c.rng.gen_range(0..3) == 0 {
        command_on(c, &run, false)
    } else {
        let iw = c.rng.gen_range(0..20).to_string();
        Cmd::vaezoo(&["eval", run.to_str().unwrap(), "--iw-samples", iw.as_str()])
    };
    c.check_unchanged(&cmd, &run);
}
