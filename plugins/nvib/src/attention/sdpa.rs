//! Scaled dot-product attention with key padding, per head: the attention that denoising
//! attention reduces to with uniform π and Z = 0 (§B.4 of `docs/nvib-math.md`; the reference
//! is HEAD's `pytorch_scaled_dot_product_attention`).

use vaezoo_core::axes::{Batch, Model, Seq};

use super::{attend, with_weights, Projected, Read, WithWeights};
use crate::num::{Dev, Real};

/// softmax(q kᵀ/√E + mask) v per head, where the mask is −∞ at the components `keep` drops.
///
/// Returns the output (heads packed as the inputs) and the attention weights (without a
/// tape).
///
/// # Shapes
/// `x.q: (Batch, Seq, Model)`, `x.k, x.v: (Batch, Comp, Model)`, `keep: Batch × Comp`
/// → `(Batch, Seq, Model)`, `(Batch, Head, Seq, Comp)`
pub fn sdpa<E: Real, D: Dev<E>>(
    x: Projected<E, D>,
    keep: &[bool],
) -> WithWeights<(Batch, Seq, Model), E, D> {
    let scale = 1.0 / (x.head_width() as f64).sqrt();
    with_weights(attend(x, None, keep, scale, Read::All))
}
