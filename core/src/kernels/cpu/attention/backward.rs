//! The attention's backward pass. With A the weights and G the gradient of what the product
//! attended (for gated values `[G ⊙ q, G]`, and G ⊙ gate added to the queries' gradient, the
//! gate A V_gate computed again), per product: dV = Aᵀ G;
//! dS = A ⊙ (G Vᵀ − rowsum(G Vᵀ ⊙ A)); dQ = scale · dS K; dK = scale · dSᵀ Q;
//! d key_bias = Σ over heads and queries of dS. Only the gradients of inputs on a tape are
//! computed.

use super::layout::{Extents, Layout};
use super::{for_each_example, slabs, softmax, Inputs};
use crate::kernels::cpu::Buffer;
use crate::kernels::gemm::{matmul_into, View};

/// Which inputs carry a tape (and get a gradient).
#[derive(Clone, Copy)]
pub(super) struct Wanted {
    pub q: bool,
    pub k: bool,
    pub v: bool,
    pub bias: bool,
}

/// The inputs' gradient buffers, into which the products add (empty where not wanted).
pub(super) struct InputGrads {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub bias: Vec<f32>,
}

/// What the forward pass keeps.
pub(super) struct Saved {
    pub inputs: Inputs,
    /// The weights, per example and product.
    pub attn: Buffer,
    /// What each example's products read.
    pub extents: Extents,
    pub scale: f32,
}

/// One example's gradient slabs (empty where not needed).
struct ExampleGrads<'a> {
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    bias: &'a mut [f32],
}

/// Adds the inputs' gradients given `g`, the output's, to `grads` (those not empty).
pub(super) fn run(l: &Layout, saved: &Saved, g: &[f32], grads: &mut InputGrads) {
    let b = saved.attn.len() / l.example_weights().max(1);
    let inputs = &saved.inputs;
    let tasks: Vec<_> = slabs(&mut grads.q, l.nq * l.wq, b)
        .into_iter()
        .zip(slabs(&mut grads.k, l.nk * l.wk, b))
        .zip(slabs(&mut grads.v, l.nk * l.wv, b))
        .zip(slabs(&mut grads.bias, l.nk, b))
        .map(|(((q, k), v), bias)| ExampleGrads { q, k, v, bias })
        .collect();
    let gated = if l.gate { l.dv + l.dk } else { 0 };
    let scratch = l.rows() * (l.nk + 1 + gated);
    // The outputs computed but not read pass no gradient back.
    let masked = saved.extents.gaps.as_ref().map(|read| {
        let mut masked = g.to_vec();
        for (row, _) in masked.chunks_exact_mut(l.wo).zip(read).filter(|(_, &r)| !r) {
            row.fill(0.0);
        }
        masked
    });
    let g = masked.as_deref().unwrap_or(g);
    for_each_example(l, tasks, scratch, |e, grads, scratch| {
        let example = Example {
            inputs: inputs.example(l, e),
            attn: &saved.attn[e * l.example_weights()..],
            g: &g[e * l.nq * l.wo..],
            keys: saved.extents.keys[e],
            cols: l.rows_of(saved.extents.queries[e]),
        };
        example.backward(l, grads, scratch, saved.scale);
    });
}

/// One example's inputs, weights and output gradient.
struct Example<'a> {
    inputs: (&'a [f32], &'a [f32], &'a [f32]),
    attn: &'a [f32],
    g: &'a [f32],
    /// The keys the products read; the others have zero weights, so zero gradients.
    keys: usize,
    /// The product rows computed; the others' outputs are zero, so pass no gradient back.
    cols: usize,
}

