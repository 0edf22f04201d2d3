//! Fused Bernoulli negative log-likelihood with logits: one pass computes each row's binary
//! cross-entropy and keeps `sigmoid(l) − x`, which the backward pass only scales by the row's
//! incoming gradient.

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use rayon::prelude::*;

use super::fastmath::{exp, ln, LANES};
use super::{host_copy, host_values};
use crate::kernels::Tr;

/// Below this many elements a pass stays on the calling thread (waking rayon's pool costs more).
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// The NLL of a pixel `x` under the logit `l`, softplus(l) − l·x, computed as
/// max(l, 0) − l·x + ln(1 + e^−|l|); `l` becomes the NLL's derivative σ(l) − x.
#[inline(always)]
fn element(l: &mut f32, x: f32) -> f32 {
    let e = exp(-l.abs());
    let nll = l.max(0.0) - *l * x + ln(1.0 + e);
    let sigmoid = if *l >= 0.0 { 1.0 } else { e } / (1.0 + e);
    *l = sigmoid - x;
    nll
}

/// See [`crate::kernels::Kernels::bernoulli_nll`].
pub(crate) fn forward<M: Dim, N: Dim>(
    logits: Tr<(M, N), f32, Cpu>,
    x: &Tensor<(M, N), f32, Cpu>,
) -> Tr<(M,), f32, Cpu> {
    let (m, n) = *logits.shape();
    let cols = n.size();
    let logits = logits.reshape_like(&(m.size() * cols,));
    let (logits, tape) = logits.split_tape();
    // `residual` starts as the logits and ends as sigmoid(l) − x.
    let mut residual = host_copy(&logits);
    let data = host_values(&x.clone().reshape_like(&(m.size() * cols,)));
    let mut nll = vec![0.0f32; m.size()];
    let row = |(r, (l, x)): (&mut f32, (&mut [f32], &[f32]))| {
        // LANES partial sums: a single running sum is a serial chain that keeps the whole loop
        // (with its exp and ln) scalar.
        let mut sums = [0.0f32; LANES];
        let mut chunks = l.chunks_exact_mut(LANES).zip(x.chunks_exact(LANES));
        for (l, x) in &mut chunks {
            for ((s, l), &x) in sums.iter_mut().zip(l).zip(x) {
                *s += element(l, x);
            }
        }
        let tail = l.len() - l.len() % LANES;
        let rest: f32 = (l[tail..].iter_mut().zip(&x[tail..]))
            .map(|(l, &x)| element(l, x))
            .sum();
        *r = sums.iter().sum::<f32>() + rest;
    };
    if cols > 0 && residual.len() >= PARALLEL_MIN_ELEMENTS {
        let rows = residual
            .par_chunks_exact_mut(cols)
            .zip(data.par_chunks_exact(cols));
        nll.par_iter_mut().zip(rows).for_each(row);
    } else if cols > 0 {
        let rows = residual.chunks_exact_mut(cols).zip(data.chunks_exact(cols));
        nll.iter_mut().zip(rows).for_each(row);
    }
    let out = logits.device().tensor_from_vec(nll, (m,));
    let (out_ghost, logits_ghost) = (out.ghost(), logits.ghost());
    let mut tape = tape;
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        // One value per logit: added, or written over a new buffer (`grad_to_write`).
        let (gl, add) = grad_to_write!(grads, &logits_ghost);
        if cols > 0 {
            for ((acc, res), g) in gl
                .chunks_exact_mut(cols)
                .zip(residual.chunks_exact(cols))
                .zip(&g)
            {
                for (a, r) in acc.iter_mut().zip(res) {
                    *a = if add { *a + g * r } else { g * r };
                }
            }
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}
