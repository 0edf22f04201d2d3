//! The fused kernels behind every layer: one trait, [`Kernels`], that each device implements.
//!
//! Layers (and plugins) call these functions and never look at the device. The trait's
//! default methods compose dfdx's generic ops: that is the CUDA path and the f64 reference.
//! `Cpu` in f32 overrides them with fused kernels from [`cpu`] (one GEMM per product, bias and
//! activation in the same pass, hand-written backward passes that compute no gradient nobody
//! needs). Each CPU kernel is tested against the generic composition and by finite
//! differences.
//!
//! `VAEZOO_KERNELS=generic` in the environment switches the CPU back to the generic ops (for
//! benchmarking the fast path against them).

pub(crate) mod cpu;
pub mod denoising_keys;
mod gemm;
#[cfg(feature = "gemm-profile")]
pub mod gemm_profile;
pub mod generic;
pub mod mixture;

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use num_traits::Float;

use crate::axes::Head;
use crate::custom_op::HostGrad;
use crate::layers::Activation;
pub use denoising_keys::DenoisingKeys;
pub use mixture::{Eps, GaussianRows, MixtureKernels, Row};

/// A tensor recording its operations on a tape, in element type `E`.
pub type Tr<S, E, D> = Tensor<S, E, D, OwnedTape<E, D>>;

/// A Linear layer's weight as it is stored: `(in, out)` (vaezoo's MLP layers) or `(out, in)`
/// (PyTorch's `nn.Linear`, the Transformer layers).
pub enum Weight<K: Dim, N: Dim, E: Dtype, D: Storage<E>> {
    /// Stored `(in, out)`: `y = x W`.
    InOut(Tr<(K, N), E, D>),
    /// Stored `(out, in)`: `y = x Wᵀ`.
    OutIn(Tr<(N, K), E, D>),
}

/// How [`Kernels::multi_head_attention`] splits its inputs into heads, which keys it hides
/// and what it returns besides the output.
#[derive(Clone, Copy, Debug)]
pub struct AttentionSpec<'a> {
    /// The number of heads: head h owns columns h·d..(h+1)·d of the queries, keys and values.
    pub heads: Head,
    /// Whether the keys and values are one head wide, shared by every query head.
    pub shared_kv: bool,
    /// The factor of the logits `q·k` (1/√d in scaled dot-product attention).
    pub scale: f64,
    /// Row-major `Batch × Key`, true = a visible key (a real token); `None`: every key.
    pub keep: Option<&'a [bool]>,
    /// Also hides from query i every key j > i (torch's `is_causal`, aligned at the first key).
    pub causal: bool,
    /// Row-major `Batch × Query`, true = a query whose output is read; `None`: every query.
    /// The others (padding positions) get zero output rows and pass no gradient back; the
    /// weights, when asked for, are every query's.
    pub queries: Option<&'a [bool]>,
    /// Whether the values hold, per head, a gate and then a shift as wide as the queries, the
    /// output being `gate ⊙ q + shift` with both attention-weighted: NVIB's evaluation-time
    /// interpolation between each query and the attended means.
    pub query_gate: bool,
    /// Whether to return the attention weights too.
    pub want_weights: bool,
}

/// The attention output `(B, Q, O)` and, when asked for, the weights `(B, Head, Q, K)`
/// without a tape.
pub type Attended<B, Q, K, O, E, D> = (Tr<(B, Q, O), E, D>, Option<Tensor<(B, Head, Q, K), E, D>>);

/// Whether the CPU runs the fused kernels (the default) or the generic ops.
pub fn fast_path_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("VAEZOO_KERNELS").map_or(true, |v| v != "generic"))
}

