//! The kernels as compositions of dfdx's generic ops: the CUDA path, the f64 reference and
//! what the CPU fast path is tested against.

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use num_traits::Float;

use super::{Attended, AttentionSpec, Tr, Weight};
use crate::axes::{Head, HeadDim};
use crate::layers::Activation;

/// See [`super::Kernels::linear`].
pub fn linear<M, K, N, E, D, T>(
    x: Tensor<(M, K), E, D, T>,
    weight: Weight<K, N, E, D>,
    bias: Option<Tr<(N,), E, D>>,
    activation: Activation,
) -> Tr<(M, N), E, D>
where
    M: Dim,
    K: Dim,
    N: Dim,
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
    OwnedTape<E, D>: Merge<T>,
{
    let (x, x_tape) = x.split_tape();
    let x = x.put_tape(OwnedTape::default().merge(x_tape));
    let y = match weight {
        Weight::InOut(w) => x.matmul(w),
        Weight::OutIn(w) => x.matmul(w.permute::<_, Axes2<1, 0>>()),
    };
    let y = match bias {
        Some(b) => {
            let shape = *y.shape();
            y + b.broadcast_like(&shape)
        }
        None => y,
    };
    activation.apply(y)
}

/// See [`super::Kernels::linear_rows`].
///
/// # Panics
/// If `rows` does not have one flag per row.
pub fn linear_rows<M: Dim, K: Dim, N: Dim, E: Dtype + Float, D: Device<E>>(
    x: Tr<(M, K), E, D>,
    weight: Weight<K, N, E, D>,
    bias: Option<Tr<(N,), E, D>>,
    activation: Activation,
    rows: &[bool],
) -> Tr<(M, N), E, D> {
    let y = linear(x, weight, bias, activation);
    let shape = *y.shape();
    assert_eq!(rows.len(), shape.0.size(), "one row flag per row");
    let flags = rows
        .iter()
        .map(|&keep| if keep { E::one() } else { E::zero() })
        .collect();
    let mask = y.device().tensor_from_vec(flags, (shape.0,));
    y * mask.broadcast_like(&shape)
}

/// See [`super::Kernels::grouped_linear`].
pub fn grouped_linear<M, I, O, K, N, E, D, T>(
    x: Tensor<(M, I), E, D, T>,
    weight: Weight<K, N, E, D>,
    bias: Option<Tr<(O,), E, D>>,
    groups: usize,
) -> Tr<(M, O), E, D>
where
    M: Dim,
    I: Dim,
    O: Dim,
    K: Dim,
    N: Dim,
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
    OwnedTape<E, D>: Merge<T>,
{
    let (m, i) = *x.shape();
    let dims = GroupDims::new(i.size(), &weight, groups);
    let out_dim: O = dims.out_dim();
    let (k, n) = (dims.k, dims.n);
    // (M, G·k) → (G, M, k) times (G, k, n) → (G, M, n) → (M, G·n)
    let x = traced(x)
        .reshape_like(&(m, groups, k))
        .permute::<_, Axes3<1, 0, 2>>();
    let w = match weight {
        Weight::InOut(w) => w.reshape_like(&(groups, k, n)),
        Weight::OutIn(w) => w
            .reshape_like(&(groups, n, k))
            .permute::<_, Axes3<0, 2, 1>>(),
    };
    let y = x
        .matmul(w)
        .permute::<_, Axes3<1, 0, 2>>()
        .reshape_like(&(m, out_dim));
    match bias {
        Some(b) => {
            let shape = *y.shape();
            y + b.broadcast_like(&shape)
        }
        None => y,
    }
}

/// The per-group sizes of a grouped Linear, checked against each other.
pub(crate) struct GroupDims {
    /// Input columns per group.
    pub k: usize,
    /// Output columns per group.
    pub n: usize,
    groups: usize,
}

