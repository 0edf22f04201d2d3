//! Text data for the text Transformer VAE: sentence corpora ([`corpus`]), the WordPiece
//! tokenizer saved as `tokenizer.json` ([`tokenizer`], trained by [`wordpiece`]),
//! length-bucketed padded batches ([`batches`]) and SacreBLEU-compatible BLEU for greedy
//! reconstructions ([`bleu`]).
//!
//! Groundwork: the text model will use all of it; nothing in the CLI calls it yet.

pub mod batches;
pub mod bleu;
pub mod corpus;
pub mod tokenizer;
pub mod wordpiece;

pub use batches::{epoch_batches, pad_batch, EncodedCorpus, TextBatch};
pub use bleu::{corpus_bleu, sentence_bleu, tokenize_13a, BleuScore};
pub use corpus::{load_split, read_classes, Corpus, TextSplit};
pub use tokenizer::TextTokenizer;