/// The fused operations a device provides; the defaults are dfdx's generic ops.
pub trait Kernels<E: Dtype + Float>: Device<E> + HostGrad<E> + MixtureKernels<E> {
    /// `act(x · W + b)`. `x` may carry no tape (an input that needs no gradient).
    ///
    /// # Shapes
    /// `x: (M, K)`, `W: (K, N)` or `(N, K)`, `b: (N,)` → `(M, N)`
    fn linear<M: Dim, K: Dim, N: Dim, T>(
        x: Tensor<(M, K), E, Self, T>,
        weight: Weight<K, N, E, Self>,
        bias: Option<Tr<(N,), E, Self>>,
        activation: Activation,
    ) -> Tr<(M, N), E, Self>
    where
        T: Tape<E, Self>,
        OwnedTape<E, Self>: Merge<T>,
    {
        generic::linear(x, weight, bias, activation)
    }

    /// `act(x · W + b) ⊙ dropout` of the rows whose flag in `rows` is true; the other rows of
    /// the output are zero and pass no gradient back (padding positions, whose values nothing
    /// reads). `dropout` is a dropout layer's scaled keep mask over the output (`None`: none),
    /// handed over so that the backward pass keeps it without a copy.
    ///
    /// # Shapes
    /// `x: (M, K)`, `W: (K, N)` or `(N, K)`, `b: (N,)`, `rows: M`, `dropout: M × N` → `(M, N)`
    fn linear_rows<M: Dim, K: Dim, N: Dim>(
        x: Tr<(M, K), E, Self>,
        weight: Weight<K, N, E, Self>,
        bias: Option<Tr<(N,), E, Self>>,
        activation: Activation,
        rows: &[bool],
        dropout: Option<Vec<E>>,
    ) -> Tr<(M, N), E, Self> {
        generic::linear_rows(x, weight, bias, activation, rows, dropout.as_deref())
    }

    /// One Linear map per group of columns, `y_g = x_g · W_g (+ b_g)`: x_g and y_g are the g-th
    /// blocks of `k` and `n` columns of `x` and `y` (the heads of a packed multi-head tensor),
    /// and W_g the g-th block of rows of the weight, `(k, n)` as stored in `InOut` or `(n, k)`
    /// in `OutIn` (PyTorch's `[out, in]`, transposed in the product). `x` may carry no tape.
    ///
    /// # Shapes
    /// `x: (M, G·k)`, `W: (G·k, n)` (`InOut`) or `(G·n, k)` (`OutIn`), `b: (G·n,)` → `(M, G·n)`
    ///
    /// # Panics
    /// If the groups do not divide the weight's rows, or the widths disagree (caller bugs).
    fn grouped_linear<M: Dim, I: Dim, O: Dim, K: Dim, N: Dim, T>(
        x: Tensor<(M, I), E, Self, T>,
        weight: Weight<K, N, E, Self>,
        bias: Option<Tr<(O,), E, Self>>,
        groups: usize,
    ) -> Tr<(M, O), E, Self>
    where
        T: Tape<E, Self>,
        OwnedTape<E, Self>: Merge<T>,
    {
        generic::grouped_linear(x, weight, bias, groups)
    }

    /// Row-wise LayerNorm over the last axis, `(x − mean) / sqrt(var + eps) · γ + β`.
    ///
    /// # Shapes
    /// `x: (M, N)`, `γ, β: (N,)` → `(M, N)`
    fn layer_norm<M: Dim, N: Dim>(
        x: Tr<(M, N), E, Self>,
        gamma: Tr<(N,), E, Self>,
        beta: Tr<(N,), E, Self>,
        eps: f64,
    ) -> Tr<(M, N), E, Self> {
        generic::layer_norm(x, gamma, beta, eps)
    }

    /// `layer_norm(x + sub ⊙ mask)`: a post-LN residual sublayer's end, `mask` its dropout's
    /// scaled keep mask (`None`: no dropout).
    ///
    /// # Shapes
    /// `x, sub, mask: (M, N)`, `γ, β: (N,)` → `(M, N)`
    fn residual_layer_norm<M: Dim, N: Dim>(
        x: Tr<(M, N), E, Self>,
        sub: Tr<(M, N), E, Self>,
        mask: Option<Vec<E>>,
        gamma: Tr<(N,), E, Self>,
        beta: Tr<(N,), E, Self>,
        eps: f64,
    ) -> Tr<(M, N), E, Self> {
        generic::residual_layer_norm(x, sub, mask.as_deref(), gamma, beta, eps)
    }

