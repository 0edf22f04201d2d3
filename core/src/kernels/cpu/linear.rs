//! Fused Linear: `act(x · W + b)` as one GEMM with the bias and the activation in the same
//! pass, and a backward pass of one GEMM per gradient that is needed (none for an input that
//! carries no tape). The grouped form (per-head maps) runs one GEMM per group over strided
//! views of the packed columns, so no group is ever copied out. Given a row mask that leaves
//! out many rows (padding), only the kept rows are gathered and computed; one that leaves out
//! few has every row computed in place and the others zeroed ([`super::rows::row_plan`]).

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::{
    add_rows, buffer_of, compact_rows, fill_rows, gather_rows, host_values, into_tensor, recycled,
    row_plan, scatter_rows, zero_rows, zip_chunks, Buffer, HostValues,
};
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
    grouped(x, weight, bias, activation, 1, None, None)
}

/// See [`crate::kernels::Kernels::linear_rows`].
pub(crate) fn forward_rows<M: Dim, K: Dim, N: Dim>(
    x: Tr<(M, K), f32, Cpu>,
    weight: Weight<K, N, f32, Cpu>,
    bias: Option<Tr<(N,), f32, Cpu>>,
    activation: Activation,
    rows: Option<&[bool]>,
    dropout: Option<Vec<f32>>,
) -> Tr<(M, N), f32, Cpu> {
    grouped(x, weight, bias, activation, 1, rows, dropout)
}

