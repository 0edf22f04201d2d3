//! Fused multi-head attention on the packed `(B, N, heads·d)` layout. Per example and head: the
//! logits as one small GEMM over strided views of the packed inputs (no head is copied out),
//! the key bias, the mask and the softmax in place, and the output written straight into its
//! block of columns. The weights are kept for the backward pass, which computes only the
//! gradients of the inputs on a tape. Large calls run the examples in parallel, each GEMM then
//! on one thread.

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use rayon::prelude::*;

use super::{add_into, buffer, host_values, into_tensor};
use crate::axes::Head;
use crate::kernels::gemm::{matmul_into, Threads, View};
use crate::kernels::generic::HeadDims;
use crate::kernels::{Attended, AttentionSpec, Tr};

/// Below this many multiply-adds a call runs on the calling thread: waking rayon's pool costs
/// 20–30 µs, more than the products save.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// The sizes of a call and the row widths of its packed tensors.
#[derive(Clone, Copy)]
struct Layout {
    heads: usize,
    nq: usize,
    nk: usize,
    dk: usize,
    dv: usize,
    shared: bool,
    /// Row widths of q, k, v and the output.
    wq: usize,
    wk: usize,
    wv: usize,
    wo: usize,
}

impl Layout {
    fn new(dims: &HeadDims, nq: usize, nk: usize) -> Self {
        let (heads, dk, dv) = (dims.heads, dims.dk, dims.dv);
        let kv_heads = if dims.shared { 1 } else { heads };
        Self {
            heads,
            nq,
            nk,
            dk,
            dv,
            shared: dims.shared,
            wq: heads * dk,
            wk: kv_heads * dk,
            wv: kv_heads * dv,
            wo: heads * dv,
        }
    }

    /// The first column of head `h`'s keys (values `d` wide).
    fn kv_col(&self, h: usize, d: usize) -> usize {
        if self.shared {
            0
        } else {
            h * d
        }
    }

    /// Head `h`'s queries (`nq × dk`) in one example's `q`.
    fn q<'a>(&self, q: &'a [f32], h: usize) -> View<'a> {
        View::strided(&q[h * self.dk..], self.wq, false)
    }

    /// Head `h`'s keys (`nk × dk`), or their transpose.
    fn k<'a>(&self, k: &'a [f32], h: usize, transposed: bool) -> View<'a> {
        View::strided(&k[self.kv_col(h, self.dk)..], self.wk, transposed)
    }

    /// Head `h`'s values (`nk × dv`), or their transpose.
    fn v<'a>(&self, v: &'a [f32], h: usize, transposed: bool) -> View<'a> {
        View::strided(&v[self.kv_col(h, self.dv)..], self.wv, transposed)
    }

    /// Multiply-adds of the forward pass.
    fn macs(&self, batch: usize) -> usize {
        batch * self.heads * self.nq * self.nk * (self.dk + self.dv)
    }
}

