//! Fused multi-head attention on the packed `(B, N, heads·d)` layout. Per example and head: the
//! logits as one small GEMM over strided views of the packed inputs (no head is copied out),
//! kept key by key (`Kᵀ`-major, so that the softmax runs along contiguous queries), the key
//! bias, the mask and the softmax in place ([`softmax`]), and the output written straight
//! into its block of columns. Keys and values shared by the heads make one product of every head at
//! once: the packed `(Q, heads·d)` queries are a row-major `(Q·heads, d)` matrix, whose rows
//! are the (query, head) pairs. Gated values (`query_gate`) are combined with the queries in
//! the same pass. The weights are kept for the backward pass ([`backward`]), which computes
//! only the gradients of the inputs on a tape. Large calls run the examples in parallel, each
//! GEMM then on one thread. Padding costs little: per example, the products stop at the last
//! visible key and at the last query whose output is read ([`layout::Extents`]).

mod backward;
mod layout;
mod softmax;

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use rayon::prelude::*;

use super::{add_into, buffer, host_values, into_tensor, recycled, HostValues};
use crate::axes::Head;
use crate::kernels::gemm::{matmul_into, View};
use crate::kernels::generic::HeadDims;
use crate::kernels::{Attended, AttentionSpec, Tr};
use layout::{Extents, Layout};

/// Below this many multiply-adds a call runs on the calling thread: waking rayon's pool costs
/// 20–30 µs, more than the products save.
const PARALLEL_MIN_MACS: usize = 1 << 18;

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
    let b = batch.size();
    let l = Layout::new(&dims, b, nq.size(), nk.size());
    // Flat, contiguous views keep the tensors' ids, so gradients land in their buffers.
    let (q, q_tape) = q.reshape_like(&(b * l.nq * l.wq,)).split_tape();
    let (k, k_tape) = k.reshape_like(&(b * l.nk * l.wk,)).split_tape();
    let (v, v_tape) = v.reshape_like(&(b * l.nk * l.wv,)).split_tape();
    let mut tape = OwnedTape::<f32, Cpu>::default()
        .merge(q_tape)
        .merge(k_tape)
        .merge(v_tape);
    let inputs = Inputs {
        q: host_values(&q),
        k: host_values(&k),
        v: host_values(&v),
    };
    let bias = key_bias.map(|bias| {
        let (bias, bias_tape) = bias.reshape_like(&(b * l.nk,)).split_tape();
        tape = Merge::<OwnedTape<f32, Cpu>>::merge(std::mem::take(&mut tape), bias_tape);
        (host_values(&bias), bias.ghost())
    });

    let dev = q.device().clone();
    // Every weight and output is written below, except where there are no keys: then the
    // output is zeros.
    let mut attn = recycled(&dev, b * l.example_weights());
    let mut out = match l.nk {
        0 => buffer(&dev, b * l.nq * l.wo),
        _ => recycled(&dev, b * l.nq * l.wo),
    };
    let tasks: Vec<_> = slabs(&mut attn, l.example_weights(), b)
        .into_iter()
        .zip(slabs(&mut out, l.nq * l.wo, b))
        .collect();
    let scale = spec.scale as f32;
    let extents = Extents::new(&l, b, &spec);
    let bias_values = bias.as_ref().map(|(values, _)| &values[..]);
    let gated = if l.gate { l.rows() * l.dv } else { 0 };
    for_each_example(
        &l,
        tasks,
        gated + 2 * l.rows(),
        |e, (attn, out), scratch| {
            let (attended, columns) = scratch.split_at_mut(gated);
            let (q, k, v) = inputs.example(&l, e);
            let (rows, nk, read) = (l.rows(), l.nk, extents.keys[e]);
            let cols = l.rows_of(extents.queries[e]);
            let hidden = Hidden {
                keep: spec.keep.map(|keep| &keep[e * nk..e * nk + read]),
                causal: spec.causal,
            };
            for p in 0..l.products() {
                // The scores key by key, Sᵀ = scale · K Qᵀ (nk × rows): the product's many rows
                // are the GEMM's long side, and the softmax runs along them. The trailing keys
                // hidden from every query are not read (their weights are zero), nor the
                // trailing queries whose outputs are not read (`cols` of the `rows` computed).
                let (st, trailing) =
                    attn[p * rows * nk..(p + 1) * rows * nk].split_at_mut(read * rows);
                trailing.fill(0.0);
                let (start, rs) = l.block(p, l.d_out());
                // The output rows nobody reads are zero: those left out, and the gaps between.
                let zero_unread = |out: &mut [f32]| {
                    let gaps = (0..cols).filter(|&r| extents.unread(e, l.query_of(r), l.nq));
                    for r in gaps.chain(cols..rows) {
                        out[start + r * rs..][..l.d_out()].fill(0.0);
                    }
                };
                if cols == 0 {
                    zero_unread(out);
                    continue;
                }
                let (kp, qt) = (l.k(k, p, false), l.q(q, p, true));
                matmul_into(
                    (read, l.dk, cols),
                    (&mut *st, rows),
                    false,
                    kp,
                    qt,
                    scale,
                    l.threads,
                );
                let bias = bias_values.map(|b| &b[e * nk..(e + 1) * nk]);
                softmax::forward(&l, st, cols, bias, hidden, columns);
                let (a, vp) = (View::transposed(st, rows), l.v(v, p, false));
                let dims = (cols, read, l.dv);
                if !l.gate {
                    matmul_into(dims, (&mut out[start..], rs), false, a, vp, 1.0, l.threads);
                    zero_unread(out);
                    continue;
                }
                // gate ⊙ q + shift, row by row, from the attended [gate, shift].
                matmul_into(dims, (&mut *attended, l.dv), false, a, vp, 1.0, l.threads);
                let (q_start, q_rs) = l.block(p, l.dk);
                for (r, row) in attended.chunks_exact(l.dv).take(cols).enumerate() {
                    let (gate, shift) = row.split_at(l.dk);
                    let q = &q[q_start + r * q_rs..][..l.dk];
                    let o = &mut out[start + r * rs..][..l.dk];
                    for (((o, g), s), q) in o.iter_mut().zip(gate).zip(shift).zip(q) {
                        *o = g * q + s;
                    }
                }
                zero_unread(out);
            }
        },
    );

    let out = into_tensor(&dev, out, (batch, nq, out_dim));
    let weights = spec.want_weights.then(|| {
        into_tensor(
            &dev,
            l.weights_by_head(&dev, &attn),
            (batch, Head(l.heads), nq, nk),
        )
    });
    let out_ghost = out.ghost();
    let (q_ghost, k_ghost, v_ghost) = (q.ghost(), k.ghost(), v.ghost());
    let bias_ghost = bias.map(|(_, ghost)| ghost);
    let wanted = backward::Wanted {
        q: TQ::OWNS_TAPE,
        k: TK::OWNS_TAPE,
        v: TV::OWNS_TAPE,
        bias: bias_ghost.is_some(),
    };
    let saved = backward::Saved {
        inputs,
        attn,
        extents,
        scale,
    };
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        // The products add straight into the inputs' gradient buffers, taken out of `grads`.
        // An input that shares its tensor (and so its buffer) with one taken before finds
        // an empty one: it gets a zeroed buffer, added to the shared one once that is back.
        let ghost = |i: usize| match i {
            0 => &q_ghost,
            1 => &k_ghost,
            2 => &v_ghost,
            _ => bias_ghost.as_ref().expect("a key bias"),
        };
        let wanted = [wanted.q, wanted.k, wanted.v, wanted.bias];
        let lens = [
            saved.inputs.q.len(),
            saved.inputs.k.len(),
            saved.inputs.v.len(),
            b * l.nk,
        ];
        let mut shared = [false; 4];
        let mut taken: [Vec<f32>; 4] = Default::default();
        for i in 0..4 {
            if wanted[i] {
                taken[i] = take_grad!(grads, ghost(i));
                shared[i] = taken[i].len() != lens[i];
                if shared[i] {
                    taken[i] = vec![0.0; lens[i]];
                }
            }
        }
        let [q, k, v, bias] = taken;
        let mut targets = backward::InputGrads { q, k, v, bias };
        backward::run(&l, &saved, &g, &mut targets);
        put_grad!(grads, &out_ghost, g);
        let backward::InputGrads { q, k, v, bias } = targets;
        let mut results = [q, k, v, bias];
        // Every buffer taken goes back first, then the shared ones are added to them.
        for pass_shared in [false, true] {
            for i in (0..4).filter(|&i| wanted[i] && shared[i] == pass_shared) {
                let values = std::mem::take(&mut results[i]);
                let slot = grads.get_or_alloc_mut(ghost(i))?;
                match pass_shared {
                    false => **slot = values,
                    true => add_into(slot, &values),
                }
            }
        }
        Ok(())
    });
    (out.put_tape(tape), weights)
}