impl GroupDims {
    /// # Panics
    /// As [`super::Kernels::grouped_linear`].
    pub fn new<K: Dim, N: Dim, E: Dtype, D: Storage<E>>(
        in_width: usize,
        weight: &Weight<K, N, E, D>,
        groups: usize,
    ) -> Self {
        assert!(groups > 0, "no groups");
        // The weight's rows hold the groups' blocks: InOut (G·k, n), OutIn (G·n, k).
        let (rows, cols) = match weight {
            Weight::InOut(w) => (w.shape().0.size(), w.shape().1.size()),
            Weight::OutIn(w) => (w.shape().0.size(), w.shape().1.size()),
        };
        assert_eq!(
            rows % groups,
            0,
            "{groups} groups do not divide the weight's {rows} rows"
        );
        let (k, n) = match weight {
            Weight::InOut(_) => (rows / groups, cols),
            Weight::OutIn(_) => (cols, rows / groups),
        };
        assert_eq!(
            in_width,
            groups * k,
            "input {in_width} wide for {groups} groups of {k}"
        );
        Self { k, n, groups }
    }

    /// The output axis, `groups · n` wide.
    pub fn out_dim<O: Dim>(&self) -> O {
        O::from_size(self.groups * self.n).expect("the output axis is groups · n wide")
    }
}

/// See [`super::Kernels::mul_add_halves`].
pub fn mul_add_halves<R: Dim, C2: Dim, C: Dim, E: Dtype + Float, D: Device<E>>(
    x: Tr<(R, C2), E, D>,
    u: Tr<(R, C), E, D>,
) -> Tr<(R, C), E, D> {
    let (r, c) = *u.shape();
    check_halves(x.shape().1.size(), c.size());
    let halves = x.reshape_like(&(r, Const::<2>, c));
    let dev = u.device().clone();
    let index = |i: usize| dev.tensor_from_vec(vec![i; r.size()], (r,));
    let shift = halves.retaped::<OwnedTape<E, D>>().select(index(1));
    halves.select(index(0)) * u + shift
}

/// The precondition of [`mul_add_halves`], shared with the CPU kernel.
pub(crate) fn check_halves(x_width: usize, u_width: usize) {
    assert_eq!(
        x_width,
        2 * u_width,
        "x must hold a gate and a shift as wide as u"
    );
}

/// See [`super::Kernels::layer_norm`].
pub fn layer_norm<M: Dim, N: Dim, E: Dtype + Float, D: Device<E>>(
    x: Tr<(M, N), E, D>,
    gamma: Tr<(N,), E, D>,
    beta: Tr<(N,), E, D>,
    eps: f64,
) -> Tr<(M, N), E, D> {
    let shape = *x.shape();
    x.normalize::<Axis<1>>(eps) * gamma.broadcast_like(&shape) + beta.broadcast_like(&shape)
}

/// See [`super::Kernels::residual_layer_norm`].
pub fn residual_layer_norm<M: Dim, N: Dim, E: Dtype + Float, D: Device<E>>(
    x: Tr<(M, N), E, D>,
    sub: Tr<(M, N), E, D>,
    mask: Option<&[E]>,
    gamma: Tr<(N,), E, D>,
    beta: Tr<(N,), E, D>,
    eps: f64,
) -> Tr<(M, N), E, D> {
    let shape = *x.shape();
    let sub = match mask {
        Some(m) => sub * x.device().tensor_from_vec(m.to_vec(), shape),
        None => sub,
    };
    layer_norm(x + sub, gamma, beta, eps)
}

/// See [`super::Kernels::weighted_nll`].
///
/// # Panics
/// If `targets` or `weights` do not have one entry per row, a target is outside the
/// vocabulary, or the rows do not split into `groups` equal groups (caller bugs: the layers
/// check their inputs first).
pub fn weighted_nll<R: Dim, V: Dim, G: Dim, E: Dtype + Float, D: Device<E>>(
    logits: Tr<(R, V), E, D>,
    targets: &[usize],
    weights: &[E],
    groups: G,
) -> Tr<(G,), E, D> {
    let (rows, vocab) = *logits.shape();
    let rows = rows.size();
    check_nll_inputs(rows, vocab.size(), targets, weights, groups.size());
    let dev = logits.device().clone();
    let log_p = logits
        .reshape_like(&(rows, vocab))
        .log_softmax::<Axis<1>>()
        .select(dev.tensor_from_vec(targets.to_vec(), (rows,)));
    let weighted = log_p * dev.tensor_from_vec(weights.to_vec(), (rows,));
    weighted
        .reshape_like(&(groups, rows / groups.size()))
        .sum::<(G,), Axis<1>>()
}

