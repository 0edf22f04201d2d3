//! Spec families: (a) any zoo spec mutated in structure or in its text, through
//! `vaezoo validate`; (b) odd but plausible numbers in the tiny specs, through
//! `vaezoo train --stop-after 2`, after whose failure no run folder may be left.

use rand::Rng;
use serde_json::{json, Value};

use super::fixtures::zoo_spec;
use super::gen::{mutate_bytes, mutate_value, pick, pointers_where, to_text, wild_number};
use super::report::Kind;
use super::runner::Cmd;
use super::Case;

/// (a) A zoo spec with one to three mutations of its structure, or of its text.
pub fn validate_case(c: &mut Case) {
    let zoo = c.fx.zoo();
    let (name, spec) = pick(&mut c.rng, zoo).clone();
    let mut doc = spec;
    let mut what = Vec::new();
    let rounds = if c.rng.gen_range(0..4) == 0 {
        c.rng.gen_range(2..4)
    } else {
        1
    };
    let text_level = c.rng.gen_range(0..3) == 0;
    let mut bytes = if text_level {
        let mut bytes = to_text(&doc).into_bytes();
        for _ in 0..rounds {
            what.push(mutate_bytes(&mut c.rng, &mut bytes));
        }
        bytes
    } else {
        for _ in 0..rounds {
            what.push(mutate_value(&mut c.rng, &mut doc));
        }
        to_text(&doc).into_bytes()
    };
    if c.rng.gen_range(0..30) == 0 {
        // A byte order mark, or text that is not the spec at all.
        bytes = match c.rng.gen_range(0..3) {
            0 => [&b"\xef\xbb\xbf"[..], &bytes].concat(),
            1 => Vec::new(),
            _ => b"\xff\xfe{\x00}\x00".to_vec(),
        };
        what.push("whole text replaced (BOM, empty or UTF-16)".into());
    }
    let path = c.dir().join("spec.json");
    std::fs::write(&path, &bytes).unwrap();
    c.setup(format!(
        "zoo/{name} (data dir made absolute, $schema dropped) mutated: {}; written to {}",
        what.join(", "),
        path.display()
    ));
    let cmd = Cmd::vaezoo(&["validate", path.to_str().unwrap()]);
    c.check(&cmd, true);
}

/// An odd but plausible number for a numeric field.
fn odd_number(c: &mut Case) -> Value {
    if c.rng.gen_range(0..8) == 0 {
        return wild_number(&mut c.rng);
    }
    pick(
        &mut c.rng,
        &[
            json!(0),
            json!(1),
            json!(2),
            json!(3),
            json!(7),
            // Sizes within the parameter limit whose activations may not fit.
            json!(16_384),
            json!(262_144),
            json!(1_000_000_000),
            json!(4_294_967_296u64),
            json!(u64::MAX),
            json!(0.5),
            json!(1e-9),
        ],
    )
    .clone()
}

/// (b) One or two numeric fields of `zoo/vae-optdigits-tiny.json` (1 case in 20:
/// `zoo/nvae-wiki-tiny.json`) set to odd numbers, trained for 2 steps.
pub fn train_case(c: &mut Case) {
    let name = if c.rng.gen_range(0..20) == 0 {
        "nvae-wiki-tiny.json"
    } else {
        "vae-optdigits-tiny.json"
    };
    let mut doc = zoo_spec(name);
    let numeric = pointers_where(&doc, |_, v| v.is_number());
    let mut what = Vec::new();
    for _ in 0..if c.rng.gen_range(0..4) == 0 { 2 } else { 1 } {
        let at = pick(&mut c.rng, &numeric).clone();
        let value = odd_number(c);
        what.push(format!("{at} = {}", to_text(&value)));
        *doc.pointer_mut(&at).unwrap() = value;
    }
    let path = c.dir().join("spec.json");
    std::fs::write(&path, to_text(&doc)).unwrap();
    let run = c.dir().join("run");
    c.setup(format!(
        "zoo/{name} (data dir made absolute) with {}; written to {}",
        what.join(", "),
        path.display()
    ));
    let cmd = Cmd::vaezoo(&[
        "train",
        path.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--stop-after",
        "2",
    ]);
    let (o, _) = c.check(&cmd, false);
    if !o.success() {
        let left = super::files::entries(c.dir());
        let left: Vec<_> = left
            .iter()
            .filter(|p| p.components().count() == 1 && p.as_os_str() != "spec.json")
            .map(|p| p.display().to_string())
            .collect();
        if !left.is_empty() {
            let detail = format!("the failed train left {} beside its spec", left.join(", "));
            c.flag(Kind::ChangedFiles, &cmd, &o, &detail);
        }
    }
}