/// A call's queries, keys and values, read in place.
struct Inputs {
    q: HostValues,
    k: HostValues,
    v: HostValues,
}

impl Inputs {
    /// Example `e`'s queries, keys and values.
    fn example(&self, l: &Layout, e: usize) -> (&[f32], &[f32], &[f32]) {
        let (nq, nk) = (l.nq, l.nk);
        (
            &self.q[e * nq * l.wq..(e + 1) * nq * l.wq],
            &self.k[e * nk * l.wk..(e + 1) * nk * l.wk],
            &self.v[e * nk * l.wv..(e + 1) * nk * l.wv],
        )
    }
}

/// The keys an example hides: `keep` false, or (causal) after the query.
#[derive(Clone, Copy)]
struct Hidden<'a> {
    keep: Option<&'a [bool]>,
    causal: bool,
}

/// `buf` cut into `batch` slabs of `len` (empty slabs where `buf` is empty).
fn slabs(buf: &mut [f32], len: usize, batch: usize) -> Vec<&mut [f32]> {
    let mut chunks = buf.chunks_mut(len.max(1));
    (0..batch)
        .map(|_| chunks.next().unwrap_or_default())
        .collect()
}

/// `f(e, task, scratch)` for every example `e` that has queries and keys (none: a zero output
/// and no gradient, as the generic ops give), on rayon's pool when the layout says so. Each
/// thread gets a scratch buffer of `scratch` values of its own.
fn for_each_example<T: Send>(
    l: &Layout,
    tasks: Vec<T>,
    scratch: usize,
    f: impl Fn(usize, T, &mut [f32]) + Sync,
) {
    if l.nq == 0 || l.nk == 0 {
        return;
    }
    if l.parallel {
        tasks
            .into_par_iter()
            .enumerate()
            .for_each_init(|| vec![0.0; scratch], |s, (e, t)| f(e, t, s));
    } else {
        let mut s = vec![0.0; scratch];
        tasks
            .into_iter()
            .enumerate()
            .for_each(|(e, t)| f(e, t, &mut s));
    }
}
