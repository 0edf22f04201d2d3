//! The NVAE's reconstruction loss (`T:classes/VariationalTransformerNVIB.py:110-153`, §D):
//! token cross-entropy with `ignore_index = 0` and reduction `none`, then **a mean over all
//! Nt·B positions** (PAD positions count as 0 in the numerator but are in the denominator).
//! Per example this is Σ_t CE[b, t] / Nt, whose batch mean is the official loss.

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Model, Seq, Vocab};
use vaezoo_core::{Error, Result};
use vaezoo_nvib::num::{c, Dev, Real, Tr};

use crate::dense::Dense;
use crate::embedding::PAD;
use crate::weights::Source;

/// −Σ_t log softmax(logits[b, t])[targets[b, t]] / Nt per example, PAD targets contributing 0.
///
/// # Shapes
/// `logits: (Batch, Seq, Vocab)`, `targets: Batch × Seq` → `(Batch,)`
pub fn token_nll<E: Real, D: Dev<E>>(
    logits: Tr<(Batch, Seq, Vocab), E, D>,
    targets: &[usize],
) -> Result<Tr<(Batch,), E, D>> {
    let (batch, seq, vocab) = *logits.shape();
    let weights = token_weights(targets, batch, seq, vocab)?;
    let rows = targets.len();
    Ok(D::weighted_nll(
        logits.reshape_like(&(rows, vocab)),
        targets,
        &weights,
        batch,
    ))
}

/// [`token_nll`] of the logits `output(hidden)`, computed without them as a tensor
/// (`Kernels::linear_weighted_nll`): the output layer and the loss in one kernel.
///
/// # Shapes
/// `hidden: (Batch, Seq, Model)`, `targets: Batch × Seq` → `(Batch,)`
pub fn projected_token_nll<E: Real, D: Dev<E>>(
    w: &impl Source<E, D>,
    output: &Dense<Model, Vocab>,
    hidden: Tr<(Batch, Seq, Model), E, D>,
    targets: &[usize],
) -> Result<Tr<(Batch,), E, D>> {
    let (batch, seq, _) = *hidden.shape();
    let weights = token_weights(targets, batch, seq, output.out_dim())?;
    Ok(output.weighted_nll(w, hidden, targets, &weights))
}

/// Each position's weight in the loss: −1/Nt, or 0 for a PAD target.
fn token_weights<E: Real>(
    targets: &[usize],
    batch: Batch,
    seq: Seq,
    vocab: Vocab,
) -> Result<Vec<E>> {
    if targets.len() != batch.0 * seq.0 {
        return Err(Error::Shape(format!(
            "{} targets for {} × {} logits",
            targets.len(),
            batch.0,
            seq.0
        )));
    }
    if let Some(&bad) = targets.iter().find(|&&t| t >= vocab.0) {
        return Err(Error::Shape(format!(
            "target {bad} outside the vocabulary of {}",
            vocab.0
        )));
    }
    Ok(targets
        .iter()
        .map(|&t| {
            if t == PAD {
                E::zero()
            } else {
                c::<E>(-1.0 / seq.0 as f64)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check, input, store};

    #[test]
    fn averages_over_every_position_and_ignores_padding() {
        let (params, _) = store(|_| ());
        let logits = vec![0.0, 1.0, 2.0, 5.0, 5.0, 5.0, 1.0, 0.0, 0.0, 3.0, 1.0, 4.0];
        let x = input(&params, logits, (Batch(2), Seq(2), Vocab(3)));
        let nll = token_nll(x, &[2, 1, 1, 0]).unwrap().as_vec();
        let lse = |v: [f32; 3]| v.iter().map(|x| x.exp()).sum::<f32>().ln();
        let want0 = ((lse([0.0, 1.0, 2.0]) - 2.0) + (lse([5.0; 3]) - 5.0)) / 2.0;
        let want1 = (lse([1.0, 0.0, 0.0]) - 0.0) / 2.0;
        assert!(
            (nll[0] - want0).abs() < 1e-6 && (nll[1] - want1).abs() < 1e-6,
            "{nll:?}"
        );
        let bad = || input(&params, vec![0.0; 12], (Batch(2), Seq(2), Vocab(3)));
        assert!(token_nll(bad(), &[3, 1, 1, 0]).is_err());
        assert!(token_nll(bad(), &[1, 1, 0]).is_err());
    }

    #[test]
    fn the_projected_loss_equals_the_loss_of_the_logits() {
        let targets = [1, 0, 3, 2, 2, 0];
        let (params, output) = store(|pb| Dense::new(pb, "out", Model(5), Vocab(4), true));
        let hidden = || {
            let values = (0..30).map(|i| (i as f32 * 0.7).sin()).collect();
            input(&params, values, (Batch(2), Seq(3), Model(5)))
        };
        let fused = projected_token_nll(&params, &output, hidden(), &targets).unwrap();
        let logits = output.forward(&params, hidden());
        let plain = token_nll(logits, &targets).unwrap();
        for (f, p) in fused.as_vec().iter().zip(plain.as_vec()) {
            assert!((f - p).abs() < 1e-6, "{f} vs {p}");
        }
        check(
            |pb| Dense::new(pb, "out", Model(5), Vocab(4), true),
            (Batch(2), Seq(3), Model(5)),
            |output, p, x| projected_token_nll(p, output, x, &targets).unwrap().sum(),
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        check(
            |_| (),
            (Batch(2), Seq(3), Vocab(4)),
            |_, _, x| token_nll(x, &[1, 0, 3, 2, 2, 0]).unwrap().sum(),
        );
    }
}
