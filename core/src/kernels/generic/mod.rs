//! The kernels as compositions of dfdx's generic ops: the CUDA path, the f64 reference and
//! what the CPU fast path is tested against. The attention's are in [`attention`].

mod attention;

pub use attention::multi_head_attention;
pub(crate) use attention::HeadDims;

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use num_traits::Float;

use super::mixture::keep_tensor;
use super::{Tr, Weight};
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
    dropout: Option<&[E]>,
) -> Tr<(M, N), E, D> {
    let y = linear(x, weight, bias, activation);
    let shape = *y.shape();
    let y = match dropout {
        Some(mask) => {
            let mask = y.device().tensor_from_vec(mask.to_vec(), shape);
            y * mask
        }
        None => y,
    };
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

/// `scale · Σ_j x_ij²` per row.
pub fn scaled_sq_norm_rows<M: Dim, N: Dim, E: Dtype + Float, D: Device<E>>(
    x: Tr<(M, N), E, D>,
    scale: f64,
) -> Tr<(M,), E, D> {
    x.square().sum::<(M,), Axis<1>>() * E::from_f64(scale).expect("a finite scale")
}

/// See [`super::Kernels::embedding`]: a gather, and for a frozen id a choice per row between
/// the gathered rows and a copy of them off the tape.
pub fn embedding<V: Dim, N: Dim, E: Dtype + Float, D: Device<E>>(
    table: Tr<(V, N), E, D>,
    ids: &[usize],
    frozen: Option<usize>,
) -> Tr<(usize, N), E, D> {
    let (vocab, n) = *table.shape();
    check_embedding_ids(ids, vocab.size());
    let dev = table.device().clone();
    let looked_up = table.gather(dev.tensor_from_vec(ids.to_vec(), (ids.len(),)));
    let Some(frozen) = frozen else {
        return looked_up;
    };
    // A new tensor: `choose` must not read one tensor on both sides.
    let copy = looked_up.retaped::<NoneTape>() * E::one();
    let trained: Vec<bool> = ids.iter().map(|&id| id != frozen).collect();
    keep_tensor::<_, E, D>(&dev, &trained, (ids.len(),))
        .broadcast_like::<_, Axis<1>>(&(ids.len(), n))
        .choose(looked_up, copy)
}

/// The precondition of [`embedding`], shared with the CPU kernel: every id inside the table.
pub(crate) fn check_embedding_ids(ids: &[usize], vocab: usize) {
    if let Some(&bad) = ids.iter().find(|&&id| id >= vocab) {
        panic!("embedding: id {bad} outside a table of {vocab} rows");
    }
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
        groups > 0 && rows.is_multiple_of(groups),
        "{rows} rows in {groups} groups"
    );
    assert!(
        targets.iter().all(|&t| t < vocab),
        "target outside the vocabulary"
    );
}

/// `x` on an owned tape (an empty one if it carried none).
pub(super) fn traced<S: Shape, E: Dtype, D: Device<E>, T>(x: Tensor<S, E, D, T>) -> Tr<S, E, D>
where
    T: Tape<E, D>,
    OwnedTape<E, D>: Merge<T>,
{
    let (x, tape) = x.split_tape();
    x.put_tape(OwnedTape::default().merge(tape))
}