    /// `Σ_row weight[row] · log softmax(logits[row])[target[row]]` over each of `G` groups of
    /// `R / G` consecutive rows (a sequence's weighted token log-likelihood, its sign and
    /// normalisation in `weights`).
    ///
    /// # Shapes
    /// `logits: (R, V)`, `targets, weights: R` → `(G,)`
    fn weighted_nll<R: Dim, V: Dim, G: Dim>(
        logits: Tr<(R, V), E, Self>,
        targets: &[usize],
        weights: &[E],
        groups: G,
    ) -> Tr<(G,), E, Self> {
        generic::weighted_nll(logits, targets, weights, groups)
    }

    /// [`Self::weighted_nll`] of the logits `x · W + b`, without the logits as a tensor (the
    /// output layer of a language model and its token loss).
    ///
    /// # Shapes
    /// `x: (R, K)`, `W: (K, V)` or `(V, K)`, `b: (V,)`, `targets, weights: R` → `(G,)`
    fn linear_weighted_nll<R: Dim, K: Dim, V: Dim, G: Dim>(
        x: Tr<(R, K), E, Self>,
        weight: Weight<K, V, E, Self>,
        bias: Option<Tr<(V,), E, Self>>,
        targets: &[usize],
        weights: &[E],
        groups: G,
    ) -> Tr<(G,), E, Self> {
        let logits = Self::linear(x, weight, bias, Activation::Identity);
        Self::weighted_nll(logits, targets, weights, groups)
    }

    /// The rows `ids` of `table`: an embedding lookup. The rows looked up for `frozen` (torch's
    /// `padding_idx`) pass no gradient back, so that row of the table keeps its values.
    ///
    /// # Shapes
    /// `table: (V, N)`, `ids: M` → `(M, N)`
    ///
    /// # Panics
    /// If an id is outside the table (a caller bug: the layers check their ids first).
    fn embedding<V: Dim, N: Dim>(
        table: Tr<(V, N), E, Self>,
        ids: &[usize],
        frozen: Option<usize>,
    ) -> Tr<(usize, N), E, Self> {
        generic::embedding(table, ids, frozen)
    }

    /// `scale · Σ_j x_ij²`, the scaled squared norm of each row.
    ///
    /// # Shapes
    /// `x: (M, N)` → `(M,)`
    fn scaled_sq_norm_rows<M: Dim, N: Dim>(
        x: Tr<(M, N), E, Self>,
        scale: f64,
    ) -> Tr<(M,), E, Self> {
        generic::scaled_sq_norm_rows(x, scale)
    }

    /// −log Bernoulli(x | sigmoid(logits)) summed over each row: the binary cross-entropy
    /// with logits, Σ_j max(l, 0) − l·x + log(1 + e^(−|l|)). The data `x` gets no gradient.
    ///
    /// # Shapes
    /// `logits, x: (M, N)` → `(M,)`
    fn bernoulli_nll<M: Dim, N: Dim>(
        logits: Tr<(M, N), E, Self>,
        x: &Tensor<(M, N), E, Self>,
    ) -> Tr<(M,), E, Self> {
        generic::bernoulli_nll(logits, x)
    }

