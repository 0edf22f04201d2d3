//! Fused LayerNorm over the last axis, optionally of a residual sum `x + sub ⊙ mask` (a post-LN
//! sublayer's end with its dropout mask): one pass for the sum, the statistics and the output,
//! one for the backward pass, keeping only the normalised values and each row's reciprocal
//! deviation. Rows run on rayon's pool when there are many.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::{buffer_of, for_each_row, host_values, into_tensor, recycled, zip_chunks};
use crate::kernels::Tr;

/// See [`crate::kernels::Kernels::layer_norm`].
pub(crate) fn forward<M: Dim, N: Dim>(
    x: Tr<(M, N), f32, Cpu>,
    gamma: Tr<(N,), f32, Cpu>,
    beta: Tr<(N,), f32, Cpu>,
    eps: f64,
) -> Tr<(M, N), f32, Cpu> {
    forward_residual(x, None, gamma, beta, eps)
}

/// A residual added before the norm, with its optional dropout mask.
pub(crate) type Residual<'a, M, N> = (Tr<(M, N), f32, Cpu>, Option<&'a [f32]>);

/// See [`crate::kernels::Kernels::residual_layer_norm`].
pub(crate) fn forward_residual<M: Dim, N: Dim>(
    x: Tr<(M, N), f32, Cpu>,
    residual: Option<Residual<'_, M, N>>,
    gamma: Tr<(N,), f32, Cpu>,
    beta: Tr<(N,), f32, Cpu>,
    eps: f64,
) -> Tr<(M, N), f32, Cpu> {
    let shape = *x.shape();
    let (len, n) = (shape.num_elements(), shape.1.size());
    let (x, x_tape) = x.reshape_like(&(len,)).split_tape();
    let (gamma, g_tape) = gamma.split_tape();
    let (beta, b_tape) = beta.split_tape();
    let mut tape = x_tape.merge(g_tape).merge(b_tape);
    // `normed` starts as the normalised sum's input and ends as the normalised values.
    let xs = host_values(&x);
    let mut normed = recycled(x.device(), len);
    let sub = residual.map(|(sub, mask)| {
        let (sub, sub_tape) = sub.reshape_like(&(len,)).split_tape();
        tape = Merge::<OwnedTape<f32, Cpu>>::merge(std::mem::take(&mut tape), sub_tape);
        let values = host_values(&sub);
        let mask = mask.map(|m| {
            assert_eq!(m.len(), len, "one mask value per element");
            buffer_of(x.device(), m)
        });
        add_masked(
            &mut normed,
            &xs,
            &values,
            mask.as_ref().map_or(&[][..], |m| &m[..]),
        );
        (sub.ghost(), mask)
    });
    if sub.is_none() {
        normed.copy_from_slice(&xs);
    }
    drop(xs);
    let (gs, bs) = (host_values(&gamma), host_values(&beta));
    let rows = len.checked_div(n).unwrap_or(0);
    let mut rstd = vec![0.0f32; rows];
    let mut y = recycled(x.device(), len);
    for_each_row(&mut normed, n, &mut rstd, |_, row, r| {
        let mean = row.iter().sum::<f32>() / n as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        *r = 1.0 / (var + eps as f32).sqrt();
        row.iter_mut().for_each(|v| *v = (*v - mean) * *r);
    });
    let mut none = vec![(); rows];
    for_each_row(&mut y, n, &mut none, |i, out, _| {
        let row = &normed[i * n..(i + 1) * n];
        for (((o, v), g), b) in out.iter_mut().zip(row).zip(gs.iter()).zip(bs.iter()) {
            *o = v * g + b;
        }
    });
    let out = into_tensor(x.device(), y, shape);
    let dev = x.device().clone();
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
                super::add_into(gb, gr);
            }
        }
        // d(sum) per row, then added into x and (masked) into sub.
        let mut dsum = recycled(&dev, len);
        let mut stats = rstd;
        for_each_row(&mut dsum, n, &mut stats, |i, dr, r| {
            let (gr, nr) = (&g[i * n..(i + 1) * n], &normed[i * n..(i + 1) * n]);
            let (mut mean_d, mut mean_dn) = (0.0, 0.0);
            for (((d, gv), gamma), nv) in dr.iter_mut().zip(gr).zip(gs.iter()).zip(nr) {
                *d = gv * gamma;
                mean_d += *d;
                mean_dn += *d * nv;
            }
            mean_d /= n as f32;
            mean_dn /= n as f32;
            for (d, nv) in dr.iter_mut().zip(nr) {
                *d = *r * (*d - mean_d - nv * mean_dn);
            }
        });
        zip_chunks(grads.get_or_alloc_mut(&x_ghost)?, &dsum, |acc, d| {
            acc.iter_mut().zip(d).for_each(|(a, d)| *a += d)
        });
        if let Some((sub_ghost, mask)) = &sub {
            if let Some(m) = mask {
                zip_chunks(&mut dsum, m, |d, m| {
                    d.iter_mut().zip(m).for_each(|(d, m)| *d *= m)
                });
            }
            zip_chunks(grads.get_or_alloc_mut(sub_ghost)?, &dsum, |acc, d| {
                acc.iter_mut().zip(d).for_each(|(a, d)| *a += d)
            });
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}

/// `out = x + values ⊙ mask` (`mask` empty: `out = x + values`).
fn add_masked(out: &mut [f32], x: &[f32], values: &[f32], mask: &[f32]) {
    let sums = out.iter_mut().zip(x).zip(values);
    if mask.is_empty() {
        sums.for_each(|((o, x), v)| *o = x + v);
    } else {
        sums.zip(mask).for_each(|(((o, x), v), m)| *o = x + v * m);
    }
}
