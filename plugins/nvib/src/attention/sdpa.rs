//! Scaled dot-product attention with key padding, per head: the attention that denoising
//! attention reduces to with uniform π and Z = 0 (§B.4 of `docs/nvib-math.md`; the reference
//! is HEAD's `pytorch_scaled_dot_product_attention`).

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp, Head, HeadDim, Seq};

use super::{masked_softmax, WithWeights};
use crate::num::{c, Dev, Real, Tr};

/// softmax(q kᵀ/√E + mask) v, where the mask is −∞ at the components `keep` drops.
///
/// Returns the output and the attention weights (without a tape).
///
/// # Shapes
/// `q: (Batch, Head, Seq, HeadDim)`, `k, v: (Batch, Head, Comp, HeadDim)`,
/// `keep: Batch × Comp` → `(Batch, Head, Seq, HeadDim)`, `(Batch, Head, Seq, Comp)`
pub fn sdpa<E: Real, D: Dev<E>>(
    q: Tr<(Batch, Head, Seq, HeadDim), E, D>,
    k: Tr<(Batch, Head, Comp, HeadDim), E, D>,
    v: Tr<(Batch, Head, Comp, HeadDim), E, D>,
    keep: &[bool],
) -> WithWeights<(Batch, Head, Seq, HeadDim), E, D> {
    let scale = c::<E>(1.0 / (q.shape().3 .0 as f64).sqrt());
    let logits = (q * scale).matmul(k.permute::<_, Axes4<0, 1, 3, 2>>());
    let (attn, weights) = masked_softmax(logits, keep);
    (attn.matmul(v), weights)
}
