//! Reader for the sentence corpora in `zoo/data/` (`wiki_sentences`, `sotu_party`): one
//! sentence per line in `<split>.txt`, and for labelled corpora one class id per line in
//! `<split>.labels` with the class names in `classes.txt` (`id<TAB>name`).
//!
//! The text model trains its tokenizer on the train split and batches every split from
//! here. Every malformed input is a [`DataError`] naming the file (and line), never a panic.

use std::path::Path;

use crate::data::DataError;

/// Which split of a text corpus to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSplit {
    /// `train.txt`: the tokenizer is trained on it.
    Train,
    /// `valid.txt`.
    Valid,
    /// `test.txt`.
    Test,
}

impl TextSplit {
    /// The file stem: `train`, `valid` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            TextSplit::Train => "train",
            TextSplit::Valid => "valid",
            TextSplit::Test => "test",
        }
    }
}

/// The sentences of one split, with their class labels if the corpus has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// One sentence per non-blank line of `<split>.txt`, trimmed, in file order.
    pub sentences: Vec<String>,
    /// Per sentence, its class id (an index into `class_names`); `None` for an unlabelled
    /// corpus (no `<split>.labels` file).
    pub labels: Option<Vec<usize>>,
    /// The class names by id, from `classes.txt`; empty when `labels` is `None`.
    pub class_names: Vec<String>,
}

impl Corpus {
    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.sentences.len()
    }

    /// Whether the split has no sentences.
    pub fn is_empty(&self) -> bool {
        self.sentences.is_empty()
    }
}

fn error(path: &Path, message: impl Into<String>) -> DataError {
    DataError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The lines of a UTF-8 text file (`\n` or `\r\n` ends), or a one-line error naming it: a
/// missing file, or the first line that is not UTF-8.
fn read_lines(path: &Path) -> Result<Vec<String>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        error(path, format!("line {line}: not valid UTF-8"))
    })?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect())
}

/// The class names of `classes.txt`: line `i` must be `i<TAB>name` (ids 0, 1, … in order).
pub fn read_classes(path: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = line
            .split_once('\t')
            .and_then(|(id, name)| Some((id.trim().parse::<usize>().ok()?, name.trim())));
        match parsed {
            Some((id, name)) if id == names.len() && !name.is_empty() => names.push(name.into()),
            _ => {
                return Err(error(
                    path,
                    format!(
                        "line {}: expected `{}<TAB>name`, found {line:?}",
                        i + 1,
                        names.len()
                    ),
                ))
            }
        }
    }
    if names.is_empty() {
        return Err(error(path, "no classes"));
    }
    Ok(names)
}

/// Reads one split of the corpus in `dir`: `<split>.txt`, and, when `<split>.labels` exists,
/// its labels (one class id below the number of classes in `classes.txt` per line of the
/// text file, blank lines included; the labels of blank lines are dropped with them).
pub fn load_split(dir: &Path, split: TextSplit) -> Result<Corpus, DataError> {
    let text_path = dir.join(format!("{}.txt", split.name()));
    let lines = read_lines(&text_path)?;
    let labels_path = dir.join(format!("{}.labels", split.name()));
    let (labels, class_names) = if labels_path.exists() {
        let names = read_classes(&dir.join("classes.txt"))?;
        let labels = read_labels(&labels_path, names.len())?;
        if labels.len() != lines.len() {
            return Err(error(
                &labels_path,
                format!(
                    "{} labels for the {} lines of {}",
                    labels.len(),
                    lines.len(),
                    text_path.display()
                ),
            ));
        }
        (Some(labels), names)
    } else {
        (None, Vec::new())
    };
    let mut sentences = Vec::with_capacity(lines.len());
    let mut kept_labels = labels.as_ref().map(|_| Vec::with_capacity(lines.len()));
    for (i, line) in lines.iter().enumerate() {
        let sentence = line.trim();
        if sentence.is_empty() {
            continue;
        }
        sentences.push(sentence.to_owned());
        if let (Some(kept), Some(all)) = (kept_labels.as_mut(), labels.as_ref()) {
            kept.push(all[i]);
        }
    }
    Ok(Corpus {
        sentences,
        labels: kept_labels,
        class_names,
    })
}

/// One class id per line, each below `num_classes`.
fn read_labels(path: &Path, num_classes: usize) -> Result<Vec<usize>, DataError> {
    let lines = read_lines(path)?;
    let mut labels = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match line.trim().parse::<usize>() {
            Ok(id) if id < num_classes => labels.push(id),
            _ => {
                return Err(error(
                    path,
                    format!(
                        "line {}: expected a class id in 0..{num_classes}, found {line:?}",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok(labels)
}
