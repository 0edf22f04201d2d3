//! Length-bucketed, padded mini-batches of encoded sentences for the text model.
//!
//! Sentences of similar length share a batch, so little of it is padding: an epoch shuffles
//! the examples ([`crate::data::epoch_order`]), cuts the order into chunks of
//! `batch_size * BUCKET_BATCHES` examples, sorts each chunk by length (stably), cuts it into
//! batches of at most `batch_size`, and shuffles the order of all batches. Like the image
//! batches, an epoch is a pure function of `(seed, epoch)`, so a resumed run recomputes it.

use super::corpus::Corpus;
use super::tokenizer::TextTokenizer;
use crate::data::epoch_order;
use crate::error::Result;

/// Batches per sorting chunk: larger chunks pad less but mix lengths across batches less.
pub const BUCKET_BATCHES: usize = 50;

/// Added to the run seed for the order of the batches, so that it is a stream of its own
/// and not the one that shuffled the examples.
const BATCH_ORDER_STREAM: u64 = 0x6261_7463_685f_6f72;

/// Encoded sentences (token ids, `[CLS]` … `[SEP]`) with their class labels if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedCorpus {
    /// The ids of each sentence.
    pub ids: Vec<Vec<usize>>,
    /// One class id per sentence, for labelled corpora.
    pub labels: Option<Vec<usize>>,
}

impl EncodedCorpus {
    /// Encodes every sentence of `corpus` with `tokenizer` (at most `max_len` ids each, see
    /// [`TextTokenizer::encode`]), keeping its labels.
    pub fn encode(corpus: &Corpus, tokenizer: &TextTokenizer, max_len: usize) -> Result<Self> {
        Ok(Self {
            ids: tokenizer.encode_all(&corpus.sentences, max_len)?,
            labels: corpus.labels.clone(),
        })
    }

    /// The number of ids of each sentence, for [`epoch_batches`].
    pub fn lengths(&self) -> Vec<usize> {
        self.ids.iter().map(Vec::len).collect()
    }
}

/// One padded batch, `batch` rows of `seq` positions, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBatch {
    /// `batch * seq` token ids, each row padded on the right with the pad id.
    pub ids: Vec<usize>,
    /// `batch * seq` flags, `true` for a real token and `false` for padding.
    pub mask: Vec<bool>,
    /// The unpadded length of each row.
    pub lengths: Vec<usize>,
    /// The class id of each row, for labelled corpora.
    pub labels: Option<Vec<usize>>,
    /// Number of rows.
    pub batch: usize,
    /// Positions per row: the longest row's length.
    pub seq: usize,
}

/// The batches of epoch `epoch`, as example indices: every index of `0..lengths.len()`
/// exactly once, in batches of at most `batch_size` (a `batch_size` of 0 is treated as 1)
/// whose members have similar `lengths`. Depends only on `(lengths, batch_size, seed, epoch)`.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let size = batch_size.max(1);
    let order = epoch_order(lengths.len(), seed, epoch);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(size));
    for chunk in order.chunks(size * BUCKET_BATCHES) {
        let mut chunk = chunk.to_vec();
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(size).map(<[usize]>::to_vec));
    }
    let shuffle = epoch_order(batches.len(), seed.wrapping_add(BATCH_ORDER_STREAM), epoch);
    shuffle
        .into_iter()
        .map(|b| std::mem::take(&mut batches[b]))
        .collect()
}

/// Pads the examples `idx` of `corpus` into one [`TextBatch`], filling with `pad_id` (the
/// tokenizer's `[PAD]`).
///
/// # Panics
/// If an index is out of range (indices come from [`epoch_batches`]).
pub fn pad_batch(corpus: &EncodedCorpus, idx: &[usize], pad_id: usize) -> TextBatch {
    let lengths: Vec<usize> = idx.iter().map(|&i| corpus.ids[i].len()).collect();
    let seq = lengths.iter().copied().max().unwrap_or(0);
    let mut ids = Vec::with_capacity(idx.len() * seq);
    let mut mask = Vec::with_capacity(idx.len() * seq);
    for &i in idx {
        let row = &corpus.ids[i];
        ids.extend_from_slice(row);
        ids.resize(ids.len() + seq - row.len(), pad_id);
        mask.extend((0..seq).map(|p| p < row.len()));
    }
    TextBatch {
        ids,
        mask,
        lengths,
        labels: corpus
            .labels
            .as_ref()
            .map(|l| idx.iter().map(|&i| l[i]).collect()),
        batch: idx.len(),
        seq,
    }
}
