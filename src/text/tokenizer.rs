//! The text model's tokenizer: a lowercase WordPiece vocabulary, held as a Hugging Face
//! `tokenizers` tokenizer and saved in the run folder as a standard `tokenizer.json`.
//!
//! Either trained on the train split at a spec-set vocabulary size
//! ([`TextTokenizer::train`], deterministically, with [`super::wordpiece`]), or loaded from
//! a given `tokenizer.json` ([`TextTokenizer::load`]; a `bert-base-uncased` one works too).
//! The pipeline is BERT's: `BertNormalizer` (clean, lowercase, strip accents),
//! `BertPreTokenizer` (split on white space and punctuation), greedy longest-match WordPiece
//! with `##` continuations, a `##`-merging decoder.
//!
//! Special tokens, found by name in any loaded tokenizer: `[PAD]` (padding), `[UNK]`
//! (unknown), `[CLS]` (begin of sentence, BOS) and `[SEP]` (end of sentence, EOS). A trained
//! tokenizer numbers them [`PAD_ID`] = 0, 1, 2, 3 in that order.

use std::collections::BTreeMap;
use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    Tokenizer,
};

use super::wordpiece::{train_vocab, CONTINUATION};
use crate::data::DataError;
use crate::error::{Error, Result};

/// The padding token; id [`PAD_ID`] in a trained tokenizer.
pub const PAD: &str = "[PAD]";
/// The unknown-word token.
pub const UNK: &str = "[UNK]";
/// The begin-of-sentence token (BERT's `[CLS]`).
pub const BOS: &str = "[CLS]";
/// The end-of-sentence token (BERT's `[SEP]`).
pub const EOS: &str = "[SEP]";
/// The id of `[PAD]` in a trained tokenizer (`[UNK]` 1, `[CLS]` 2, `[SEP]` 3).
pub const PAD_ID: usize = 0;
/// Longest word WordPiece splits; longer ones become `[UNK]` (BERT's limit).
const MAX_WORD_CHARS: usize = 100;

