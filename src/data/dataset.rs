//! The data of a run behind one interface, images or sentences: the sizes a model is built
//! for, and seeded epochs of mini-batches as [`Observation`]s. The trainer and the evaluator
//! read data only through it, so a model of either kind trains with the same loop.

use std::path::Path;

use vaezoo_core::axes::{Batch, Feature, Seq};
use vaezoo_core::plugin::{Observation, TokenBatch};
use vaezoo_core::registry::DataDims;
use vaezoo_core::spec::DataSpec;
use vaezoo_core::Backend;

use super::batches::{batch_ranges, epoch_order, gather};
use super::{load_spec_split, ImageSet, Split};
use crate::text::{self, pad_batch, Corpus, EncodedCorpus, TextSplit, TextTokenizer};
use crate::{Error, Result};

/// One split of a run's data.
pub enum Dataset {
    /// Images (features in [0, 1]) with labels.
    Images(ImageSet),
    /// Tokenized sentences, with labels for a labelled corpus.
    Text(TextSet),
}

/// One split of a sentence corpus, encoded with the run's tokenizer.
pub struct TextSet {
    /// The sentences as read.
    pub corpus: Corpus,
    /// Their ids, `[CLS] … [SEP]`.
    pub encoded: EncodedCorpus,
    /// The vocabulary size of the tokenizer that encoded them.
    pub vocab: usize,
}

impl TextSet {
    /// Encodes `corpus` with `tokenizer`, at most `max_len` ids per sentence.
    pub fn new(corpus: Corpus, tokenizer: &TextTokenizer, max_len: usize) -> Result<Self> {
        let encoded = EncodedCorpus::encode(&corpus, tokenizer, max_len)?;
        Ok(Self {
            corpus,
            encoded,
            vocab: tokenizer.vocab_size(),
        })
    }

    /// Rows `rows` as one padded batch of tokens, with their labels.
    pub fn observation<D: Backend>(&self, dev: &D, rows: &[usize]) -> Result<Observation<D>> {
        let b = pad_batch(&self.encoded, rows, 0);
        let tokens = TokenBatch::new(b.ids, b.mask, Seq(b.seq))?;
        Ok(Observation::text(dev, tokens, b.labels))
    }
}

/// The tokenizer a new run of a text spec uses: the spec's `tokenizer` file, or a WordPiece
/// vocabulary of `vocab_size` trained on the (limited) train split. `None` for image data.
pub fn spec_tokenizer(data: &DataSpec) -> Result<Option<TextTokenizer>> {
    match data {
        DataSpec::Idx { .. } => Ok(None),
        DataSpec::Text { .. } => Ok(Some(new_tokenizer(data, None)?)),
    }
}

/// [`spec_tokenizer`] of a text spec, trained on `train` (the train split, read here when
/// `None`) unless the spec gives a tokenizer file.
fn new_tokenizer(data: &DataSpec, train: Option<&Corpus>) -> Result<TextTokenizer> {
    match (data, train) {
        (
            DataSpec::Text {
                tokenizer: Some(path),
                ..
            },
            _,
        ) => TextTokenizer::load(Path::new(path)),
        (DataSpec::Text { vocab_size, .. }, Some(train)) => {
            TextTokenizer::train(&train.sentences, *vocab_size)
        }
        (DataSpec::Text { .. }, None) => {
            new_tokenizer(data, Some(&load_corpus(data, Split::Train)?))
        }
        (DataSpec::Idx { .. }, _) => unreachable!("called for text specs only"),
    }
}

/// The sentences of `split` of a text spec, its limit applied (`Split::Test` reads
/// `test.txt`).
fn load_corpus(data: &DataSpec, split: Split) -> Result<Corpus> {
    let DataSpec::Text {
        dir,
        train_limit,
        test_limit,
        ..
    } = data
    else {
        unreachable!("called for text specs only")
    };
    let (which, limit) = match split {
        Split::Train => (TextSplit::Train, *train_limit),
        Split::Test => (TextSplit::Test, *test_limit),
    };
    let mut corpus = text::load_split(Path::new(dir), which)?;
    if let Some(limit) = limit {
        corpus.sentences.truncate(limit);
        if let Some(labels) = &mut corpus.labels {
            labels.truncate(limit);
        }
    }
    Ok(corpus)
}