/// See [`super::Kernels::bernoulli_nll`].
pub fn bernoulli_nll<M: Dim, N: Dim, E: Dtype + Float, D: Device<E>>(
    logits: Tr<(M, N), E, D>,
    x: &Tensor<(M, N), E, D>,
) -> Tr<(M,), E, D> {
    logits.bce_with_logits(x.clone()).sum::<(M,), Axis<1>>()
}

/// The preconditions of [`weighted_nll`], shared with the CPU kernel.
pub(crate) fn check_nll_inputs(
    rows: usize,
    vocab: usize,
    targets: &[usize],
    weights: &[impl Copy],
    groups: usize,
) {
    assert_eq!(targets.len(), rows, "one target per row");
    assert_eq!(weights.len(), rows, "one weight per row");
    assert!(
        groups > 0 && rows % groups == 0,
        "{rows} rows in {groups} groups"
    );
    assert!(
        targets.iter().all(|&t| t < vocab),
        "target outside the vocabulary"
    );
}

/// See [`super::Kernels::multi_head_attention`].
#[allow(clippy::type_complexity)]
pub fn multi_head_attention<B, Q, K, DQ, DK, DV, O, E, D, TQ, TK, TV>(
    q: Tensor<(B, Q, DQ), E, D, TQ>,
    k: Tensor<(B, K, DK), E, D, TK>,
    v: Tensor<(B, K, DV), E, D, TV>,
    key_bias: Option<Tr<(B, K), E, D>>,
    spec: AttentionSpec,
) -> Attended<B, Q, K, O, E, D>
where
    B: Dim,
    Q: Dim,
    K: Dim,
    DQ: Dim,
    DK: Dim,
    DV: Dim,
    O: Dim,
    E: Dtype + Float,
    D: Device<E>,
    TQ: Tape<E, D>,
    TK: Tape<E, D>,
    TV: Tape<E, D>,
    OwnedTape<E, D>: Merge<TQ> + Merge<TK> + Merge<TV>,
{
    let (batch, nq, _) = *q.shape();
    let nk = k.shape().1;
    let dims = HeadDims::new(&spec, q.shape(), k.shape(), v.shape());
    let out_dim: O = dims.out_dim();
    let (heads, dk, dv) = (spec.heads, HeadDim(dims.dk), HeadDim(dims.dv));
    let scale = E::from_f64(spec.scale).expect("a float scale");
    let q = traced(q)
        .reshape_like(&(batch, nq, heads, dk))
        .permute::<_, Axes4<0, 2, 1, 3>>()
        * scale;
    let logits_shape = (batch, heads, nq, nk);
    let logits = if dims.shared {
        let k = traced(k).reshape_like(&(batch, nk, dk));
        q.reshape_like(&(batch, heads.0 * nq.size(), dk))
            .matmul(k.permute::<_, Axes3<0, 2, 1>>())
            .reshape_like(&logits_shape)
    } else {
        let k = traced(k).reshape_like(&(batch, nk, heads, dk));
        q.matmul(k.permute::<_, Axes4<0, 2, 3, 1>>())
    };
    let logits = match key_bias {
        Some(bias) => logits + bias.broadcast_like::<_, Axes2<1, 2>>(&logits_shape),
        None => logits,
    };
    let attn = hide_keys(logits, &spec).softmax::<Axis<3>>();
    let weights = spec.want_weights.then(|| attn.retaped::<NoneTape>());
    let out = if dims.shared {
        let v = traced(v).reshape_like(&(batch, nk, dv));
        attn.reshape_like(&(batch, heads.0 * nq.size(), nk))
            .matmul(v)
            .reshape_like(&(batch, heads, nq, dv))
    } else {
        let v = traced(v).reshape_like(&(batch, nk, heads, dv));
        attn.matmul(v.permute::<_, Axes4<0, 2, 1, 3>>())
    };
    let out = out
        .permute::<_, Axes4<0, 2, 1, 3>>()
        .reshape_like(&(batch, nq, out_dim));
    (out, weights)
}

/// `x` on an owned tape (an empty one if it carried none).
fn traced<S: Shape, E: Dtype, D: Device<E>, T>(x: Tensor<S, E, D, T>) -> Tr<S, E, D>
where
    T: Tape<E, D>,
    OwnedTape<E, D>: Merge<T>,
{
    let (x, tape) = x.split_tape();
    x.put_tape(OwnedTape::default().merge(tape))
}

