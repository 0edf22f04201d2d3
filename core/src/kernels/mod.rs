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
mod gemm;
pub mod generic;
pub mod mixture;

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use num_traits::Float;

use crate::custom_op::HostGrad;
use crate::layers::Activation;
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
}

#[cfg(feature = "cuda")]
impl Kernels<f32> for Cuda {}
#[cfg(feature = "cuda")]
impl Kernels<f64> for Cuda {}

#[cfg(test)]
mod tests;
