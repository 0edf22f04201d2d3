//! Multi-head attention as dfdx ops: heads split out with reshapes and permutes, masks as
//! broadcast −∞ fills, softmax, and the heads merged back.

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use num_traits::Float;

use super::traced;
use crate::axes::{Head, HeadDim};
use crate::kernels::mixture::keep_tensor;
use crate::kernels::{Attended, AttentionSpec, Tr};

/// See [`crate::kernels::Kernels::multi_head_attention`].
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
    let q = traced(q);
    let gate_query = spec.query_gate.then(|| q.retaped::<OwnedTape<E, D>>());
    let q = q
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
    let out = out.permute::<_, Axes4<0, 2, 1, 3>>();
    let out = match gate_query {
        // Rows of (gate, shift) for every (example, query, head).
        Some(q) => {
            let rows = batch.size() * nq.size() * heads.0;
            let halves = out.reshape_like(&(rows, Const::<2>, dk));
            let dev = q.device().clone();
            let index = |i: usize| dev.tensor_from_vec(vec![i; rows], (rows,));
            let shift = halves.retaped::<OwnedTape<E, D>>().select(index(1));
            (halves.select(index(0)) * q.reshape_like(&(rows, dk)) + shift)
                .reshape_like(&(batch, nq, out_dim))
        }
        None => out.reshape_like(&(batch, nq, out_dim)),
    };
    let out = match spec.queries {
        // `choose`, not a product: a query that sees no key has NaN outputs.
        Some(read) => {
            let dev = out.device().clone();
            let shape = *out.shape();
            keep_tensor::<_, E, D>(&dev, read, (batch, nq))
                .broadcast_like::<_, Axis<2>>(&shape)
                .choose(out, dev.zeros_like(&shape))
        }
        None => out,
    };
    (out, weights)
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
    /// Whether the values hold a gate and a shift for the queries (`dv = 2·dk`).
    pub gate: bool,
}

impl HeadDims {
    /// # Panics
    /// As [`crate::kernels::Kernels::multi_head_attention`].
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
                heads > 0 && width.is_multiple_of(heads),
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
        if spec.query_gate {
            assert_eq!(
                dv,
                2 * dk,
                "gated values hold a gate and a shift as wide as the queries"
            );
        }
        Self {
            heads,
            dk,
            dv,
            shared: spec.shared_kv,
            gate: spec.query_gate,
        }
    }

    /// The output width of a head: `dk` for gated values, else `dv`.
    pub fn d_out(&self) -> usize {
        if self.gate {
            self.dk
        } else {
            self.dv
        }
    }

    /// The output axis, `heads · d_out` wide.
    pub fn out_dim<O: Dim>(&self) -> O {
        O::from_size(self.heads * self.d_out()).expect("the output axis is heads · d_out wide")
    }
}
