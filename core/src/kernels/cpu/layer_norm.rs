//! Fused LayerNorm over the last axis: one pass for the statistics and the output, one for
//! the backward pass, keeping only the normalised values and each row's reciprocal deviation.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::{add_into, host_values};
use crate::kernels::Tr;

/// See [`crate::kernels::Kernels::layer_norm`].
pub(crate) fn forward<M: Dim, N: Dim>(
    x: Tr<(M, N), f32, Cpu>,
    gamma: Tr<(N,), f32, Cpu>,
    beta: Tr<(N,), f32, Cpu>,
    eps: f64,
) -> Tr<(M, N), f32, Cpu> {
    let shape = *x.shape();
    let n = shape.1.size();
    let x = x.reshape_like(&(shape.num_elements(),));
    let (x, x_tape) = x.split_tape();
    let (gamma, g_tape) = gamma.split_tape();
    let (beta, b_tape) = beta.split_tape();
    let mut tape = x_tape.merge(g_tape).merge(b_tape);
    let mut normed = host_values(&x);
    let (gs, bs) = (host_values(&gamma), host_values(&beta));
    let rows = normed.len().checked_div(n).unwrap_or(0);
    let mut rstd = Vec::with_capacity(rows);
    let mut y = super::cached_zeros(x.device(), normed.len());
    for (row, out) in normed.chunks_exact_mut(n).zip(y.chunks_exact_mut(n)) {
        let mean = row.iter().sum::<f32>() / n as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let r = 1.0 / (var + eps as f32).sqrt();
        rstd.push(r);
        for (((v, o), g), b) in row.iter_mut().zip(out.iter_mut()).zip(&gs).zip(&bs) {
            *v = (*v - mean) * r;
            *o = *v * g + b;
        }
    }
    let out = x.device().tensor_from_vec(y, shape);
    let (out_ghost, x_ghost) = (out.ghost(), x.ghost());
    let (g_ghost, b_ghost) = (gamma.ghost(), beta.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        {
            let gg = grads.get_or_alloc_mut(&g_ghost)?;
            for (gr, nr) in g.chunks_exact(n).zip(normed.chunks_exact(n)) {
                for ((acc, gv), nv) in gg.iter_mut().zip(gr).zip(nr) {
                    *acc += gv * nv;
                }
            }
        }
        {
            let gb = grads.get_or_alloc_mut(&b_ghost)?;
            for gr in g.chunks_exact(n) {
                add_into(gb, gr);
            }
        }
        let gx = grads.get_or_alloc_mut(&x_ghost)?;
        let mut dxhat = vec![0.0; n];
        for (((gr, nr), gxr), r) in g
            .chunks_exact(n)
            .zip(normed.chunks_exact(n))
            .zip(gx.chunks_exact_mut(n))
            .zip(&rstd)
        {
            let (mut mean_d, mut mean_dn) = (0.0, 0.0);
            for (((d, gv), gamma), nv) in dxhat.iter_mut().zip(gr).zip(&gs).zip(nr) {
                *d = gv * gamma;
                mean_d += *d;
                mean_dn += *d * nv;
            }
            mean_d /= n as f32;
            mean_dn /= n as f32;
            for ((acc, d), nv) in gxr.iter_mut().zip(&dxhat).zip(nr) {
                *acc += r * (d - mean_d - nv * mean_dn);
            }
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}