impl Example<'_> {
    /// Adds the example's gradients, with `scratch` as room for the scores (`nk × rows`), a
    /// sum per row and, for gated values, the attended values' gradient (`rows × dv`) and the
    /// gate (`rows × dk`).
    fn backward(&self, l: &Layout, grads: ExampleGrads, scratch: &mut [f32], scale: f32) {
        let (scores, scratch) = scratch.split_at_mut(l.rows() * l.nk);
        let (dot, scratch) = scratch.split_at_mut(l.rows());
        let (attended, gates) = scratch.split_at_mut(l.rows() * if l.gate { l.dv } else { 0 });
        let (q, k, v) = self.inputs;
        let (rows, nk, read, cols, threads) = (l.rows(), l.nk, self.keys, self.cols, l.threads);
        if cols == 0 {
            return;
        }
        let want_scores = !(grads.q.is_empty() && grads.k.is_empty() && grads.bias.is_empty());
        for p in 0..l.products() {
            // The weights of the keys read, key by key, Aᵀ (read × rows).
            let at = &self.attn[p * rows * nk..][..read * rows];
            let a = View::transposed(at, rows);
            let (start, rs) = l.block(p, l.d_out());
            let (q_start, q_rs) = l.block(p, l.dk);
            if l.gate {
                // The gradient of [gate, shift] is [G ⊙ q, G]; the query's gets G ⊙ gate.
                if !grads.q.is_empty() {
                    let dst = (&mut *gates, l.dk);
                    matmul_into(
                        (cols, read, l.dk),
                        dst,
                        false,
                        a,
                        l.v(v, p, false),
                        1.0,
                        threads,
                    );
                }
                for (r, d) in attended.chunks_exact_mut(l.dv).take(cols).enumerate() {
                    let (d_gate, d_shift) = d.split_at_mut(l.dk);
                    let g = &self.g[start + r * rs..][..l.dk];
                    let q_row = &q[q_start + r * q_rs..][..l.dk];
                    for ((d, g), q) in d_gate.iter_mut().zip(g).zip(q_row) {
                        *d = g * q;
                    }
                    d_shift.copy_from_slice(g);
                    if !grads.q.is_empty() {
                        let gate = &gates[r * l.dk..][..l.dk];
                        let dq = &mut grads.q[q_start + r * q_rs..][..l.dk];
                        for ((dq, g), gate) in dq.iter_mut().zip(g).zip(gate) {
                            *dq += g * gate;
                        }
                    }
                }
            }
            // G (rows × dv), or its transpose.
            let g_view = |transposed: bool| {
                if l.gate {
                    View::strided(&*attended, l.dv, transposed)
                } else {
                    View::strided(&self.g[start..], rs, transposed)
                }
            };
            if !grads.v.is_empty() {
                // dV += Aᵀ G
                let dst = (&mut grads.v[p * l.dv..], l.wv);
                let at = View::rows(at, rows);
                matmul_into(
                    (read, cols, l.dv),
                    dst,
                    true,
                    at,
                    g_view(false),
                    1.0,
                    threads,
                );
            }
            if !want_scores {
                continue;
            }
            // dAᵀ = V Gᵀ (read × rows), then dSᵀ in place.
            let scores = &mut scores[..read * rows];
            let (vp, gt) = (l.v(v, p, false), g_view(true));
            matmul_into(
                (read, l.dv, cols),
                (&mut *scores, rows),
                false,
                vp,
                gt,
                1.0,
                threads,
            );
            softmax::backward(rows, cols, scores, at, dot);
            if !grads.bias.is_empty() {
                for (d, row) in grads.bias.iter_mut().zip(scores.chunks_exact(rows)) {
                    *d += row[..cols].iter().sum::<f32>();
                }
            }
            if !grads.q.is_empty() {
                // dQ += scale · dS K
                let dst = (&mut grads.q[q_start..], q_rs);
                let ds = View::transposed(scores, rows);
                matmul_into(
                    (cols, read, l.dk),
                    dst,
                    true,
                    ds,
                    l.k(k, p, false),
                    scale,
                    threads,
                );
            }
            if !grads.k.is_empty() {
                // dK += scale · dSᵀ Q
                let dst = (&mut grads.k[p * l.dk..], l.wk);
                let dst_t = View::rows(scores, rows);
                matmul_into(
                    (read, cols, l.dk),
                    dst,
                    true,
                    dst_t,
                    l.q(q, p, false),
                    scale,
                    threads,
                );
            }
        }
    }
}