/// See [`crate::kernels::Kernels::multi_head_attention`].
#[allow(clippy::type_complexity)]
pub(crate) fn forward<B: Dim, Q: Dim, K: Dim, DQ: Dim, DK: Dim, DV: Dim, O: Dim, TQ, TK, TV>(
    q: Tensor<(B, Q, DQ), f32, Cpu, TQ>,
    k: Tensor<(B, K, DK), f32, Cpu, TK>,
    v: Tensor<(B, K, DV), f32, Cpu, TV>,
    key_bias: Option<Tr<(B, K), f32, Cpu>>,
    spec: AttentionSpec,
) -> Attended<B, Q, K, O, f32, Cpu>
where
    TQ: Tape<f32, Cpu>,
    TK: Tape<f32, Cpu>,
    TV: Tape<f32, Cpu>,
    OwnedTape<f32, Cpu>: Merge<TQ> + Merge<TK> + Merge<TV>,
{
    let (batch, nq, _) = *q.shape();
    let nk = k.shape().1;
    let dims = HeadDims::new(&spec, q.shape(), k.shape(), v.shape());
    let out_dim: O = dims.out_dim();
    let l = Layout::new(&dims, nq.size(), nk.size());
    let b = batch.size();
    // Flat, contiguous views keep the tensors' ids, so gradients land in their buffers.
    let (q, q_tape) = q.reshape_like(&(b * l.nq * l.wq,)).split_tape();
    let (k, k_tape) = k.reshape_like(&(b * l.nk * l.wk,)).split_tape();
    let (v, v_tape) = v.reshape_like(&(b * l.nk * l.wv,)).split_tape();
    let mut tape = OwnedTape::<f32, Cpu>::default()
        .merge(q_tape)
        .merge(k_tape)
        .merge(v_tape);
    let (qs, ks, vs) = (host_values(&q), host_values(&k), host_values(&v));
    let bias = key_bias.map(|bias| {
        let (bias, bias_tape) = bias.reshape_like(&(b * l.nk,)).split_tape();
        tape = Merge::<OwnedTape<f32, Cpu>>::merge(std::mem::take(&mut tape), bias_tape);
        (host_values(&bias), bias.ghost())
    });

    let parallel = b > 1 && rayon::current_num_threads() > 1 && l.macs(b) >= PARALLEL_MIN_MACS;
    let threads = if parallel {
        Threads::One
    } else {
        Threads::BySize
    };
    let dev = q.device().clone();
    let mut attn = buffer(&dev, b * l.heads * l.nq * l.nk);
    let mut out = buffer(&dev, b * l.nq * l.wo);
    let tasks: Vec<_> = slabs(&mut attn, l.heads * l.nq * l.nk, b)
        .into_iter()
        .zip(slabs(&mut out, l.nq * l.wo, b))
        .collect();
    let scale = spec.scale as f32;
    let bias_values = bias.as_ref().map(|(values, _)| values.as_slice());
    for_each_example(tasks, parallel, |e, (attn, out)| {
        if l.nq == 0 || l.nk == 0 {
            return; // no keys: a zero output, as the generic ops give
        }
        let (q, k, v) = example(&l, e, &qs, &ks, &vs);
        for h in 0..l.heads {
            let a = &mut attn[h * l.nq * l.nk..(h + 1) * l.nq * l.nk];
            let dims = (l.nq, l.dk, l.nk);
            let (qh, kt) = (l.q(q, h), l.k(k, h, true));
            matmul_into(dims, (a, l.nk), false, qh, kt, scale, threads);
            for (i, row) in a.chunks_exact_mut(l.nk).enumerate() {
                let bias = bias_values.map(|b| &b[e * l.nk..(e + 1) * l.nk]);
                let keep = spec.keep.map(|keep| &keep[e * l.nk..(e + 1) * l.nk]);
                let visible = if spec.causal { i + 1 } else { l.nk };
                softmax_in_place(row, bias, keep, visible);
            }
            let dims = (l.nq, l.nk, l.dv);
            let (a, vh) = (View::rows(a, l.nk), l.v(v, h, false));
            matmul_into(
                dims,
                (&mut out[h * l.dv..], l.wo),
                false,
                a,
                vh,
                1.0,
                threads,
            );
        }
    });

    let out = into_tensor(&dev, out, (batch, nq, out_dim));
    let weights = spec
        .want_weights
        .then(|| into_tensor(&dev, attn.clone(), (batch, Head(l.heads), nq, nk)));
    let out_ghost = out.ghost();
    let q_ghost = TQ::OWNS_TAPE.then(|| q.ghost());
    let k_ghost = TK::OWNS_TAPE.then(|| k.ghost());
    let v_ghost = TV::OWNS_TAPE.then(|| v.ghost());
    let bias_ghost = bias.map(|(_, ghost)| ghost);
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        // Each gradient in a buffer of its own (empty when not needed), added to the tape's
        // afterwards: the inputs may be one tensor.
        let sized = |needed: bool, len: usize| buffer(&dev, if needed { len } else { 0 });
        let mut gq = sized(q_ghost.is_some(), qs.len());
        let mut gk = sized(k_ghost.is_some(), ks.len());
        let mut gv = sized(v_ghost.is_some(), vs.len());
        let mut gb = sized(bias_ghost.is_some(), b * l.nk);
        let want_scores = !(gq.is_empty() && gk.is_empty() && gb.is_empty());
        let mut scratch = sized(want_scores, b * l.nq * l.nk);
        let tasks: Vec<_> = slabs(&mut gq, l.nq * l.wq, b)
            .into_iter()
            .zip(slabs(&mut gk, l.nk * l.wk, b))
            .zip(slabs(&mut gv, l.nk * l.wv, b))
            .zip(slabs(&mut gb, l.nk, b))
            .zip(slabs(&mut scratch, l.nq * l.nk, b))
            .map(|((((q, k), v), bias), scores)| ExampleGrads {
                q,
                k,
                v,
                bias,
                scores,
            })
            .collect();
        for_each_example(tasks, parallel, |e, grads| {
            if l.nq == 0 || l.nk == 0 {
                return;
            }
            let inputs = example(&l, e, &qs, &ks, &vs);
            let attn = &attn[e * l.heads * l.nq * l.nk..];
            let g = &g[e * l.nq * l.wo..];
            backward_example(&l, inputs, attn, g, grads, scale, threads);
        });
        for (ghost, grad) in [(&q_ghost, gq), (&k_ghost, gk), (&v_ghost, gv)] {
            if let Some(ghost) = ghost {
                add_into(grads.get_or_alloc_mut(ghost)?, &grad);
            }
        }
        if let Some(ghost) = &bias_ghost {
            add_into(grads.get_or_alloc_mut(ghost)?, &gb);
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    (out.put_tape(tape), weights)
}

/// Example `e`'s queries, keys and values.
fn example<'a>(
    l: &Layout,
    e: usize,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
) -> (&'a [f32], &'a [f32], &'a [f32]) {
    let (nq, nk) = (l.nq, l.nk);
    (
        &q[e * nq * l.wq..(e + 1) * nq * l.wq],
        &k[e * nk * l.wk..(e + 1) * nk * l.wk],
        &v[e * nk * l.wv..(e + 1) * nk * l.wv],
    )
}

