//! The NVAE's reconstruction loss (`T:classes/VariationalTransformerNVIB.py:110-153`, §D):
//! token cross-entropy with `ignore_index = 0` and reduction `none`, then **a mean over all
//! Nt·B positions** (PAD positions count as 0 in the numerator but are in the denominator).
//! Per example this is Σ_t CE[b, t] / Nt, whose batch mean is the official loss.

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Seq, Vocab};
use vaezoo_core::{Error, Result};
use vaezoo_nvib::num::{c, Dev, Real, Tr};

use crate::embedding::PAD;

/// −Σ_t log softmax(logits[b, t])[targets[b, t]] / Nt per example, PAD targets contributing 0.
///
/// # Shapes
/// `logits: (Batch, Seq, Vocab)`, `targets: Batch × Seq` → `(Batch,)`
pub fn token_nll<E: Real, D: Dev<E>>(
    logits: Tr<(Batch, Seq, Vocab), E, D>,
    targets: &[usize],
) -> Result<Tr<(Batch,), E, D>> {
    let (batch, seq, vocab) = *logits.shape();
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
    let rows = targets.len();
    let weights: Vec<E> = targets
        .iter()
        .map(|&t| {
            if t == PAD {
                E::zero()
            } else {
                c::<E>(-1.0 / seq.0 as f64)
            }
        })
        .collect();
    Ok(D::weighted_nll(
        logits.reshape_like(&(rows, vocab)),
        targets,
        &weights,
        batch,
    ))
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
    fn gradients_match_finite_differences() {
        check(
            |_| (),
            (Batch(2), Seq(3), Vocab(4)),
            |_, _, x| token_nll(x, &[1, 0, 3, 2, 2, 0]).unwrap().sum(),
        );
    }
}