impl Dataset {
    /// The `split` of a spec's data (its limit applied); text is encoded with `tokenizer`,
    /// which a text spec requires.
    pub fn load(data: &DataSpec, split: Split, tokenizer: Option<&TextTokenizer>) -> Result<Self> {
        match data {
            DataSpec::Idx { .. } => Ok(Self::Images(load_spec_split(data, split)?)),
            DataSpec::Text { max_len, .. } => {
                let tokenizer = tokenizer.ok_or_else(|| {
                    Error::Tokenizer("a text dataset needs the run's tokenizer".into())
                })?;
                let corpus = load_corpus(data, split)?;
                Ok(Self::Text(TextSet::new(corpus, tokenizer, *max_len)?))
            }
        }
    }

    /// The train split of a new run of `data`, with its tokenizer for text
    /// ([`spec_tokenizer`], trained on the same sentences, read once).
    pub fn load_for_new_run(data: &DataSpec) -> Result<(Self, Option<TextTokenizer>)> {
        let DataSpec::Text { max_len, .. } = data else {
            return Ok((Self::load(data, Split::Train, None)?, None));
        };
        let corpus = load_corpus(data, Split::Train)?;
        let tokenizer = new_tokenizer(data, Some(&corpus))?;
        let set = TextSet::new(corpus, &tokenizer, *max_len)?;
        Ok((Self::Text(set), Some(tokenizer)))
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        match self {
            Self::Images(set) => set.n,
            Self::Text(set) => set.corpus.len(),
        }
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether batches differ in shape (text batches are as long as their longest sentence).
    pub fn shapes_vary(&self) -> bool {
        matches!(self, Self::Text(_))
    }

    /// The sizes a model for this data is built for.
    pub fn dims(&self) -> DataDims {
        match self {
            Self::Images(set) => DataDims {
                features: set.features(),
                classes: set.num_classes(),
                vocab: 0,
            },
            Self::Text(set) => DataDims {
                features: 0,
                classes: set.corpus.class_names.len(),
                vocab: set.vocab,
            },
        }
    }

    /// The mini-batches of `epoch`, as example indices: every example once, in batches of at
    /// most `batch_size`, `len.div_ceil(batch_size)` of them. Images are shuffled; sentences
    /// are also bucketed by length ([`text::epoch_batches`]). A pure function of
    /// `(seed, epoch)`, so a resumed run recomputes it.
    pub fn epoch_batches(&self, batch_size: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
        match self {
            Self::Images(set) => {
                let order = epoch_order(set.n, seed, epoch);
                batch_ranges(set.n, batch_size)
                    .map(|r| order[r].to_vec())
                    .collect()
            }
            Self::Text(set) => text::epoch_batches(&set.encoded.lengths(), batch_size, seed, epoch),
        }
    }

    /// The examples `rows` as one observation on `dev`.
    ///
    /// # Shapes
    /// images → `x: (Batch, Feature)`; text → `tokens: Batch × Seq` (padded), `x: (Batch, 0)`
    pub fn observation<D: Backend>(&self, dev: &D, rows: &[usize]) -> Result<Observation<D>> {
        match self {
            Self::Images(set) => {
                let (mut x, mut labels) = (Vec::new(), Vec::new());
                gather(set, rows, &mut x, &mut labels);
                Ok(Observation {
                    x: dev.tensor_from_vec(x, (Batch(rows.len()), Feature(set.features()))),
                    labels: Some(labels),
                    tokens: None,
                })
            }
            Self::Text(set) => set.observation(dev, rows),
        }
    }
}
