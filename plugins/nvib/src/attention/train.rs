//! Training-time denoising attention (§B.1 of `docs/nvib-math.md`; v1.0
//! `scaled_dot_product_attention_training`, HEAD `denoising_attention_train`).

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp, Latent, Model, Seq};

use super::{
    attend, keep_where_pi_positive, log_pi, with_weights, DaVersion, MaybeWeights, Projected, Read,
    WithWeights,
};
use crate::num::{Dev, Real, Tr};

/// Denoising attention to a sampled latent, for every head:
///
/// logit[m,n] = q_m·k_n/√E + log max(π_n, floor) − ‖Z_n‖²/(2√E), −∞ where the component is
/// dropped (`keep` false or π_n ≤ 0); out_m = Σ_n softmax_n(logit)[m,n] v_n.
///
/// `x` holds the per-head projections, in-projection bias included (k and v are projections
/// of `z`). `z` is the un-projected sample, whose squared norm is taken over all P latent
/// dimensions but scaled by 1/(2√E) with the head width E; `pi` and `z` are shared by the
/// heads. Only the π floor depends on `version` (1e-8 in v1.0, the float's tiny in HEAD).
///
/// Returns the output (heads packed as the inputs) and the attention weights (without a
/// tape). Attention dropout, which HEAD applies when `dropout_p > 0`, is not part of this
/// function.
///
/// # Shapes
/// `x.q: (Batch, Seq, Model)`, `x.k, x.v: (Batch, Comp, Model)`, `pi: (Batch, Comp)`,
/// `z: (Batch, Comp, Latent)`, `keep: Batch × Comp`
/// → `(Batch, Seq, Model)`, `(Batch, Head, Seq, Comp)`
pub fn denoising_attention_train<E: Real, D: Dev<E>>(
    x: Projected<E, D>,
    pi: Tr<(Batch, Comp), E, D>,
    z: Tr<(Batch, Comp, Latent), E, D>,
    keep: &[bool],
    version: DaVersion,
) -> WithWeights<(Batch, Seq, Model), E, D> {
    with_weights(attend_train(x, pi, z, keep, version, Read::All))
}

/// [`denoising_attention_train`] reading what `read` says.
///
/// # Shapes
/// As [`denoising_attention_train`].
pub(super) fn attend_train<E: Real, D: Dev<E>>(
    x: Projected<E, D>,
    pi: Tr<(Batch, Comp), E, D>,
    z: Tr<(Batch, Comp, Latent), E, D>,
    keep: &[bool],
    version: DaVersion,
    read: Read,
) -> MaybeWeights<(Batch, Seq, Model), E, D> {
    let keep = keep_where_pi_positive(keep, &pi);
    let root_e = (x.head_width() as f64).sqrt();
    let (batch, comp, latent) = *z.shape();
    let rows = z.reshape_like(&(batch.0 * comp.0, latent));
    let half_sq_norm = D::scaled_sq_norm_rows(rows, 0.5 / root_e).reshape_like(&(batch, comp));
    let prior = log_pi(pi, version) - half_sq_norm;
    attend(x, Some(prior), &keep, 1.0 / root_e, read)
}
