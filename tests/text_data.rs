//! Text corpora from `zoo/data/` and their length-bucketed batches: split sizes and labels as
//! the data README gives them, one-line errors for bad files, seeded epochs that visit every
//! sentence exactly once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use vaezoo::text::{
    epoch_batches, load_split, pad_batch, read_classes, EncodedCorpus, TextSplit, TextTokenizer,
};

fn zoo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("zoo/data")
        .join(name)
}

#[test]
fn shipped_corpora_have_the_documented_sizes_and_labels() {
    let wiki = zoo("wiki_sentences");
    for (split, n) in [
        (TextSplit::Train, 13_545),
        (TextSplit::Valid, 1_384),
        (TextSplit::Test, 1_480),
    ] {
        let c = load_split(&wiki, split).unwrap();
        assert_eq!(
            (c.len(), c.labels.is_none(), c.class_names.len()),
            (n, true, 0),
            "{}",
            split.name()
        );
    }
    // raw/ holds the cased source of the same lines, read the same way.
    let raw = load_split(&wiki.join("raw"), TextSplit::Valid).unwrap();
    assert_eq!(raw.len(), 1_384);
    assert!(raw.sentences[0].chars().next().unwrap().is_uppercase());

    let sotu = zoo("sotu_party");
    assert_eq!(
        read_classes(&sotu.join("classes.txt")).unwrap(),
        ["Democratic", "Republican"]
    );
    for (split, dem, rep) in [
        (TextSplit::Train, 10_672, 7_057),
        (TextSplit::Valid, 1_456, 1_096),
        (TextSplit::Test, 1_507, 976),
    ] {
        let c = load_split(&sotu, split).unwrap();
        let labels = c.labels.as_ref().unwrap();
        assert_eq!(c.len(), dem + rep);
        assert_eq!(labels.len(), c.len());
        assert_eq!(labels.iter().filter(|&&l| l == 0).count(), dem);
        assert_eq!(c.class_names, ["Democratic", "Republican"]);
        assert!(!c.is_empty());
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn blank_lines_are_skipped_with_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "valid.txt",
        b"first one\r\n\n  \nsecond one  \nthird\n",
    );
    write(dir.path(), "valid.labels", b"1\n0\n0\n0\n1\n");
    write(dir.path(), "classes.txt", b"0\tno\n1\tyes\n");
    let c = load_split(dir.path(), TextSplit::Valid).unwrap();
    assert_eq!(c.sentences, ["first one", "second one", "third"]);
    assert_eq!(c.labels, Some(vec![1, 0, 1]));
    assert_eq!(c.class_names, ["no", "yes"]);
}

#[test]
fn bad_files_are_one_line_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = |split| load_split(d, split).unwrap_err().to_string();

    let missing = d.join("test.txt");
    assert!(err(TextSplit::Test).starts_with(&format!("{}: cannot read", missing.display())));

    let bad = write(d, "train.txt", b"fine\nalso fine\nbad \xff byte\n");
    assert_eq!(
        err(TextSplit::Train),
        format!("{}: line 3: not valid UTF-8", bad.display())
    );

    write(d, "valid.txt", b"a\nb\nc\n");
    let labels = write(d, "valid.labels", b"0\n1\n");
    let classes = d.join("classes.txt");
    assert!(err(TextSplit::Valid).starts_with(&format!("{}: cannot read", classes.display())));

    write(d, "classes.txt", b"0\tDemocratic\n2\tRepublican\n");
    assert_eq!(
        err(TextSplit::Valid),
        format!(
            "{}: line 2: expected `1<TAB>name`, found \"2\\tRepublican\"",
            classes.display()
        )
    );
    write(d, "classes.txt", b"");
    assert_eq!(
        err(TextSplit::Valid),
        format!("{}: no classes", classes.display())
    );
    write(d, "classes.txt", b"0\tDemocratic\n1\tRepublican\n");

    assert_eq!(
        err(TextSplit::Valid),
        format!(
            "{}: 2 labels for the 3 lines of {}",
            labels.display(),
            d.join("valid.txt").display()
        )
    );
    for (content, found) in [
        (&b"0\nrepublican\n1\n"[..], "\"republican\""),
        (b"0\n2\n1\n", "\"2\""),
    ] {
        write(d, "valid.labels", content);
        assert_eq!(
            err(TextSplit::Valid),
            format!(
                "{}: line 2: expected a class id in 0..2, found {found}",
                labels.display()
            )
        );
    }
    for e in [
        err(TextSplit::Valid),
        err(TextSplit::Train),
        err(TextSplit::Test),
    ] {
        assert!(!e.contains('\n'), "{e}");
    }
}