/// One example's gradient slabs (empty where not needed) and room for its scores.
struct ExampleGrads<'a> {
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    bias: &'a mut [f32],
    scores: &'a mut [f32],
}

/// Adds one example's gradients. With A the weights and G the output's gradient, per head:
/// dV = Aᵀ G; dS = A ⊙ (G Vᵀ − rowsum(G Vᵀ ⊙ A)); dQ = scale · dS K; dK = scale · dSᵀ Q;
/// d key_bias = Σ over heads and queries of dS.
fn backward_example(
    l: &Layout,
    (q, k, v): (&[f32], &[f32], &[f32]),
    attn: &[f32],
    g: &[f32],
    grads: ExampleGrads,
    scale: f32,
    threads: Threads,
) {
    let (nq, nk) = (l.nq, l.nk);
    for h in 0..l.heads {
        let a = &attn[h * nq * nk..(h + 1) * nq * nk];
        let gh = View::strided(&g[h * l.dv..], l.wo, false);
        if !grads.v.is_empty() {
            let dst = (&mut grads.v[l.kv_col(h, l.dv)..], l.wv);
            let at = View::transposed(a, nk);
            matmul_into((nk, nq, l.dv), dst, true, at, gh, 1.0, threads);
        }
        if grads.scores.is_empty() {
            continue;
        }
        let ds = &mut *grads.scores;
        matmul_into(
            (nq, l.dv, nk),
            (ds, nk),
            false,
            gh,
            l.v(v, h, true),
            1.0,
            threads,
        );
        for (d_row, a_row) in ds.chunks_exact_mut(nk).zip(a.chunks_exact(nk)) {
            let dot: f32 = d_row.iter().zip(a_row).map(|(d, a)| d * a).sum();
            for (d, a) in d_row.iter_mut().zip(a_row) {
                *d = a * (*d - dot);
            }
            add_into(grads.bias, d_row);
        }
        if !grads.q.is_empty() {
            let dst = (&mut grads.q[h * l.dk..], l.wq);
            let (ds, kh) = (View::rows(ds, nk), l.k(k, h, false));
            matmul_into((nq, nk, l.dk), dst, true, ds, kh, scale, threads);
        }
        if !grads.k.is_empty() {
            let dst = (&mut grads.k[l.kv_col(h, l.dk)..], l.wk);
            let (dst_t, qh) = (View::transposed(ds, nk), l.q(q, h));
            matmul_into((nk, nq, l.dk), dst, true, dst_t, qh, scale, threads);
        }
    }
}

/// One row of logits → its softmax: plus `bias`, −∞ at the keys `keep` hides and from
/// `visible` on. A row that sees no key becomes NaN, as in PyTorch.
fn softmax_in_place(row: &mut [f32], bias: Option<&[f32]>, keep: Option<&[bool]>, visible: usize) {
    if let Some(bias) = bias {
        add_into(row, bias);
    }
    if let Some(keep) = keep {
        for (x, &k) in row.iter_mut().zip(keep) {
            if !k {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    if visible < row.len() {
        row[visible..].fill(f32::NEG_INFINITY);
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `buf` cut into `batch` slabs of `len` (empty slabs where `buf` is empty).
fn slabs(buf: &mut [f32], len: usize, batch: usize) -> Vec<&mut [f32]> {
    let mut chunks = buf.chunks_mut(len.max(1));
    (0..batch)
        .map(|_| chunks.next().unwrap_or_default())
        .collect()
}

/// `f(e, task)` for every example `e`, on rayon's pool when `parallel`.
fn for_each_example<T: Send>(tasks: Vec<T>, parallel: bool, f: impl Fn(usize, T) + Sync) {
    if parallel {
        tasks.into_par_iter().enumerate().for_each(|(e, t)| f(e, t));
    } else {
        tasks.into_iter().enumerate().for_each(|(e, t)| f(e, t));
    }
}
