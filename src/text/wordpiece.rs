//! A deterministic WordPiece vocabulary trainer (BPE-style merges with `##` continuation
//! pieces, as the Hugging Face `WordPieceTrainer` learns them).
//!
//! The `tokenizers` crate's own trainer numbers the `##x` pieces in hash-map order (`ahash`,
//! seeded per map), which decides ties between equally frequent pairs, so two trainings on
//! the same text can give different vocabularies. Here every order is defined: the alphabet
//! sorted by character, then its `##` forms, and among pairs of equal count the one with
//! the smaller token ids merges first. Same words, same vocabulary, byte for byte.
//!
//! [`super::tokenizer`] trains the text model's tokenizer with it.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

/// The `WordPiece` continuation prefix.
pub const CONTINUATION: &str = "##";

/// A pair only merges if it occurs at least this often (a pair seen once only makes a
/// whole-word token for one rare word).
pub const MIN_PAIR_COUNT: u64 = 2;

/// Learns a WordPiece vocabulary of at most `vocab_size` tokens (more only if the special
/// tokens and the alphabet alone need more) from word counts. The result lists tokens by id:
/// `special` first, then the alphabet (sorted), the `##` form of every letter of it (so a
/// letter seen only word-initially still encodes mid-word later), then merges in order.
pub fn train_vocab(
    words: &BTreeMap<String, u64>,
    special: &[&str],
    vocab_size: usize,
) -> Vec<String> {
    let mut vocab: Vec<String> = Vec::new();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut add = |token: String, vocab: &mut Vec<String>| -> u32 {
        *ids.entry(token.clone()).or_insert_with(|| {
            vocab.push(token);
            (vocab.len() - 1) as u32
        })
    };
    for s in special {
        add(s.to_string(), &mut vocab);
    }
    let alphabet: BTreeSet<char> = words.keys().flat_map(|w| w.chars()).collect();
    for &c in &alphabet {
        add(c.to_string(), &mut vocab);
    }
    for &c in &alphabet {
        add(format!("{CONTINUATION}{c}"), &mut vocab);
    }
    // Each distinct word as a sequence of token ids, with its count.
    let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(words.len());
    let counts: Vec<u64> = words.values().copied().collect();
    for w in words.keys() {
        let seq = w
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let piece = if i == 0 {
                    c.to_string()
                } else {
                    format!("{CONTINUATION}{c}")
                };
                add(piece, &mut vocab)
            })
            .collect();
        seqs.push(seq);
    }
    let mut pair_counts: HashMap<(u32, u32), u64> = HashMap::new();
    let mut pair_words: HashMap<(u32, u32), BTreeSet<usize>> = HashMap::new();
    for (w, seq) in seqs.iter().enumerate() {
        for p in seq.windows(2) {
            *pair_counts.entry((p[0], p[1])).or_insert(0) += counts[w];
            pair_words.entry((p[0], p[1])).or_default().insert(w);
        }
    }
    // Max-heap on (count, reversed pair): the most frequent pair, ties to the smaller ids.
    // Entries go stale when counts change; a popped entry is checked against `pair_counts`.
    let mut heap: BinaryHeap<(u64, std::cmp::Reverse<(u32, u32)>)> = pair_counts
        .iter()
        .map(|(&p, &c)| (c, std::cmp::Reverse(p)))
        .collect();
    while vocab.len() < vocab_size {
        let Some((count, std::cmp::Reverse(pair))) = heap.pop() else {
            break;
        };
        let current = pair_counts.get(&pair).copied().unwrap_or(0);
        if current != count {
            if current > 0 {
                heap.push((current, std::cmp::Reverse(pair)));
            }
            continue;
        }
        if count < MIN_PAIR_COUNT {
            break;
        }
        let (a, b) = (&vocab[pair.0 as usize], &vocab[pair.1 as usize]);
        let merged = format!("{a}{}", b.strip_prefix(CONTINUATION).unwrap_or(b));
        let new_id = add(merged, &mut vocab);
        let affected: Vec<usize> = pair_words.remove(&pair).into_iter().flatten().collect();
        let mut changed: BTreeSet<(u32, u32)> = BTreeSet::new();
        for w in affected {
            let old = std::mem::take(&mut seqs[w]);
            let mut new = Vec::with_capacity(old.len());
            let mut i = 0;
            while i < old.len() {
                if i + 1 < old.len() && (old[i], old[i + 1]) == pair {
                    new.push(new_id);
                    i += 2;
                } else {
                    new.push(old[i]);
                    i += 1;
                }
            }
            for p in old.windows(2) {
                let c = pair_counts.get_mut(&(p[0], p[1])).expect("counted pair");
                *c -= counts[w];
                changed.insert((p[0], p[1]));
            }
            for p in new.windows(2) {
                *pair_counts.entry((p[0], p[1])).or_insert(0) += counts[w];
                pair_words.entry((p[0], p[1])).or_default().insert(w);
                changed.insert((p[0], p[1]));
            }
            seqs[w] = new;
        }
        pair_counts.remove(&pair);
        for p in changed {
            if let Some(&c) = pair_counts.get(&p) {
                if c > 0 {
                    heap.push((c, std::cmp::Reverse(p)));
                }
            }
        }
    }
    vocab
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(text: &str) -> BTreeMap<String, u64> {
        let mut words = BTreeMap::new();
        for w in text.split_whitespace() {
            *words.entry(w.to_string()).or_insert(0) += 1;
        }
        words
    }

    #[test]
    fn merges_the_most_frequent_pairs_first() {
        let words = counts("low low low lower lowest newer newer wider");
        let vocab = train_vocab(&words, &["[PAD]", "[UNK]"], 100);
        assert_eq!(&vocab[..3], ["[PAD]", "[UNK]", "d"]);
        // Alphabet d e i l n o r s t w, then its ## forms, then merges.
        assert_eq!(vocab[12], "##d");
        // l+##o and ##o+##w both occur 5 times: the smaller ids merge first.
        assert_eq!(vocab[22..25], ["lo", "low", "##er"]);
        assert!(vocab.contains(&"low".to_string()));
        assert!(vocab.contains(&"newer".to_string()));
        assert!(
            !vocab.contains(&"wider".to_string()),
            "count 1 never merges"
        );
        let small = train_vocab(&words, &["[PAD]", "[UNK]"], 23);
        assert_eq!(small.len(), 23);
        assert_eq!(small, vocab[..23]);
    }
}
