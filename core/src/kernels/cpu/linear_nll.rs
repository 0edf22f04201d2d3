//! Fused output projection and token NLL: the logits `x W + b` are made in a pooled buffer,
//! reduced to each row's log-sum-exp and weighted target log-probability, and turned in place
//! into their own gradient in the backward pass. No logits tensor, no logits gradient and no
//! copy of either ever exists (at a vocabulary of 8,000 they are the largest buffers of a text
//! training step). Rows of weight zero (padding) add nothing to the loss and get no gradient,
//! so only the other rows are projected at all.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::fastmath::{exp, log_sum_exp};
use super::{add_rows, fill_rows, for_each_row, gather_rows, host_values, recycled};
use crate::kernels::gemm::{matmul_into, Threads, View};
use crate::kernels::generic::check_nll_inputs;
use crate::kernels::{Tr, Weight};

/// See [`crate::kernels::Kernels::linear_weighted_nll`].
pub(crate) fn forward<R: Dim, K: Dim, V: Dim, G: Dim>(
    x: Tr<(R, K), f32, Cpu>,
    weight: Weight<K, V, f32, Cpu>,
    bias: Option<Tr<(V,), f32, Cpu>>,
    targets: &[usize],
    weights: &[f32],
    groups: G,
) -> Tr<(G,), f32, Cpu> {
    let (rows, k) = *x.shape();
    let (r, ks) = (rows.size(), k.size());
    let (w, out_in, vocab) = match weight {
        Weight::InOut(w) => {
            let v = w.shape().1;
            (w.reshape_like(&(ks * v.size(),)), false, v)
        }
        Weight::OutIn(w) => {
            let v = w.shape().0;
            (w.reshape_like(&(ks * v.size(),)), true, v)
        }
    };
    let v = vocab.size();
    check_nll_inputs(r, v, targets, weights, groups.size());
    let per_group = r / groups.size();
    let (x, x_tape) = x.reshape_like(&(r * ks,)).split_tape();
    let (w, w_tape) = w.split_tape();
    let mut tape = x_tape.merge(w_tape);
    let ws = host_values(&w);
    // The rows that count, gathered: (row index, its input).
    let active: Vec<usize> = (0..r).filter(|&i| weights[i] != 0.0).collect();
    let xa = gather_rows(x.device(), &host_values(&x), &active, ks);
    let a = active.len();

    // Every value is written: the bias rows then `+=` the product, or `=` the product.
    let mut logits = recycled(x.device(), a * v);
    let dev = x.device().clone();
    let b_ghost = bias.map(|b| {
        let (b, b_tape) = b.split_tape();
        tape = Merge::<OwnedTape<f32, Cpu>>::merge(std::mem::take(&mut tape), b_tape);
        fill_rows(&mut logits, &host_values(&b));
        b.ghost()
    });
    matmul_into(
        (a, ks, v),
        (&mut logits, v),
        b_ghost.is_some(),
        View::rows(&xa, ks),
        if out_in {
            View::transposed(&ws, ks)
        } else {
            View::rows(&ws, v)
        },
        1.0,
        Threads::BySize,
    );
    // Per active row: (log-sum-exp, weighted target log-probability).
    let mut stats = vec![(0.0f32, 0.0f32); a];
    for_each_row(&mut logits, v, &mut stats, |j, row, (lse, term)| {
        let i = active[j];
        *lse = log_sum_exp(row);
        *term = weights[i] * (row[targets[i]] - *lse);
    });
    let mut out = vec![0.0f32; groups.size()];
    for (&i, (_, term)) in active.iter().zip(&stats) {
        out[i / per_group] += term;
    }
    let out = x.device().tensor_from_vec(out, (groups,));

    let (out_ghost, w_ghost) = (out.ghost(), w.ghost());
    let x_ghost = x.ghost();
    let (targets, weights) = (targets.to_vec(), weights.to_vec());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        // The logits become d out / d logits = w·g·(onehot(target) − softmax), row by row.
        let mut dl = logits;
        for_each_row(&mut dl, v, &mut stats, |j, row, (lse, _)| {
            let i = active[j];
            let scale = g[i / per_group] * weights[i];
            if scale == 0.0 {
                row.fill(0.0);
                return;
            }
            for l in row.iter_mut() {
                *l = -scale * exp(*l - *lse);
            }
            row[targets[i]] += scale;
        });
        {
            // Added to the weight's gradient, or written over a new buffer (`grad_to_write`).
            let (gw, add) = grad_to_write!(grads, &w_ghost);
            if out_in {
                // gW (V × K) (+)= dLᵀ · x
                matmul_into(
                    (v, a, ks),
                    (gw, ks),
                    add,
                    View::transposed(&dl, v),
                    View::rows(&xa, ks),
                    1.0,
                    Threads::BySize,
                );
            } else {
                // gW (K × V) (+)= xᵀ · dL
                matmul_into(
                    (ks, a, v),
                    (gw, v),
                    add,
                    View::transposed(&xa, ks),
                    View::rows(&dl, v),
                    1.0,
                    Threads::BySize,
                );
            }
        }
        if let Some(b_ghost) = &b_ghost {
            // gb (1 × V) (+)= 1ᵀ · dL: the column sums as one product.
            let ones = vec![1.0f32; a];
            let (gb, add) = grad_to_write!(grads, b_ghost);
            matmul_into(
                (1, a, v),
                (gb, v),
                add,
                View::rows(&ones, a),
                View::rows(&dl, v),
                1.0,
                Threads::BySize,
            );
        }
        {
            // gx (active rows) += dL · Wᵀ; the other rows' gradient is zero.
            let wt = if out_in {
                View::rows(&ws, ks)
            } else {
                View::transposed(&ws, v)
            };
            let mut dxa = recycled(&dev, a * ks);
            matmul_into(
                (a, v, ks),
                (&mut dxa, ks),
                false,
                View::rows(&dl, v),
                wt,
                1.0,
                Threads::BySize,
            );
            add_rows(grads.get_or_alloc_mut(&x_ghost)?, &dxa, &active, ks);
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}
