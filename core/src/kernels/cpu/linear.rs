//! Fused Linear: `act(x · W + b)` as one GEMM with the bias and the activation in the same
//! pass, and a backward pass of one GEMM per gradient that is needed (none for an input that
//! carries no tape). The grouped form (per-head maps) runs one GEMM per group over strided
//! views of the packed columns, so no group is ever copied out.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::{buffer, host_values, into_tensor};
use crate::kernels::gemm::{matmul_into, Threads, View};
use crate::kernels::generic::GroupDims;
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
    grouped(x, weight, bias, activation, 1)
}

/// See [`crate::kernels::Kernels::grouped_linear`]; `act(y)` on top.
pub(crate) fn grouped<M: Dim, I: Dim, O: Dim, K: Dim, N: Dim, T>(
    x: Tensor<(M, I), f32, Cpu, T>,
    weight: Weight<K, N, f32, Cpu>,
    bias: Option<Tr<(O,), f32, Cpu>>,
    activation: Activation,
    groups: usize,
) -> Tr<(M, O), f32, Cpu>
where
    T: Tape<f32, Cpu>,
    OwnedTape<f32, Cpu>: Merge<T>,
{
    let (m, i) = *x.shape();
    let dims = GroupDims::new(i.size(), &weight, groups);
    let out_dim: O = dims.out_dim();
    let (mk, ks, ns, gs) = (m.size(), dims.k, dims.n, groups);
    // The row widths of x and y.
    let (wi, wo) = (gs * ks, gs * ns);
    // Flat, contiguous views keep the tensors' ids, so gradients land in their buffers.
    let x = x.reshape_like(&(mk * wi,));
    let (x, x_tape) = x.split_tape();
    let (w, out_in) = match weight {
        Weight::InOut(w) => (w.reshape_like(&(gs * ks * ns,)), false),
        Weight::OutIn(w) => (w.reshape_like(&(gs * ks * ns,)), true),
    };
    let (w, w_tape) = w.split_tape();
    let mut tape = w_tape.merge(x_tape);
    let xs = host_values(&x);
    let ws = host_values(&w);

    let mut y = buffer(x.device(), mk * wo);
    let b_ghost = bias.map(|b| {
        let (b, b_tape) = b.split_tape();
        tape = Merge::<OwnedTape<f32, Cpu>>::merge(std::mem::take(&mut tape), b_tape);
        let bs = host_values(&b);
        for row in y.chunks_exact_mut(wo) {
            row.copy_from_slice(&bs);
        }
        b.ghost()
    });
    for j in 0..gs {
        // y_j (M × n) (+)= x_j · W_j
        let dst = (&mut y[j * ns..], wo);
        let lhs = View::strided(&xs[j * ks..], wi, false);
        let rhs = weight_block(&ws, j, (ks, ns), out_in, false);
        matmul_into(
            (mk, ks, ns),
            dst,
            b_ghost.is_some(),
            lhs,
            rhs,
            1.0,
            Threads::BySize,
        );
    }
    // What the backward pass reads to differentiate the activation.
    let saved = match activation {
        Activation::Identity => buffer(x.device(), 0),
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
    let out = into_tensor(x.device(), y, (m, out_dim));

    let out_ghost = out.ghost();
    let w_ghost = w.ghost();
    let x_ghost = T::OWNS_TAPE.then(|| x.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let mut g = take_grad!(grads, &out_ghost);
        match activation {
            Activation::Identity => {}
            _ if activation.derivative_from_output() => {
                for (g, &y) in g.iter_mut().zip(saved.iter()) {
                    *g *= activation.scalar_derivative(0.0, y);
                }
            }
            _ => {
                for (g, &pre) in g.iter_mut().zip(saved.iter()) {
                    *g *= activation.scalar_derivative(pre, activation.scalar(pre));
                }
            }
        }
        // Group j's columns of x (M × k) and of the output's gradient (M × n), or their
        // transposes.
        let x_j = |j: usize, transposed: bool| View::strided(&xs[j * ks..], wi, transposed);
        let g_j = |j: usize, transposed: bool| View::strided(&g[j * ns..], wo, transposed);
        let threads = Threads::BySize;
        {
            let gw = grads.get_or_alloc_mut(&w_ghost)?;
            for j in 0..gs {
                let block = &mut gw[j * ks * ns..];
                if out_in {
                    // gW_j (n × k) += g_jᵀ · x_j
                    let (lhs, rhs) = (g_j(j, true), x_j(j, false));
                    matmul_into((ns, mk, ks), (block, ks), true, lhs, rhs, 1.0, threads);
                } else {
                    // gW_j (k × n) += x_jᵀ · g_j
                    let (lhs, rhs) = (x_j(j, true), g_j(j, false));
                    matmul_into((ks, mk, ns), (block, ns), true, lhs, rhs, 1.0, threads);
                }
            }
        }
        if let Some(b_ghost) = &b_ghost {
            let gb = grads.get_or_alloc_mut(b_ghost)?;
            for row in g.chunks_exact(wo) {
                super::add_into(gb, row);
            }
        }
        if let Some(x_ghost) = &x_ghost {
            let gx = grads.get_or_alloc_mut(x_ghost)?;
            for j in 0..gs {
                // gx_j (M × k) += g_j · W_jᵀ
                let dst = (&mut gx[j * ks..], wi);
                let (lhs, rhs) = (g_j(j, false), weight_block(&ws, j, (ks, ns), out_in, true));
                matmul_into((mk, ns, ks), dst, true, lhs, rhs, 1.0, threads);
            }
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}

/// Group `j`'s block of a weight stored `(k × n)` per group (`InOut`) or `(n × k)` (`OutIn`),
/// as the `k × n` matrix of the product, or its transpose.
fn weight_block(
    ws: &[f32],
    j: usize,
    (k, n): (usize, usize),
    out_in: bool,
    transposed: bool,
) -> View<'_> {
    let cols = if out_in { k } else { n };
    View::strided(&ws[j * k * n..], cols, out_in != transposed)
}
