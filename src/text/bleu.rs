//! Corpus BLEU exactly as SacreBLEU 2.x computes it by default (`BLEU()`: the `13a`
//! tokeniser, case-sensitive, `exp` smoothing, n-grams up to 4, no effective order, the
//! brevity penalty over the whole corpus), for one reference per segment.
//!
//! The text model reports it for greedy reconstructions against their source sentences
//! (the NVIB paper's main reconstruction metric), and [`sentence_bleu`] for interpolations.
//! `tests/text_bleu.rs` checks both against numbers written by the real SacreBLEU
//! (`tests/data/bleu/`).

use std::collections::HashMap;

/// The largest n-gram order BLEU counts.
pub const MAX_NGRAM_ORDER: usize = 4;

/// A BLEU score and its sufficient statistics, with SacreBLEU's field meanings.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    /// BLEU on SacreBLEU's 0..100 scale.
    pub score: f64,
    /// Clipped matching n-grams of each order 1..=4.
    pub counts: [usize; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams of each order 1..=4.
    pub totals: [usize; MAX_NGRAM_ORDER],
    /// The (smoothed) n-gram precisions in percent; 0 where not computed.
    pub precisions: [f64; MAX_NGRAM_ORDER],
    /// The brevity penalty, in 0..=1.
    pub bp: f64,
    /// Hypothesis tokens (after 13a tokenisation) over the corpus.
    pub sys_len: usize,
    /// Reference tokens over the corpus.
    pub ref_len: usize,
}

