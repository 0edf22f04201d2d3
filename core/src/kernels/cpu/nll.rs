//! Fused log-softmax and NLL: each row's log-sum-exp and target log-probability in one pass
//! over the logits, read in place; the backward pass adds `w · (onehot − softmax)` straight
//! into the logits' gradient, so no softmax or log-softmax tensor is ever stored.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::fastmath::{exp, log_sum_exp};
use super::{buffer, host_values, into_tensor};
use crate::kernels::generic::check_nll_inputs;
use crate::kernels::Tr;

/// See [`crate::kernels::Kernels::weighted_nll`].
pub(crate) fn forward<R: Dim, V: Dim, G: Dim>(
    logits: Tr<(R, V), f32, Cpu>,
    targets: &[usize],
    weights: &[f32],
    groups: G,
) -> Tr<(G,), f32, Cpu> {
    let (rows, vocab) = *logits.shape();
    let (rows, v) = (rows.size(), vocab.size());
    check_nll_inputs(rows, v, targets, weights, groups.size());
    let per_group = rows / groups.size();
    let logits = logits.reshape_like(&(rows * v,));
    let (logits, mut tape) = logits.split_tape();
    let kept = host_values(&logits);
    let mut lse = Vec::with_capacity(rows);
    let mut out = buffer(logits.device(), groups.size());
    for (r, row) in kept.chunks_exact(v.max(1)).enumerate().take(rows) {
        let l = log_sum_exp(row);
        lse.push(l);
        if weights[r] != 0.0 {
            out[r / per_group] += weights[r] * (row[targets[r]] - l);
        }
    }
    let out = into_tensor(logits.device(), out, (groups,));
    let (out_ghost, logits_ghost) = (out.ghost(), logits.ghost());
    let (targets, weights) = (targets.to_vec(), weights.to_vec());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        let gl = grads.get_or_alloc_mut(&logits_ghost)?;
        let rows_with_grads = kept
            .chunks_exact(v.max(1))
            .zip(gl.chunks_exact_mut(v.max(1)));
        for (r, (row, acc)) in rows_with_grads.enumerate().take(rows) {
            let scale = g[r / per_group] * weights[r];
            if scale == 0.0 {
                continue;
            }
            for (a, &l) in acc.iter_mut().zip(row) {
                *a -= scale * exp(l - lse[r]);
            }
            acc[targets[r]] += scale;
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}
