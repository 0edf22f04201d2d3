//! Fused LayerNorm over the last axis, optionally of a residual sum `x + sub ⊙ mask` (a post-LN
//! sublayer's end with its dropout mask): one pass for the sum, the statistics and the output,
//! one for the backward pass, keeping only the normalised values and each row's reciprocal
//! deviation. Rows run on rayon's pool when there are many.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use rayon::prelude::*;

use super::{
    add_into, for_each_chunk, for_each_row, host_values, into_tensor, recycled, write_or_add,
    zip_chunks, PARALLEL_MIN_ELEMENTS,
};
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
pub(crate) type Residual<M, N> = (Tr<(M, N), f32, Cpu>, Option<Vec<f32>>);

/// See [`crate::kernels::Kernels::residual_layer_norm`].
pub(crate) fn forward_residual<M: Dim, N: Dim>(
    x: Tr<(M, N), f32, Cpu>,
    residual: Option<Residual<M, N>>,
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
        if let Some(m) = &mask {
            assert_eq!(m.len(), len, "one mask value per element");
        }
        add_masked(
            &mut normed,
            &xs,
            &values,
            mask.as_ref().map_or(&[][..], |m| &m[..]),
        );
        (sub.ghost(), mask)
    });
    if sub.is_none() {
        zip_chunks(&mut normed, &xs, |n, x| n.copy_from_slice(x));
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
            let (dgamma, dbeta) = affine_grads(&g, &normed, n);
            add_into(grads.get_or_alloc_mut(&g_ghost)?, &dgamma);
            add_into(grads.get_or_alloc_mut(&b_ghost)?, &dbeta);
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
        let (gx, add) = grad_to_write!(grads, &x_ghost);
        write_or_add(gx, &dsum, add);
        if let Some((sub_ghost, mask)) = &sub {
            if let Some(m) = mask {
                zip_chunks(&mut dsum, m, |d, m| {
                    d.iter_mut().zip(m).for_each(|(d, m)| *d *= m)
                });
            }
            let (gsub, add) = grad_to_write!(grads, sub_ghost);
            write_or_add(gsub, &dsum, add);
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}

/// `out = x + values ⊙ mask` (`mask` empty: `out = x + values`).
fn add_masked(out: &mut [f32], x: &[f32], values: &[f32], mask: &[f32]) {
    for_each_chunk(out, |range, out| {
        let sums = out
            .iter_mut()
            .zip(&x[range.clone()])
            .zip(&values[range.clone()]);
        if mask.is_empty() {
            sums.for_each(|((o, x), v)| *o = x + v);
        } else {
            sums.zip(&mask[range])
                .for_each(|(((o, x), v), m)| *o = x + v * m);
        }
    });
}

/// The gradients of the gain and the shift, `Σ_rows g ⊙ normed` and `Σ_rows g` (rows of `n`
/// values): partial sums over fixed blocks of rows on rayon's pool, added in block order, so
/// the result does not depend on the number of threads.
fn affine_grads(g: &[f32], normed: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
    const BLOCK_ROWS: usize = 64;
    let block = |(gb, nb): (&[f32], &[f32])| {
        let (mut dgamma, mut dbeta) = (vec![0.0f32; n], vec![0.0f32; n]);
        for (gr, nr) in gb.chunks_exact(n).zip(nb.chunks_exact(n)) {
            for (((dg, db), gv), nv) in dgamma.iter_mut().zip(&mut dbeta).zip(gr).zip(nr) {
                *dg += gv * nv;
                *db += gv;
            }
        }
        (dgamma, dbeta)
    };
    let width = (BLOCK_ROWS * n).max(1);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = if g.len() >= PARALLEL_MIN_ELEMENTS {
        g.par_chunks(width)
            .zip(normed.par_chunks(width))
            .map(block)
            .collect()
    } else {
        g.chunks(width)
            .zip(normed.chunks(width))
            .map(block)
            .collect()
    };
    let (mut dgamma, mut dbeta) = (vec![0.0f32; n], vec![0.0f32; n]);
    for (pg, pb) in &partials {
        add_into(&mut dgamma, pg);
        add_into(&mut dbeta, pb);
    }
    (dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::affine_grads;

    /// The same bits on 1 and 2 threads, and the plain column sums within rounding, above the
    /// size that goes parallel.
    #[test]
    fn affine_grads_do_not_depend_on_threads() {
        let (rows, n) = (700, 128);
        let g: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let normed: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 11) % 53) as f32 / 26.0 - 1.0)
            .collect();
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| affine_grads(&g, &normed, n))
        };
        let (one, two) = (on(1), on(2));
        assert_eq!(one, two);
        for j in 0..n {
            let dgamma: f64 = (0..rows)
                .map(|r| f64::from(g[r * n + j] * normed[r * n + j]))
                .sum();
            let dbeta: f64 = (0..rows).map(|r| f64::from(g[r * n + j])).sum();
            assert!((f64::from(one.0[j]) - dgamma).abs() < 1e-3, "gain {j}");
            assert!((f64::from(one.1[j]) - dbeta).abs() < 1e-3, "shift {j}");
        }
    }
}
