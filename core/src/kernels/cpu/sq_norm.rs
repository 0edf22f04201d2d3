//! Fused scaled squared norm of each row, `s · Σ_j x_ij²`, in one pass over `x` read in place;
//! the backward pass adds `2 s g_i x_ij` straight into x's gradient. (The generic composition
//! stores `x²`, sums it, scales the sum, and runs each of the three backwards.)

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::fastmath::LANES;
use super::{for_each_row, host_values};
use crate::kernels::Tr;

/// See [`crate::kernels::Kernels::scaled_sq_norm_rows`].
pub(crate) fn forward<M: Dim, N: Dim>(x: Tr<(M, N), f32, Cpu>, scale: f64) -> Tr<(M,), f32, Cpu> {
    let (m, n) = *x.shape();
    let cols = n.size();
    let (x, tape) = x.reshape_like(&(m.size() * cols,)).split_tape();
    let values = host_values(&x);
    let scale = scale as f32;
    let mut norms = vec![0.0f32; m.size()];
    if cols > 0 {
        for (norm, row) in norms.iter_mut().zip(values.chunks_exact(cols)) {
            *norm = scale * sum_of_squares(row);
        }
    }
    let out = x.device().tensor_from_vec(norms, (m,));
    let (out_ghost, x_ghost) = (out.ghost(), x.ghost());
    let mut tape = tape;
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        let gx = grads.get_or_alloc_mut(&x_ghost)?;
        let mut factors: Vec<f32> = g.iter().map(|g| 2.0 * scale * g).collect();
        if cols > 0 {
            for_each_row(gx, cols, &mut factors, |i, acc, f| {
                let row = &values[i * cols..(i + 1) * cols];
                acc.iter_mut().zip(row).for_each(|(a, x)| *a += *f * x);
            });
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}

/// Σ x² over `LANES` partial sums, so that the loop vectorises.
fn sum_of_squares(row: &[f32]) -> f32 {
    let mut sums = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (s, x) in sums.iter_mut().zip(chunk) {
            *s += x * x;
        }
    }
    let rest: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    sums.iter().sum::<f32>() + rest
}