    /// Multi-head attention, heads packed in the last axis: for every head h,
    /// `softmax(scale · q_h k_hᵀ + key_bias + mask) v_h`, written to the output's columns
    /// h·dv..(h+1)·dv. Hidden keys get logit −∞: exactly zero weight and gradient; a query that
    /// sees no key gives NaN, as in PyTorch. The inputs may carry no tape (no gradient is then
    /// computed for them).
    ///
    /// # Shapes
    /// `q: (B, Q, heads·dk)`, `k: (B, K, heads·dk)`, `v: (B, K, heads·dv)` (`shared_kv`:
    /// `k: (B, K, dk)`, `v: (B, K, dv)`), `key_bias: (B, K)`, `keep: B × K`, `queries: B × Q`
    /// → `(B, Q, heads·dv)` (`query_gate`: `dv = 2·dk` → `(B, Q, heads·dk)`),
    /// weights `(B, Head, Q, K)`
    ///
    /// # Panics
    /// If the heads do not divide the widths, the widths disagree, `O` is not `heads·dv` wide
    /// or `keep` is not `B × K` or `queries` not `B × Q` (caller bugs: the layers check their
    /// inputs first).
    #[allow(clippy::type_complexity)]
    fn multi_head_attention<B: Dim, Q: Dim, K: Dim, DQ: Dim, DK: Dim, DV: Dim, O: Dim, TQ, TK, TV>(
        q: Tensor<(B, Q, DQ), E, Self, TQ>,
        k: Tensor<(B, K, DK), E, Self, TK>,
        v: Tensor<(B, K, DV), E, Self, TV>,
        key_bias: Option<Tr<(B, K), E, Self>>,
        spec: AttentionSpec,
    ) -> Attended<B, Q, K, O, E, Self>
    where
        TQ: Tape<E, Self>,
        TK: Tape<E, Self>,
        TV: Tape<E, Self>,
        OwnedTape<E, Self>: Merge<TQ> + Merge<TK> + Merge<TV>,
    {
        generic::multi_head_attention(q, k, v, key_bias, spec)
    }
}

impl Kernels<f64> for Cpu {}

impl Kernels<f32> for Cpu {
    fn linear<M: Dim, K: Dim, N: Dim, T>(
        x: Tensor<(M, K), f32, Self, T>,
        weight: Weight<K, N, f32, Self>,
        bias: Option<Tr<(N,), f32, Self>>,
        activation: Activation,
    ) -> Tr<(M, N), f32, Self>
    where
        T: Tape<f32, Self>,
        OwnedTape<f32, Self>: Merge<T>,
    {
        if fast_path_enabled() {
            cpu::linear::forward(x, weight, bias, activation)
        } else {
            generic::linear(x, weight, bias, activation)
        }
    }

    fn linear_rows<M: Dim, K: Dim, N: Dim>(
        x: Tr<(M, K), f32, Self>,
        weight: Weight<K, N, f32, Self>,
        bias: Option<Tr<(N,), f32, Self>>,
        activation: Activation,
        rows: &[bool],
        dropout: Option<Vec<f32>>,
    ) -> Tr<(M, N), f32, Self> {
        if fast_path_enabled() {
            cpu::linear::forward_rows(x, weight, bias, activation, Some(rows), dropout)
        } else {
            generic::linear_rows(x, weight, bias, activation, rows, dropout.as_deref())
        }
    }

    fn grouped_linear<M: Dim, I: Dim, O: Dim, K: Dim, N: Dim, T>(
        x: Tensor<(M, I), f32, Self, T>,
        weight: Weight<K, N, f32, Self>,
        bias: Option<Tr<(O,), f32, Self>>,
        groups: usize,
    ) -> Tr<(M, O), f32, Self>
    where
        T: Tape<f32, Self>,
        OwnedTape<f32, Self>: Merge<T>,
    {
        if fast_path_enabled() {
            cpu::linear::grouped(x, weight, bias, Activation::Identity, groups, None, None)
        } else {
            generic::grouped_linear(x, weight, bias, groups)
        }
    }

    fn layer_norm<M: Dim, N: Dim>(
        x: Tr<(M, N), f32, Self>,
        gamma: Tr<(N,), f32, Self>,
        beta: Tr<(N,), f32, Self>,
        eps: f64,
    ) -> Tr<(M, N), f32, Self> {
        if fast_path_enabled() {
            cpu::layer_norm::forward(x, gamma, beta, eps)
        } else {
            generic::layer_norm(x, gamma, beta, eps)
        }
    }