/// A WordPiece tokenizer with the ids of its special tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad: usize,
    unk: usize,
    bos: usize,
    eos: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pad", &self.pad)
            .field("unk", &self.unk)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tokenizer_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Trains a lowercase WordPiece tokenizer of at most `vocab_size` tokens (special tokens
    /// included) on `sentences`. Deterministic: the same sentences and size give the same
    /// tokenizer, byte for byte in [`to_json`](Self::to_json).
    pub fn train<S: AsRef<str>>(sentences: &[S], vocab_size: usize) -> Result<Self> {
        let normalizer = BertNormalizer::new(true, true, None, true);
        let mut words: BTreeMap<String, u64> = BTreeMap::new();
        for sentence in sentences {
            let mut pre = PreTokenizedString::from(sentence.as_ref());
            pre.normalize(|n| normalizer.normalize(n))
                .and_then(|()| BertPreTokenizer.pre_tokenize(&mut pre))
                .map_err(tokenizer_error)?;
            for (word, _, _) in pre.get_splits(OffsetReferential::Normalized, OffsetType::Byte) {
                *words.entry(word.to_owned()).or_insert(0) += 1;
            }
        }
        if words.is_empty() {
            return Err(Error::Tokenizer("no words to train on".into()));
        }
        let vocab = train_vocab(&words, &[PAD, UNK, BOS, EOS], vocab_size);
        let ids: ahash::AHashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let model = WordPiece::builder()
            .vocab(ids)
            .unk_token(UNK.into())
            .continuing_subword_prefix(CONTINUATION.into())
            .max_input_chars_per_word(MAX_WORD_CHARS)
            .build()
            .map_err(tokenizer_error)?;
        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(normalizer))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new((EOS.into(), 3), (BOS.into(), 2))))
            .with_decoder(Some(WordPieceDecoder::new(CONTINUATION.into(), false)));
        inner.add_special_tokens(&[PAD, UNK, BOS, EOS].map(|t| AddedToken::from(t, true)));
        Self::from_tokenizer(inner).map_err(Error::Tokenizer)
    }

    /// Wraps a tokenizer, looking up its special tokens by name.
    fn from_tokenizer(inner: Tokenizer) -> std::result::Result<Self, String> {
        let id = |name: &str| {
            inner
                .token_to_id(name)
                .map(|id| id as usize)
                .ok_or_else(|| format!("the vocabulary has no {name} token"))
        };
        Ok(Self {
            pad: id(PAD)?,
            unk: id(UNK)?,
            bos: id(BOS)?,
            eos: id(EOS)?,
            inner,
        })
    }

    /// Loads a `tokenizer.json` (one written by [`save`](Self::save), or any WordPiece
    /// tokenizer with the four special tokens); errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |message: String| {
            Error::Data(DataError {
                path: path.to_path_buf(),
                message,
            })
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let inner = Tokenizer::from_bytes(&bytes)
            .map_err(|e| bad(format!("not a tokenizer.json: {e}").replace('\n', " ")))?;
        Self::from_tokenizer(inner).map_err(bad)
    }

    /// The tokenizer as `tokenizer.json` text (pretty JSON, final newline).
    pub fn to_json(&self) -> Result<String> {
        let mut text = self.inner.to_string(true).map_err(tokenizer_error)?;
        text.push('\n');
        Ok(text)
    }

    /// Writes [`to_json`](Self::to_json) to `path` atomically (a temporary file renamed
    /// over it), so a crash never leaves half a tokenizer in the run folder.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::run::write_atomic(path, self.to_json()?.as_bytes())
    }

    /// The `tokenizer_config.json` that Hugging Face's `PreTrainedTokenizerFast` reads beside
    /// `tokenizer.json` (`from_pretrained(folder)`): which tokens are the special ones.
    pub fn hf_config(&self) -> serde_json::Value {
        serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "pad_token": PAD,
            "unk_token": UNK,
            "bos_token": BOS,
            "eos_token": EOS,
            "cls_token": BOS,
            "sep_token": EOS,
            "do_lower_case": true,
            "clean_up_tokenization_spaces": true,
        })
    }

    /// Number of tokens, special tokens included: the embedding and output size.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `[PAD]`.
    pub fn pad_id(&self) -> usize {
        self.pad
    }

    /// The id of `[UNK]`.
    pub fn unk_id(&self) -> usize {
        self.unk
    }

    /// The id of `[CLS]`, the begin-of-sentence token.
    pub fn bos_id(&self) -> usize {
        self.bos
    }

    /// The id of `[SEP]`, the end-of-sentence token.
    pub fn eos_id(&self) -> usize {
        self.eos
    }

    /// The ids of `text`: `[CLS]`, its word pieces, `[SEP]`, at most `max_len` ids in all
    /// (word pieces past `max_len - 2` are dropped; `[SEP]` is always last). `max_len` must
    /// be at least 2.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<usize>> {
        if max_len < 2 {
            return Err(Error::Tokenizer(format!(
                "max_len {max_len} leaves no room for [CLS] and [SEP]"
            )));
        }
        let encoding = self.inner.encode(text, false).map_err(tokenizer_error)?;
        let pieces = encoding.get_ids();
        let kept = pieces.len().min(max_len - 2);
        let mut ids = Vec::with_capacity(kept + 2);
        ids.push(self.bos);
        ids.extend(pieces[..kept].iter().map(|&id| id as usize));
        ids.push(self.eos);
        Ok(ids)
    }

    /// [`encode`](Self::encode) for every sentence.
    pub fn encode_all<S: AsRef<str>>(
        &self,
        sentences: &[S],
        max_len: usize,
    ) -> Result<Vec<Vec<usize>>> {
        sentences
            .iter()
            .map(|s| self.encode(s.as_ref(), max_len))
            .collect()
    }

    /// The text of `ids` (say a greedy decoding): everything up to the first `[SEP]`, special
    /// tokens dropped, `##` pieces joined to their word, then the clean-up BERT's Python
    /// tokenizer applies (`clean_up_tokenization`: no space before `. , ? !`, `" ' "` → `'`,
    /// `n't 's 'm 've 're` attached). On the NVAE-cleaned corpora that restores about 96 %
    /// of sentences exactly; the rest differ in a space after `.`, `,` or `'` (`6. 2`,
    /// `10, 000`, `i. e.`). So score a reconstruction against `decode(encode(source))`, not
    /// the source itself: then a perfect reconstruction has BLEU 100.
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        let end = ids
            .iter()
            .position(|&id| id == self.eos)
            .unwrap_or(ids.len());
        let ids: Vec<u32> = ids[..end].iter().map(|&id| id as u32).collect();
        let text = self.inner.decode(&ids, true).map_err(tokenizer_error)?;
        Ok(clean_up_tokenization(&text))
    }
}

/// `transformers`' `clean_up_tokenization`, applied to the whole decoded string.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