/// 200 synthetic sentences of lengths 3..=40 with labels.
fn synthetic() -> EncodedCorpus {
    let ids = (0..200)
        .map(|i| (0..3 + (i * 7) % 38).map(|t| 4 + t + i).collect())
        .collect();
    EncodedCorpus {
        ids,
        labels: Some((0..200).map(|i| i % 3).collect()),
    }
}

#[test]
fn epochs_are_seeded_and_visit_every_example_once() {
    let corpus = synthetic();
    let lengths = corpus.lengths();
    let a = epoch_batches(&lengths, 16, 7, 0);
    assert_eq!(
        a,
        epoch_batches(&lengths, 16, 7, 0),
        "same seed and epoch, same batches"
    );
    assert_ne!(a, epoch_batches(&lengths, 16, 7, 1), "epochs differ");
    assert_ne!(a, epoch_batches(&lengths, 16, 8, 0), "seeds differ");
    for batches in [
        a,
        epoch_batches(&lengths, 16, 7, 1),
        epoch_batches(&lengths, 7, 3, 2),
    ] {
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 16));
    }
    assert_eq!(epoch_batches(&lengths, 16, 7, 0).len(), 13);
    assert_eq!(
        epoch_batches(&[3, 4], 0, 1, 0).len(),
        2,
        "batch size 0 counts as 1"
    );
    assert!(epoch_batches(&[], 16, 1, 0).is_empty());
}

#[test]
fn bucketing_keeps_padding_low() {
    let lengths = synthetic().lengths();
    let padding = |batches: &[Vec<usize>]| -> usize {
        let max = |b: &Vec<usize>| b.iter().map(|&i| lengths[i]).max().unwrap();
        batches
            .iter()
            .map(|b| b.iter().map(|&i| max(b) - lengths[i]).sum::<usize>())
            .sum()
    };
    let bucketed = epoch_batches(&lengths, 10, 5, 0);
    let order = vaezoo::data::epoch_order(200, 5, 0);
    let random: Vec<Vec<usize>> = order.chunks(10).map(<[usize]>::to_vec).collect();
    // All 200 fit in one sorting chunk: each batch is a run of 10 consecutive lengths.
    assert!(
        padding(&bucketed) * 5 < padding(&random),
        "{} vs {}",
        padding(&bucketed),
        padding(&random)
    );
    let firsts: HashSet<usize> = bucketed.iter().map(|b| lengths[b[0]]).collect();
    assert!(
        firsts.len() > 5,
        "the batch order is shuffled, not sorted by length"
    );
}

#[test]
fn padded_batches_have_masks_lengths_and_labels() {
    let corpus = EncodedCorpus {
        ids: vec![vec![2, 10, 11, 3], vec![2, 3], vec![2, 12, 3]],
        labels: Some(vec![1, 0, 1]),
    };
    let b = pad_batch(&corpus, &[2, 0, 1], 0);
    assert_eq!((b.batch, b.seq), (3, 4));
    assert_eq!(b.ids, [2, 12, 3, 0, 2, 10, 11, 3, 2, 3, 0, 0]);
    let t = true;
    let f = false;
    assert_eq!(b.mask, [t, t, t, f, t, t, t, t, t, t, f, f]);
    assert_eq!(b.lengths, [3, 4, 2]);
    assert_eq!(b.labels, Some(vec![1, 1, 0]));
    let unlabelled = EncodedCorpus {
        labels: None,
        ..corpus
    };
    let one = pad_batch(&unlabelled, &[1], 9);
    assert_eq!((one.ids, one.labels, one.seq), (vec![2, 3], None, 2));
    assert_eq!(pad_batch(&unlabelled, &[], 0).seq, 0);
}

#[test]
fn a_labelled_corpus_encodes_into_batches() {
    let sotu = load_split(&zoo("sotu_party"), TextSplit::Valid).unwrap();
    let tok = TextTokenizer::train(&sotu.sentences, 600).unwrap();
    let encoded = EncodedCorpus::encode(&sotu, &tok, 32).unwrap();
    assert_eq!(encoded.ids.len(), sotu.len());
    assert_eq!(encoded.labels, sotu.labels);
    assert!(encoded
        .ids
        .iter()
        .all(|s| s.len() <= 32 && s[0] == tok.bos_id()));
    let batches = epoch_batches(&encoded.lengths(), 64, 1, 0);
    let b = pad_batch(&encoded, &batches[0], tok.pad_id());
    assert_eq!(b.ids.len(), b.batch * b.seq);
    for (row, &len) in b.lengths.iter().enumerate() {
        assert_eq!(b.ids[row * b.seq + len - 1], tok.eos_id());
        assert!(b.ids[row * b.seq + len..(row + 1) * b.seq]
            .iter()
            .all(|&id| id == tok.pad_id()));
    }
}
