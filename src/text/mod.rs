//! Text data for the text Transformer VAE: sentence corpora ([`corpus`]), the WordPiece
//! tokenizer saved as `tokenizer.json` ([`tokenizer`], trained by [`wordpiece`]),
//! length-bucketed padded batches ([`batches`]) and SacreBLEU-compatible BLEU for greedy
//! reconstructions ([`bleu`]); decoding text from a trained model ([`generate`]) and
//! interpolating latents without mixture weights ([`interpolation`]).

pub mod batches;
pub mod bleu;
pub mod corpus;
pub mod generate;
pub mod interpolation;
pub mod tokenizer;
pub mod wordpiece;

pub use batches::{epoch_batches, pad_batch, EncodedCorpus, TextBatch};
pub use bleu::{corpus_bleu, sentence_bleu, tokenize_13a, BleuScore};
pub use corpus::{load_split, read_classes, Corpus, TextSplit};
pub use generate::{TextModel, TokenCe};
pub use tokenizer::TextTokenizer;