/// Python's `str.isspace`, which `str.split()` and `str.rstrip()` use: Unicode white space
/// plus the ASCII information separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The characters mteval-v13a surrounds with spaces: `{|}~ [\]^_` `` ` `` ` !"#$%& ()*+
/// :;<=>?@ /` (SacreBLEU's `[\{-\~\[-\` -\&\(-\+\:-\@\/]`).
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// Python's `re.sub` for a pattern of two single-character classes: scans left to right
/// and replaces each non-overlapping match `(a, b)` by `replace(a, b)`.
fn sub_pairs(
    chars: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    replace: impl Fn(&mut Vec<char>, char, char),
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && first(chars[i]) && second(chars[i + 1]) {
            replace(&mut out, chars[i], chars[i + 1]);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// SacreBLEU's `13a` tokenisation (mteval-v13a) of one segment: the tokens joined by single
/// spaces. Like SacreBLEU's BLEU, trailing white space is stripped first; then `<skipped>`
/// and `-\n` are removed, newlines become spaces, `&quot; &amp; &lt; &gt;` are unescaped,
/// and punctuation is split off (periods and commas only next to a non-digit, `-` after a
/// digit).
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .trim_end_matches(is_py_space)
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut chars = Vec::with_capacity(line.len() + 2);
    chars.push(' ');
    for c in line.chars() {
        if is_13a_symbol(c) {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    chars.push(' ');
    let digit = |c: char| c.is_ascii_digit();
    let period_comma = |c: char| c == '.' || c == ',';
    let chars = sub_pairs(
        &chars,
        |c| !digit(c),
        period_comma,
        |o, a, b| {
            o.extend([a, ' ', b, ' ']);
        },
    );
    let chars = sub_pairs(
        &chars,
        period_comma,
        |c| !digit(c),
        |o, a, b| {
            o.extend([' ', a, ' ', b]);
        },
    );
    let chars = sub_pairs(
        &chars,
        digit,
        |c| c == '-',
        |o, a, b| {
            o.extend([a, ' ', b, ' ']);
        },
    );
    let text: String = chars.into_iter().collect();
    text.split(is_py_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The n-grams of orders 1..=4 of `tokens`, with their counts.
fn ngram_counts<'a>(tokens: &'a [&'a str]) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_NGRAM_ORDER {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// Corpus-level sufficient statistics: lengths and, per order, clipped matches and totals.
#[derive(Debug, Default)]
struct Stats {
    sys_len: usize,
    ref_len: usize,
    correct: [usize; MAX_NGRAM_ORDER],
    total: [usize; MAX_NGRAM_ORDER],
}

impl Stats {
    /// Adds one segment pair, both already tokenised.
    fn add(&mut self, hyp: &str, reference: &str) {
        let hyp: Vec<&str> = hyp.split(' ').filter(|t| !t.is_empty()).collect();
        let reference: Vec<&str> = reference.split(' ').filter(|t| !t.is_empty()).collect();
        self.sys_len += hyp.len();
        self.ref_len += reference.len();
        let ref_counts = ngram_counts(&reference);
        for (gram, count) in ngram_counts(&hyp) {
            let n = gram.len() - 1;
            self.total[n] += count;
            self.correct[n] += count.min(ref_counts.get(gram).copied().unwrap_or(0));
        }
    }

    /// SacreBLEU's `BLEU.compute_bleu` with `smooth_method="exp"`, operation for operation.
    fn score(self, effective_order: bool) -> BleuScore {
        let bp = if self.sys_len < self.ref_len {
            if self.sys_len > 0 {
                (1.0 - self.ref_len as f64 / self.sys_len as f64).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let mut precisions = [0.0; MAX_NGRAM_ORDER];
        let mut score = 0.0;
        if self.correct.iter().any(|&c| c > 0) {
            let mut smooth_mteval = 1.0;
            let mut eff_order = MAX_NGRAM_ORDER;
            for (n, precision) in precisions.iter_mut().enumerate() {
                if self.total[n] == 0 {
                    break;
                }
                if effective_order {
                    eff_order = n + 1;
                }
                *precision = if self.correct[n] == 0 {
                    smooth_mteval *= 2.0;
                    100.0 / (smooth_mteval * self.total[n] as f64)
                } else {
                    100.0 * self.correct[n] as f64 / self.total[n] as f64
                };
            }
            // SacreBLEU's `my_log`: log, with log(0) floored to -9999999999.
            let log_sum = precisions[..eff_order]
                .iter()
                .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
                .fold(0.0, |sum, l| sum + l);
            score = bp * (log_sum / eff_order as f64).exp();
        }
        BleuScore {
            score,
            counts: self.correct,
            totals: self.total,
            precisions,
            bp,
            sys_len: self.sys_len,
            ref_len: self.ref_len,
        }
    }
}

/// Corpus BLEU of `hypotheses` against one reference each (segment `i` against
/// `references[i]`), as `sacrebleu.corpus_bleu(hypotheses, [references])` with its defaults.
/// Empty segments count (as zero tokens).
///
/// # Panics
/// If the two slices differ in length (a caller bug: each hypothesis is decoded from its
/// reference).
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(hypotheses: &[H], references: &[R]) -> BleuScore {
    assert_eq!(
        hypotheses.len(),
        references.len(),
        "corpus_bleu: one reference per hypothesis"
    );
    let mut stats = Stats::default();
    for (h, r) in hypotheses.iter().zip(references) {
        stats.add(&tokenize_13a(h.as_ref()), &tokenize_13a(r.as_ref()));
    }
    stats.score(false)
}

/// Sentence BLEU of one hypothesis against one reference, as `sacrebleu.sentence_bleu`:
/// the corpus formula on one segment but with **effective order** (n-gram orders the
/// hypothesis is too short for are left out instead of zeroing the score).
pub fn sentence_bleu(hypothesis: &str, reference: &str) -> BleuScore {
    let mut stats = Stats::default();
    stats.add(&tokenize_13a(hypothesis), &tokenize_13a(reference));
    stats.score(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_13a_splits_like_mteval() {
        assert_eq!(
            tokenize_13a("Hello, world. It costs $3.50 (1990-1995)!"),
            "Hello , world . It costs $ 3.50 ( 1990 - 1995 ) !"
        );
        assert_eq!(tokenize_13a("a &amp;lt; b  \t"), "a < b");
        assert_eq!(tokenize_13a("1,000.5 e.g. x-y"), "1,000.5 e . g . x-y");
        assert_eq!(tokenize_13a("   "), "");
    }

    #[test]
    fn identical_and_disjoint_corpora() {
        let s = ["the cat sat on the mat .", "a dog barked twice"];
        let same = corpus_bleu(&s, &s);
        assert!((same.score - 100.0).abs() < 1e-12);
        assert_eq!((same.bp, same.sys_len, same.ref_len), (1.0, 11, 11));
        let none = corpus_bleu(&["x y z"], &["a b c"]);
        assert_eq!(none.score, 0.0);
        assert_eq!(none.precisions, [0.0; 4]);
    }
}
