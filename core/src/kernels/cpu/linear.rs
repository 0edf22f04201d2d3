//! Fused Linear: `act(x · W + b)` as one GEMM with the bias and the activation in the same
//! pass, and a backward pass of one GEMM per gradient that is needed (none for an input that
//! carries no tape). Given a row mask, only the kept rows are computed at all (padding).

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::{add_into, host_values, zip_chunks, Buffer};
use crate::kernels::gemm::{matmul, View};
use crate::kernels::{Tr, Weight};
use crate::layers::Activation;

/// See [`crate::kernels::Kernels::linear`].
pub(crate) fn forward<M: Dim, K: Dim, N: Dim, T>(
    x: Tensor<(M, K), f32, Cpu, T>,
    weight: Weight<K, N, f32, Cpu>,
    bias: Option<Tr<(N,), f32, Cpu>>,
    activation: Activation,
) -> Tr<(M, N), f32, Cpu>
where
    T: Tape<f32, Cpu>,
    OwnedTape<f32, Cpu>: Merge<T>,
{
    forward_rows(x, weight, bias, activation, None)
}

/// See [`crate::kernels::Kernels::linear_rows`]; `None` keeps every row.
pub(crate) fn forward_rows<M: Dim, K: Dim, N: Dim, T>(
    x: Tensor<(M, K), f32, Cpu, T>,
    weight: Weight<K, N, f32, Cpu>,
    bias: Option<Tr<(N,), f32, Cpu>>,
    activation: Activation,
    rows: Option<&[bool]>,
) -> Tr<(M, N), f32, Cpu>
where
    T: Tape<f32, Cpu>,
    OwnedTape<f32, Cpu>: Merge<T>,
{
    let (m, k) = *x.shape();
    let (mk, ks) = (m.size(), k.size());
    // Flat, contiguous views keep the tensors' ids, so gradients land in their buffers.
    let x = x.reshape_like(&(mk * ks,));
    let (x, x_tape) = x.split_tape();
    let (w, out_in, n) = match weight {
        Weight::InOut(w) => {
            let n = w.shape().1;
            (w.reshape_like(&(ks * n.size(),)), false, n)
        }
        Weight::OutIn(w) => {
            let n = w.shape().0;
            (w.reshape_like(&(ks * n.size(),)), true, n)
        }
    };
    let ns = n.size();
    let (w, w_tape) = w.split_tape();
    let mut tape = w_tape.merge(x_tape);
    let ws = host_values(&w);
    // The kept rows, gathered (`None`: all of them, in place).
    let kept: Option<Vec<usize>> = rows.map(|keep| {
        assert_eq!(keep.len(), mk, "one row flag per row");
        (0..mk).filter(|&i| keep[i]).collect()
    });
    let xs = match &kept {
        None => host_values(&x),
        Some(kept) => {
            let all = host_values(&x);
            let mut xa = Buffer::take(kept.len() * ks);
            for (dst, &i) in xa.chunks_exact_mut(ks.max(1)).zip(kept) {
                dst.copy_from_slice(&all[i * ks..(i + 1) * ks]);
            }
            xa
        }
    };
    let a = kept.as_ref().map_or(mk, Vec::len);

    let mut y = Buffer::take(a * ns);
    let b_ghost = bias.map(|b| {
        let (b, b_tape) = b.split_tape();
        tape = Merge::<OwnedTape<f32, Cpu>>::merge(std::mem::take(&mut tape), b_tape);
        let bs = host_values(&b);
        for row in y.chunks_exact_mut(ns.max(1)) {
            row.copy_from_slice(&bs);
        }
        b.ghost()
    });
    matmul(
        (a, ks, ns),
        &mut y,
        b_ghost.is_some(),
        View::rows(&xs, ks),
        if out_in {
            View::transposed(&ws, ks)
        } else {
            View::rows(&ws, ns)
        },
    );
    // What the backward pass reads to differentiate the activation.
    let saved = match activation {
        Activation::Identity => None,
        _ if activation.derivative_from_output() => {
            zip_chunks(&mut y, &[], |y, _| {
                y.iter_mut().for_each(|v| *v = activation.scalar(*v))
            });
            Some(Buffer::copy_of(&y))
        }
        _ => {
            let pre = Buffer::copy_of(&y);
            zip_chunks(&mut y, &[], |y, _| {
                y.iter_mut().for_each(|v| *v = activation.scalar(*v))
            });
            Some(pre)
        }
    };
    let values = match &kept {
        None => y.into_vec(),
        Some(kept) => {
            let mut full = vec![0.0; mk * ns];
            for (src, &i) in y.chunks_exact(ns.max(1)).zip(kept) {
                full[i * ns..(i + 1) * ns].copy_from_slice(src);
            }
            full
        }
    };
    let out = x.device().tensor_from_vec(values, (m, n));

    let out_ghost = out.ghost();
    let w_ghost = w.ghost();
    let x_ghost = T::OWNS_TAPE.then(|| x.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let mut g_full = take_grad!(grads, &out_ghost);
        // The output gradient of the kept rows (modified in place when every row is kept).
        let mut gathered = kept.as_ref().map(|kept| {
            let mut ga = Buffer::take(kept.len() * ns);
            for (dst, &i) in ga.chunks_exact_mut(ns.max(1)).zip(kept) {
                dst.copy_from_slice(&g_full[i * ns..(i + 1) * ns]);
            }
            ga
        });
        let g: &mut [f32] = match &mut gathered {
            Some(ga) => ga,
            None => &mut g_full,
        };
        match &saved {
            None => {}
            Some(y) if activation.derivative_from_output() => zip_chunks(g, y, |g, y| {
                for (g, &y) in g.iter_mut().zip(y) {
                    *g *= activation.scalar_derivative(0.0, y);
                }
            }),
            Some(pre) => zip_chunks(g, pre, |g, pre| {
                for (g, &pre) in g.iter_mut().zip(pre) {
                    *g *= activation.scalar_derivative(pre, activation.scalar(pre));
                }
            }),
        }
        {
            let gw = grads.get_or_alloc_mut(&w_ghost)?;
            if out_in {
                // gW (N × K) += gᵀ · x
                let gt = View::transposed(g, ns);
                matmul((ns, a, ks), gw, true, gt, View::rows(&xs, ks));
            } else {
                // gW (K × N) += xᵀ · g
                let xt = View::transposed(&xs, ks);
                matmul((ks, a, ns), gw, true, xt, View::rows(g, ns));
            }
        }
        if let Some(b_ghost) = &b_ghost {
            // gb (1 × N) += 1ᵀ · g: the column sums as one product.
            let ones = vec![1.0f32; a];
            let gb = grads.get_or_alloc_mut(b_ghost)?;
            matmul(
                (1, a, ns),
                gb,
                true,
                View::rows(&ones, a),
                View::rows(g, ns),
            );
        }
        if let Some(x_ghost) = &x_ghost {
            // gx (kept rows) += g · Wᵀ
            let wt = if out_in {
                View::rows(&ws, ks)
            } else {
                View::transposed(&ws, ns)
            };
            let gx = grads.get_or_alloc_mut(x_ghost)?;
            match &kept {
                None => matmul((a, ns, ks), gx, true, View::rows(g, ns), wt),
                Some(kept) => {
                    let mut dxa = Buffer::take(a * ks);
                    matmul((a, ns, ks), &mut dxa, false, View::rows(g, ns), wt);
                    for (src, &i) in dxa.chunks_exact(ks.max(1)).zip(kept) {
                        add_into(&mut gx[i * ks..(i + 1) * ks], src);
                    }
                }
            }
        }
        put_grad!(grads, &out_ghost, g_full);
        Ok(())
    });
    out.put_tape(tape)
}
