//! Fused Linear: `act(x · W + b)` as one GEMM with the bias and the activation in the same
//! pass, and a backward pass of one GEMM per gradient that is needed (none for an input that
//! carries no tape).

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::host_values;
use super::mixture::join;
use super::scratch::{give_back, scratch_values};
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
    // Copies kept for the backward pass, in pooled buffers given back after it.
    let (xs, ws) = join(mk * ks, || scratch_values(&x), || scratch_values(&w));

    let mut y = super::cached_zeros(x.device(), mk * ns);
    let b_ghost = bias.map(|b| {
        let (b, b_tape) = b.split_tape();
        tape = Merge::<OwnedTape<f32, Cpu>>::merge(std::mem::take(&mut tape), b_tape);
        let bs = host_values(&b);
        for row in y.chunks_exact_mut(ns) {
            row.copy_from_slice(&bs);
        }
        b.ghost()
    });
    matmul(
        (mk, ks, ns),
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
        Activation::Identity => Vec::new(),
        _ if activation.derivative_from_output() => {
            y.iter_mut().for_each(|v| *v = activation.scalar(*v));
            y.clone()
        }
        _ => {
            let pre = y.clone();
            y.iter_mut().for_each(|v| *v = activation.scalar(*v));
            pre
        }
    };
    let out = x.device().tensor_from_vec(y, (m, n));

    let out_ghost = out.ghost();
    let w_ghost = w.ghost();
    let x_ghost = T::OWNS_TAPE.then(|| x.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let mut g = take_grad!(grads, &out_ghost);
        match activation {
            Activation::Identity => {}
            _ if activation.derivative_from_output() => {
                for (g, &y) in g.iter_mut().zip(&saved) {
                    *g *= activation.scalar_derivative(0.0, y);
                }
            }
            _ => {
                for (g, &pre) in g.iter_mut().zip(&saved) {
                    *g *= activation.scalar_derivative(pre, activation.scalar(pre));
                }
            }
        }
        {
            let gw = grads.get_or_alloc_mut(&w_ghost)?;
            if out_in {
                // gW (N × K) += gᵀ · x
                let gt = View::transposed(&g, ns);
                matmul((ns, mk, ks), gw, true, gt, View::rows(&xs, ks));
            } else {
                // gW (K × N) += xᵀ · g
                let xt = View::transposed(&xs, ks);
                matmul((ks, mk, ns), gw, true, xt, View::rows(&g, ns));
            }
        }
        if let Some(b_ghost) = &b_ghost {
            let gb = grads.get_or_alloc_mut(b_ghost)?;
            for row in g.chunks_exact(ns) {
                super::add_into(gb, row);
            }
        }
        if let Some(x_ghost) = &x_ghost {
            // gx (M × K) += g · Wᵀ
            let wt = if out_in {
                View::rows(&ws, ks)
            } else {
                View::transposed(&ws, ns)
            };
            let gx = grads.get_or_alloc_mut(x_ghost)?;
            matmul((mk, ns, ks), gx, true, View::rows(&g, ns), wt);
        }
        put_grad!(grads, &out_ghost, g);
        give_back(xs);
        give_back(ws);
        Ok(())
    });
    out.put_tape(tape)
}