    fn residual_layer_norm<M: Dim, N: Dim>(
        x: Tr<(M, N), f32, Self>,
        sub: Tr<(M, N), f32, Self>,
        mask: Option<Vec<f32>>,
        gamma: Tr<(N,), f32, Self>,
        beta: Tr<(N,), f32, Self>,
        eps: f64,
    ) -> Tr<(M, N), f32, Self> {
        if fast_path_enabled() {
            cpu::layer_norm::forward_residual(x, Some((sub, mask)), gamma, beta, eps)
        } else {
            generic::residual_layer_norm(x, sub, mask.as_deref(), gamma, beta, eps)
        }
    }

    fn weighted_nll<R: Dim, V: Dim, G: Dim>(
        logits: Tr<(R, V), f32, Self>,
        targets: &[usize],
        weights: &[f32],
        groups: G,
    ) -> Tr<(G,), f32, Self> {
        if fast_path_enabled() {
            cpu::nll::forward(logits, targets, weights, groups)
        } else {
            generic::weighted_nll(logits, targets, weights, groups)
        }
    }

    fn linear_weighted_nll<R: Dim, K: Dim, V: Dim, G: Dim>(
        x: Tr<(R, K), f32, Self>,
        weight: Weight<K, V, f32, Self>,
        bias: Option<Tr<(V,), f32, Self>>,
        targets: &[usize],
        weights: &[f32],
        groups: G,
    ) -> Tr<(G,), f32, Self> {
        if fast_path_enabled() {
            cpu::linear_nll::forward(x, weight, bias, targets, weights, groups)
        } else {
            let logits = generic::linear(x, weight, bias, Activation::Identity);
            generic::weighted_nll(logits, targets, weights, groups)
        }
    }

    fn embedding<V: Dim, N: Dim>(
        table: Tr<(V, N), f32, Self>,
        ids: &[usize],
        frozen: Option<usize>,
    ) -> Tr<(usize, N), f32, Self> {
        if fast_path_enabled() {
            cpu::embedding::forward(table, ids, frozen)
        } else {
            generic::embedding(table, ids, frozen)
        }
    }

    fn scaled_sq_norm_rows<M: Dim, N: Dim>(
        x: Tr<(M, N), f32, Self>,
        scale: f64,
    ) -> Tr<(M,), f32, Self> {
        if fast_path_enabled() {
            cpu::sq_norm::forward(x, scale)
        } else {
            generic::scaled_sq_norm_rows(x, scale)
        }
    }

    fn bernoulli_nll<M: Dim, N: Dim>(
        logits: Tr<(M, N), f32, Self>,
        x: &Tensor<(M, N), f32, Self>,
    ) -> Tr<(M,), f32, Self> {
        if fast_path_enabled() {
            cpu::bernoulli::forward(logits, x)
        } else {
            generic::bernoulli_nll(logits, x)
        }
    }

    fn multi_head_attention<B: Dim, Q: Dim, K: Dim, DQ: Dim, DK: Dim, DV: Dim, O: Dim, TQ, TK, TV>(
        q: Tensor<(B, Q, DQ), f32, Self, TQ>,
        k: Tensor<(B, K, DK), f32, Self, TK>,
        v: Tensor<(B, K, DV), f32, Self, TV>,
        key_bias: Option<Tr<(B, K), f32, Self>>,
        spec: AttentionSpec,
    ) -> Attended<B, Q, K, O, f32, Self>
    where
        TQ: Tape<f32, Self>,
        TK: Tape<f32, Self>,
        TV: Tape<f32, Self>,
        OwnedTape<f32, Self>: Merge<TQ> + Merge<TK> + Merge<TV>,
    {
        if fast_path_enabled() {
            cpu::attention::forward(q, k, v, key_bias, spec)
        } else {
            generic::multi_head_attention(q, k, v, key_bias, spec)
        }
    }
}

#[cfg(feature = "cuda")]
impl Kernels<f32> for Cuda {}
#[cfg(feature = "cuda")]
impl Kernels<f64> for Cuda {}

#[cfg(test)]
mod tests;
