//! vaezoo's BLEU against the real SacreBLEU 2.6.0 on the fixed files in `tests/data/bleu/`
//! (numbers written by `tests/data/bleu/sacrebleu_reference.py`).

use std::path::{Path, PathBuf};

use serde_json::Value;
use vaezoo::text::{corpus_bleu, sentence_bleu, tokenize_13a, BleuScore};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bleu")
}

/// One segment per `\n`-terminated line, empty lines kept (as the Python script reads them).
fn lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    let body = text.strip_suffix('\n').expect("final newline");
    body.split('\n').map(str::to_owned).collect()
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("sacrebleu.json")).unwrap()).unwrap()
}

fn close(ours: f64, theirs: &Value, what: &str) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() <= 1e-9,
        "{what}: ours {ours}, sacrebleu {theirs}"
    );
}

fn assert_matches(ours: &BleuScore, theirs: &Value, what: &str) {
    close(ours.score, &theirs["score"], &format!("{what} score"));
    close(ours.bp, &theirs["bp"], &format!("{what} bp"));
    for n in 0..4 {
        close(
            ours.precisions[n],
            &theirs["precisions"][n],
            &format!("{what} precision {}", n + 1),
        );
        assert_eq!(
            ours.counts[n] as u64,
            theirs["counts"][n].as_u64().unwrap(),
            "{what} counts"
        );
        assert_eq!(
            ours.totals[n] as u64,
            theirs["totals"][n].as_u64().unwrap(),
            "{what} totals"
        );
    }
    assert_eq!(
        ours.sys_len as u64,
        theirs["sys_len"].as_u64().unwrap(),
        "{what} sys_len"
    );
    assert_eq!(
        ours.ref_len as u64,
        theirs["ref_len"].as_u64().unwrap(),
        "{what} ref_len"
    );
}

#[test]
fn fixture_is_what_the_script_scored() {
    let r = reference();
    assert_eq!(r["sacrebleu_version"], "2.6.0");
    assert_eq!(
        r["signature"],
        "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    );
    let (hyps, refs) = (lines("hyp.txt"), lines("ref.txt"));
    assert_eq!((hyps.len(), refs.len()), (48, 48));
    assert!(hyps.iter().any(String::is_empty) && hyps.iter().any(|h| h == "   "));
}

#[test]
fn tokenize_13a_matches_sacrebleu_line_by_line() {
    let r = reference();
    for (file, key) in [("hyp.txt", "hyp"), ("ref.txt", "ref")] {
        for (i, line) in lines(file).iter().enumerate() {
            assert_eq!(
                tokenize_13a(line),
                r["tokenized_13a"][key][i].as_str().unwrap(),
                "{file} line {}",
                i + 1
            );
        }
    }
}

#[test]
fn corpus_bleu_matches_sacrebleu() {
    let ours = corpus_bleu(&lines("hyp.txt"), &lines("ref.txt"));
    assert_matches(&ours, &reference()["corpus"], "corpus");
    assert!((ours.score - 65.6483339659056).abs() < 1e-9);
}

#[test]
fn sentence_bleu_matches_sacrebleu_per_line() {
    let r = reference();
    for (i, (h, rf)) in lines("hyp.txt").iter().zip(lines("ref.txt")).enumerate() {
        let what = format!("line {}", i + 1);
        assert_matches(&sentence_bleu(h, &rf), &r["sentence_bleu"][i], &what);
        // A one-segment corpus is SacreBLEU's sentence score without effective order.
        let one = corpus_bleu(&[h], &[&rf]);
        assert_matches(&one, &r["sentence_score_no_effective_order"][i], &what);
    }
}

#[test]
#[should_panic(expected = "one reference per hypothesis")]
fn corpus_bleu_needs_one_reference_per_hypothesis() {
    corpus_bleu(&["a"], &["a", "b"]);
}