/// See [`crate::kernels::Kernels::grouped_linear`]; `act(y) ⊙ dropout` on top (`dropout`: a
/// scaled keep mask as wide as the output, `None`: none), of the rows `rows` keeps (`None`: all;
/// the others are zero and pass no gradient back).
pub(crate) fn grouped<M: Dim, I: Dim, O: Dim, K: Dim, N: Dim, T>(
    x: Tensor<(M, I), f32, Cpu, T>,
    weight: Weight<K, N, f32, Cpu>,
    bias: Option<Tr<(O,), f32, Cpu>>,
    activation: Activation,
    groups: usize,
    rows: Option<&[bool]>,
    dropout: Option<Vec<f32>>,
) -> Tr<(M, O), f32, Cpu>
where
    T: Tape<f32, Cpu>,
    OwnedTape<f32, Cpu>: Merge<T>,
{
    let (m, i) = *x.shape();
    let dims = GroupDims::new(i.size(), &weight, groups);
    let out_dim: O = dims.out_dim();
    let (m_all, ks, ns, gs) = (m.size(), dims.k, dims.n, groups);
    // The row widths of x and y.
    let (wi, wo) = (gs * ks, gs * ns);
    // Flat, contiguous views keep the tensors' ids, so gradients land in their buffers.
    let x = x.reshape_like(&(m_all * wi,));
    let (x, x_tape) = x.split_tape();
    let (w, out_in) = match weight {
        Weight::InOut(w) => (w.reshape_like(&(gs * ks * ns,)), false),
        Weight::OutIn(w) => (w.reshape_like(&(gs * ks * ns,)), true),
    };
    let (w, w_tape) = w.split_tape();
    let mut tape = w_tape.merge(x_tape);
    let ws = host_values(&w);
    if let Some(keep) = rows {
        assert_eq!(keep.len(), m_all, "one row flag per row");
    }
    // The kept rows of x, gathered (`None`: all of them, in place, with the left-out rows
    // `zeroed` in the output and in its gradient); `mk` of them.
    let (kept, zeroed) = row_plan(rows, &host_values(&x), wi);
    let xs = match &kept {
        None => host_values(&x),
        Some(kept) => HostValues::Owned(gather_rows(x.device(), &host_values(&x), kept, wi)),
    };
    let mk = kept.as_ref().map_or(m_all, Vec::len);
    let dev = x.device().clone();

    // Every value is written: the bias rows then `+=` each product, or `=` each product.
    let mut y = recycled(x.device(), mk * wo);
    let b_ghost = bias.map(|b| {
        let (b, b_tape) = b.split_tape();
        tape = Merge::<OwnedTape<f32, Cpu>>::merge(std::mem::take(&mut tape), b_tape);
        fill_rows(&mut y, &host_values(&b));
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
    // What the backward pass reads to differentiate the activation: the kernel's own output
    // buffer (its computed rows) when that holds the activation's output, or values with its
    // signs for an activation whose derivative depends on the sign alone (dropout's survivors
    // are scaled by a positive factor, and where dropout zeroed a value its gradient is zero
    // whatever the derivative); else a copy of the activation's output or input.
    let activate = |y: &mut [f32], _: &[f32]| y.iter_mut().for_each(|v| *v = activation.scalar(*v));
    let output_suffices = dropout.is_none() || activation.derivative_from_sign();
    let mut saved = match activation {
        Activation::Identity => Saved::Nothing,
        _ if activation.derivative_from_output() => {
            zip_chunks(&mut y, &[], activate);
            match output_suffices {
                true => Saved::Output,
                false => Saved::Activated(HostValues::Owned(buffer_of(&dev, &y))),
            }
        }
        _ => {
            let pre = buffer_of(&dev, &y);
            zip_chunks(&mut y, &[], activate);
            Saved::PreActivation(pre)
        }
    };
    // The dropout mask of the computed rows, applied after the activation's saved values.
    let dropped = dropout.map(|mut mask| {
        assert_eq!(mask.len(), m_all * wo, "one dropout value per output");
        if let Some(kept) = &kept {
            compact_rows(&mut mask, kept, wo);
        }
        zip_chunks(&mut y, &mask, scale_by);
        mask
    });
    zero_rows(&mut y, &zeroed, wo);
    // The output, and the buffer of its computed rows when that is not the output's own.
    let (out, computed) = match &kept {
        None => (into_tensor(&dev, y, (m, out_dim)), None),
        Some(kept) => {
            let all = scatter_rows(&dev, &y, kept, m_all, wo);
            (into_tensor(&dev, all, (m, out_dim)), Some(y))
        }
    };
    if matches!(saved, Saved::Output) {
        saved = Saved::Activated(match computed {
            Some(y) => HostValues::Owned(y),
            None => host_values(&out),
        });
    }
    let out_ghost = out.ghost();
    let w_ghost = w.ghost();
    let x_ghost = T::OWNS_TAPE.then(|| x.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let mut g_full = take_grad!(grads, &out_ghost);
        zero_rows(&mut g_full, &zeroed, wo);
        // The output gradient of the kept rows (modified in place when every row is kept).
        let mut gathered = kept
            .as_ref()
            .map(|kept| gather_rows(&dev, &g_full, kept, wo));
        let g: &mut [f32] = match &mut gathered {
            Some(ga) => ga,
            None => &mut g_full,
        };
        if let Some(mask) = &dropped {
            zip_chunks(g, mask, scale_by);
        }
        match &saved {
            Saved::Nothing | Saved::Output => {}
            Saved::Activated(y) => zip_chunks(g, y, |g, y| {
                for (g, &y) in g.iter_mut().zip(y) {
                    *g *= activation.scalar_derivative(0.0, y);
                }
            }),
            Saved::PreActivation(pre) => zip_chunks(g, pre, |g, pre| {
                for (g, &pre) in g.iter_mut().zip(pre) {
                    *g *= activation.scalar_derivative(pre, activation.scalar(pre));
                }
            }),
        }
        let g: &[f32] = g;
        // Group j's columns of x (M × k) and of the output's gradient (M × n), or their
        // transposes.
        let x_j = |j: usize, transposed: bool| View::strided(&xs[j * ks..], wi, transposed);
        let g_j = |j: usize, transposed: bool| View::strided(&g[j * ns..], wo, transposed);
        // Each product adds to its gradient's buffer, or writes over it where `add` is false
        // (a new buffer, see `grad_to_write`).
        let weight_grad = |gw: &mut [f32], add: bool, threads| {
            for j in 0..gs {
                let block = &mut gw[j * ks * ns..];
                if out_in {
                    // gW_j (n × k) (+)= g_jᵀ · x_j
                    let (lhs, rhs) = (g_j(j, true), x_j(j, false));
                    matmul_into((ns, mk, ks), (block, ks), add, lhs, rhs, 1.0, threads);
                } else {
                    // gW_j (k × n) (+)= x_jᵀ · g_j
                    let (lhs, rhs) = (x_j(j, true), g_j(j, false));
                    matmul_into((ks, mk, ns), (block, ns), add, lhs, rhs, 1.0, threads);
                }
            }
        };
        // gx_j (kept rows × k) (+)= g_j · W_jᵀ, straight into gx or gathered and added.
        let input_grad = |gx: &mut [f32], add: bool, threads| {
            let mut dxa = kept.as_ref().map(|_| recycled(&dev, mk * wi));
            let (target, accumulate): (&mut [f32], bool) = match &mut dxa {
                Some(d) => (d, false),
                None => (&mut *gx, add),
            };
            for j in 0..gs {
                let dst = (&mut target[j * ks..], wi);
                let (lhs, rhs) = (g_j(j, false), weight_block(&ws, j, (ks, ns), out_in, true));
                matmul_into((mk, ns, ks), dst, accumulate, lhs, rhs, 1.0, threads);
            }
            if let (Some(dxa), Some(kept)) = (&dxa, &kept) {
                if !add {
                    gx.fill(0.0);
                }
                add_rows(gx, dxa, kept, wi);
            }
        };
        // The weight's gradient is taken out of `grads` so the input's can be borrowed beside
        // it: the two products then run side by side, each on one thread, which scales better
        // than splitting each across the pool (7 % off a 2-thread `vae_mlp_train` step, where
        // splitting both as well made it slower).
        let (gw, gw_add) = grad_to_write!(grads, &w_ghost);
        let mut gw = std::mem::take(gw);
        match &x_ghost {
            None => weight_grad(&mut gw, gw_add, Threads::BySize),
            Some(x_ghost) => {
                let (gx, gx_add) = grad_to_write!(grads, x_ghost);
                if gx.is_empty() {
                    // x is the weight itself, whose gradient buffer is `gw`.
                    weight_grad(&mut gw, gw_add, Threads::BySize);
                    input_grad(&mut gw, true, Threads::BySize);
                } else if mk * ks * ns * gs >= SIDE_BY_SIDE_MIN_MACS {
                    // With more threads than two, each product still splits across the pool.
                    let each = match rayon::current_num_threads() {
                        ..=2 => Threads::One,
                        _ => Threads::BySize,
                    };
                    rayon::join(
                        || weight_grad(&mut gw, gw_add, each),
                        || input_grad(gx, gx_add, each),
                    );
                } else {
                    weight_grad(&mut gw, gw_add, Threads::BySize);
                    input_grad(gx, gx_add, Threads::BySize);
                }
            }
        }
        put_grad!(grads, &w_ghost, gw);
        if let Some(b_ghost) = &b_ghost {
            // gb (1 × G·n) (+)= 1ᵀ · g: the column sums as one product.
            let ones = vec![1.0f32; mk];
            let (gb, add) = grad_to_write!(grads, b_ghost);
            let (lhs, rhs) = (View::rows(&ones, mk), View::rows(g, wo));
            matmul_into((1, mk, wo), (gb, wo), add, lhs, rhs, 1.0, Threads::BySize);
        }
        put_grad!(grads, &out_ghost, g_full);
        Ok(())
    });
    out.put_tape(tape)
}

/// Below this many multiply-adds in each of the backward products, the weight's and the input's
/// gradients are computed one after the other: handing one to another thread costs more.
const SIDE_BY_SIDE_MIN_MACS: usize = 1 << 20;

/// What a Linear's backward pass keeps to differentiate its activation.
enum Saved {
    /// Nothing (the identity).
    Nothing,
    /// The kernel's output buffer (see `grouped`): replaced by `Activated` once it exists.
    Output,
    /// The activation's output, of the computed rows.
    Activated(HostValues),
    /// The activation's input, of the computed rows.
    PreActivation(Buffer),
}

/// `values[i] *= factors[i]`.
fn scale_by(values: &mut [f32], factors: &[f32]) {
    for (v, &f) in values.iter_mut().zip(factors) {
        *v *= f;
    }
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
