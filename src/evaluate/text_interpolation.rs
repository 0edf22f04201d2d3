//! Interpolation statistics (§F, `interpolation_evaluation.py`): test sentence i (s₁) is paired
//! with sentence N − 1 − i (s₂), for i < N/2; their latents are interpolated at τ ∈ {0, ¼, ½,
//! ¾, 1} ([`TextModel::interpolate`]) and decoded greedily for as many steps as both sources
//! together (a conditional model is given s₁'s class). Per τ: the share of outputs equal to
//! neither s₁ nor s₂, and the mean sentence BLEU against each; and the forward PPL (under
//! `--lm`) of the τ = ½ outputs that differ from both.
//! Every pair's outputs go to `RUN/text/interpolations.tsv`.

use std::path::PathBuf;

use serde::Serialize;
use vaezoo_core::rng::HostRng;
use vaezoo_core::Backend;

use super::reverse_ppl::LanguageModel;
use super::text::{PendingFiles, MAX_TEXT_BATCH};
use super::EvalOptions;
use crate::data::TextSet;
use crate::text::{sentence_bleu, TextModel};
use crate::Result;

/// The interpolation points.
pub const TAUS: [f32; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// The statistics at one τ.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TauStats {
    /// The interpolation point.
    pub tau: f32,
    /// Share of outputs equal to neither end (after the tokenizer's round trip).
    pub differ: f64,
    /// Mean sentence BLEU of the outputs against s₁.
    pub bleu_s1: f64,
    /// Mean sentence BLEU of the outputs against s₂.
    pub bleu_s2: f64,
}

/// What the interpolation evaluation reports.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InterpolationStats {
    /// Sentence pairs.
    pub pairs: usize,
    /// One entry per τ in [`TAUS`].
    pub taus: Vec<TauStats>,
    /// Forward PPL of the τ = ½ outputs that differ from both ends (needs `--lm`; `None` also
    /// when no output differs).
    pub f_ppl_mid: Option<f64>,
}

/// Interpolates the pairs of `test`, whose sentences after the tokenizer's round trip are
/// `references`; every output goes to `files`, to be written as `out` once the evaluation is
/// done. See the module docs.
pub(super) fn interpolation_stats<D: Backend>(
    tm: &TextModel<D>,
    (test, references): (&TextSet, &[String]),
    lm: Option<&LanguageModel<D>>,
    opts: &EvalOptions,
    rng: &mut HostRng,
    (out, files): (PathBuf, &mut PendingFiles),
) -> Result<InterpolationStats> {
    let n = test.corpus.len();
    let pairs = n / 2;
    let mut sums = vec![[0.0f64; 3]; TAUS.len()];
    let mut mid_differing = Vec::new();
    let mut lines = Vec::new();
    let batch = opts.batch_size.min(opts.max_rows).clamp(1, MAX_TEXT_BATCH);
    for start in (0..pairs).step_by(batch) {
        let first: Vec<usize> = (start..(start + batch).min(pairs)).collect();
        let second: Vec<usize> = first.iter().map(|&i| n - 1 - i).collect();
        let obs_a = test.observation(tm.params.device(), &first)?;
        let obs_b = test.observation(tm.params.device(), &second)?;
        let steps = [&obs_a, &obs_b]
            .iter()
            .map(|o| o.tokens.as_ref().map_or(0, |t| t.seq.0 - 1))
            .sum();
        let a = tm.encode(rng, &obs_a)?;
        let b = tm.encode(rng, &obs_b)?;
        let s1: Vec<&str> = first.iter().map(|&i| references[i].as_str()).collect();
        let s2: Vec<&str> = second.iter().map(|&i| references[i].as_str()).collect();
        for (k, &tau) in TAUS.iter().enumerate() {
            let latent = tm.interpolate(&a, &b, tau)?;
            let outputs = tm.decode(rng, &latent, obs_a.labels.as_deref(), steps)?;
            for ((output, &x), &y) in outputs.into_iter().zip(&s1).zip(&s2) {
                let differs = output != x && output != y;
                sums[k][0] += f64::from(u8::from(differs));
                sums[k][1] += sentence_bleu(&output, x).score;
                sums[k][2] += sentence_bleu(&output, y).score;
                lines.push(format!("{tau}\t{x}\t{y}\t{output}"));
                if differs && tau == 0.5 {
                    mid_differing.push(output);
                }
            }
            tm.params.device().empty_cache();
        }
    }
    files.add(out, lines);
    let p = pairs.max(1) as f64;
    let taus = TAUS
        .iter()
        .zip(&sums)
        .map(|(&tau, s)| TauStats {
            tau,
            differ: s[0] / p,
            bleu_s1: s[1] / p,
            bleu_s2: s[2] / p,
        })
        .collect();
    let f_ppl_mid = match lm {
        Some(lm) if !mid_differing.is_empty() => Some(lm.ppl(&mid_differing, opts)?),
        _ => None,
    };
    Ok(InterpolationStats {
        pairs,
        taus,
        f_ppl_mid,
    })
}