/// The logits with −∞ at every key `spec` hides from a query.
fn hide_keys<B: Dim, Q: Dim, K: Dim, E: Dtype + Float, D: Device<E>>(
    logits: Tr<(B, Head, Q, K), E, D>,
    spec: &AttentionSpec,
) -> Tr<(B, Head, Q, K), E, D> {
    let shape = *logits.shape();
    let (batch, _, nq, nk) = shape;
    let (nq, n) = (nq.size(), nk.size());
    let dev = logits.device().clone();
    let flag = |visible: bool| if visible { E::one() } else { E::zero() };
    let half = E::from_f64(0.5).expect("a float");
    // The flags and the −∞ fill per (Batch, Key) or, causal, per (Batch, Query, Key), broadcast
    // over the heads (and queries): nothing of the logits' size is built on the host.
    let (keep, minus_inf) = if spec.causal {
        let flags = (0..batch.size() * nq * n)
            .map(|i| {
                let (e, query, key) = (i / (nq * n), i / n % nq, i % n);
                flag(key <= query && spec.keep.is_none_or(|keep| keep[e * n + key]))
            })
            .collect();
        let small = (batch, shape.2, nk);
        let fill = vec![E::neg_infinity(); small.num_elements()];
        (
            dev.tensor_from_vec(flags, small)
                .gt(half)
                .broadcast_like::<_, Axis<1>>(&shape),
            dev.tensor_from_vec(fill, small)
                .broadcast_like::<_, Axis<1>>(&shape),
        )
    } else if let Some(keep) = spec.keep {
        let flags = keep.iter().map(|&k| flag(k)).collect();
        let small = (batch, nk);
        let fill = vec![E::neg_infinity(); keep.len()];
        (
            dev.tensor_from_vec(flags, small)
                .gt(half)
                .broadcast_like::<_, Axes2<1, 2>>(&shape),
            dev.tensor_from_vec(fill, small)
                .broadcast_like::<_, Axes2<1, 2>>(&shape),
        )
    } else {
        return logits;
    };
    keep.choose(logits, minus_inf)
}

/// The head widths of an attention's inputs, checked against each other.
pub(crate) struct HeadDims {
    /// The number of heads.
    pub heads: usize,
    /// Query and key width per head.
    pub dk: usize,
    /// Value width per head.
    pub dv: usize,
    /// Whether the keys and values are one head, shared by every query head.
    pub shared: bool,
}

impl HeadDims {
    /// # Panics
    /// As [`super::Kernels::multi_head_attention`].
    pub fn new<B: Dim, Q: Dim, K: Dim, DQ: Dim, DK: Dim, DV: Dim>(
        spec: &AttentionSpec,
        q: &(B, Q, DQ),
        k: &(B, K, DK),
        v: &(B, K, DV),
    ) -> Self {
        let heads = spec.heads.0;
        let (dq, pk, pv) = (q.2.size(), k.2.size(), v.2.size());
        let split = |width: usize, what: &str| {
            assert!(
                heads > 0 && width % heads == 0,
                "{heads} heads do not divide the {what} width {width}"
            );
            width / heads
        };
        let dk = split(dq, "query");
        let (want_pk, dv) = if spec.shared_kv {
            (dk, pv)
        } else {
            (dq, split(pv, "value"))
        };
        assert_eq!(
            pk, want_pk,
            "keys {pk} wide for queries {dq} wide in {heads} heads"
        );
        assert_eq!(
            q.0.size(),
            k.0.size(),
            "queries and keys of different batches"
        );
        assert_eq!(k.1.size(), v.1.size(), "as many values as keys");
        if let Some(keep) = spec.keep {
            assert_eq!(
                keep.len(),
                k.0.size() * k.1.size(),
                "keep must be Batch × Key"
            );
        }
        Self {
            heads,
            dk,
            dv,
            shared: spec.shared_kv,
        }
    }

    /// The output axis, `heads · dv` wide.
    pub fn out_dim<O: Dim>(&self) -> O {
        O::from_size(self.heads * self.dv).expect("the output axis is heads · dv wide")
    }
}
