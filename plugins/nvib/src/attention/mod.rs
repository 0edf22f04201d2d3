//! Denoising attention (DA): NVIB's cross-attention over a Dirichlet-process latent, and the
//! scaled dot-product attention it generalises (§B of `docs/nvib-math.md`).
//!
//! - [`sdpa`]: scaled dot-product attention with key padding;
//! - [`denoising_attention_train`] (§B.1): attention to the sampled latent Z, weighted by π;
//! - [`denoising_attention_eval`] (§B.2): the query attends to the Gaussians N(μ, σ²) and is
//!   interpolated with their means;
//! - [`denoising_mha_train`], [`denoising_mha_eval`] (§B.3): the official
//!   `DenoisingMultiheadAttention` as functions of explicit (traced) weights.
//!
//! Conventions: batch-first; per-head queries, keys, values, latent queries and outputs are
//! packed in the last axis as the in-projections give them (head h owns columns
//! h·E..(h+1)·E, torch's `view(…, nh, E)`); the attention weights are `(Batch, Head, …)`
//! where the official code flattens to `B·nh` with index `b·nh + h`. The attention itself is
//! one fused kernel
//! ([`Kernels::multi_head_attention`](vaezoo_core::kernels::Kernels::multi_head_attention)).
//! `keep` is row-major `Batch × Comp`, true = a real
//! component (the official masks are its negation). A component is also dropped where π ≤ 0.
//! Dropped components get logit −∞ (exactly zero weight and zero gradient); a row with every
//! component dropped gives NaN, as in torch (NVIB never does this: the prior component at
//! index 0 is always kept).

mod eval;
mod multihead;
mod sdpa;
mod train;

#[cfg(test)]
mod tests;

pub use eval::{
    denoising_attention_eval, denoising_attention_eval_with, EvalKeys, LatentQuery, ValueMap,
};
pub use multihead::{
    denoising_mha_eval, denoising_mha_eval_with, denoising_mha_train, denoising_mha_train_kept,
    sdpa_mha, MhaBias, MhaWeights, SampledLatent,
};
pub use sdpa::sdpa;
pub use train::denoising_attention_train;

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp, Head, Model, Seq};
use vaezoo_core::kernels::AttentionSpec;

use crate::num::{c, tiny, Dev, Real, Tr};

/// Attention weights per head, `(Batch, Head, Seq, Comp)`, without a tape.
pub type Weights<E, D> = Tensor<(Batch, Head, Seq, Comp), E, D>;

/// An output of shape `S` and the attention weights that made it.
pub type WithWeights<S, E, D> = (Tr<S, E, D>, Weights<E, D>);

/// An output of shape `S` and, when they were asked for, the attention weights.
type MaybeWeights<S, E, D> = (Tr<S, E, D>, Option<Weights<E, D>>);

/// Per-head queries, keys and values packed in the model width, as the in-projections give
/// them (torch's layout before its `view(…, nh, E)`): head h owns columns h·E..(h+1)·E,
/// E = Model / heads.
pub struct Projected<E: Real, D: Dev<E>> {
    /// The number of heads; it must divide the `Model` width.
    pub heads: Head,
    /// The queries, `(Batch, Seq, Model)`.
    pub q: Tr<(Batch, Seq, Model), E, D>,
    /// The keys, `(Batch, Comp, Model)`.
    pub k: Tr<(Batch, Comp, Model), E, D>,
    /// The values, `(Batch, Comp, Model)`.
    pub v: Tr<(Batch, Comp, Model), E, D>,
}

impl<E: Real, D: Dev<E>> Projected<E, D> {
    /// E, the width of one head.
    fn head_width(&self) -> usize {
        self.q.shape().2 .0 / self.heads.0
    }
}

/// What a caller reads of an attention.
#[derive(Clone, Copy)]
enum Read<'a> {
    /// Every output, and the weights.
    All,
    /// Only the outputs of the queries flagged (row-major `Batch × Seq`; `None`: all): the
    /// others are zero, and no weights are made.
    Outputs(Option<&'a [bool]>),
}

/// softmax(scale · q kᵀ + key_bias, −∞ where `keep` is false) v for every head of `x`, and the
/// weights (with [`Read::All`]).
///
/// # Shapes
/// `key_bias: (Batch, Comp)`, `keep: Batch × Comp` → `(Batch, Seq, Model)`,
/// `(Batch, Head, Seq, Comp)`
fn attend<E: Real, D: Dev<E>>(
    x: Projected<E, D>,
    key_bias: Option<Tr<(Batch, Comp), E, D>>,
    keep: &[bool],
    scale: f64,
    read: Read,
) -> MaybeWeights<(Batch, Seq, Model), E, D> {
    let (queries, want_weights) = match read {
        Read::All => (None, true),
        Read::Outputs(queries) => (queries, false),
    };
    let spec = AttentionSpec {
        heads: x.heads,
        shared_kv: false,
        scale,
        keep: Some(keep),
        causal: false,
        queries,
        query_gate: false,
        want_weights,
    };
    D::multi_head_attention(x.q, x.k, x.v, key_bias, spec)
}

/// The output and the weights of an [`attend`] with [`Read::All`].
fn with_weights<S: Shape, E: Real, D: Dev<E>>(
    (out, weights): MaybeWeights<S, E, D>,
) -> WithWeights<S, E, D> {
    (out, weights.expect("the weights were asked for"))
}

/// Which official version's constants to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaVersion {
    /// idiap/nvib v1.0 (the ICLR 2023 code the NVAE uses): π clamped at 1e-8 before the log;
    /// eval variance penalty Σ_p log V (c₃ = 1); its module ignores the key and value biases
    /// in evaluation. The official code works with one head only (so its eval query variance
    /// is √E = √P); with more heads the port applies HEAD's per-head formulas with these
    /// constants.
    V1,
    /// idiap/nvib HEAD (= v3.0): π clamped at the float type's tiny; c₃ = ½; any number of
    /// heads, query variance √E.
    Head,
}

impl DaVersion {
    /// The floor of π before its log.
    fn pi_floor<E: Real>(self) -> E {
        match self {
            Self::V1 => c(1e-8),
            Self::Head => tiny(),
        }
    }

    /// c₃, the weight of the eval-time variance penalty Σ_p log V.
    fn log_var_weight<E: Real>(self) -> E {
        match self {
            Self::V1 => c(1.0),
            Self::Head => c(0.5),
        }
    }
}

/// `keep` with the components of π ≤ 0 dropped too.
fn keep_where_pi_positive<E: Real, D: Dev<E>>(
    keep: &[bool],
    pi: &Tr<(Batch, Comp), E, D>,
) -> Vec<bool> {
    let pi = pi.as_vec();
    assert_eq!(keep.len(), pi.len(), "keep must be Batch × Comp");
    keep.iter()
        .zip(pi)
        .map(|(&k, p)| k && p > E::zero())
        .collect()
}

/// log max(π, floor): the mixture weight's log-prior term of the logits.
///
/// # Shapes
/// `pi: (Batch, Comp)` → `(Batch, Comp)`
fn log_pi<E: Real, D: Dev<E>>(
    pi: Tr<(Batch, Comp), E, D>,
    version: DaVersion,
) -> Tr<(Batch, Comp), E, D> {
    let floor = version.pi_floor::<E>().to_f64().expect("a float");
    pi.clamp(floor, f64::INFINITY).ln()
}
