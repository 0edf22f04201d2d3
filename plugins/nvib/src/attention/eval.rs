//! Evaluation-time denoising attention (§B.2 of `docs/nvib-math.md`; v1.0
//! `scaled_dot_product_attention_evaluation`, HEAD `denoising_attention_eval`): the query
//! attends to the component Gaussians N(μ_n, σ²_n) and reads an interpolation between itself
//! and their means.

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp, Head, Latent, Model, Seq};
use vaezoo_core::kernels::{AttentionSpec, DenoisingKeys, Weight};

use super::{keep_where_pi_positive, log_pi, DaVersion, WithWeights};
use crate::num::{Dev, Real, Tr};

/// Every head's query mapped into the latent space.
pub struct LatentQuery<E: Real, D: Dev<E>> {
    /// The number of heads.
    pub heads: Head,
    /// u = q_h W_{k,h}: each head's query through its key weights (the official
    /// `projected_u`), heads packed: `(Batch, Seq, heads·P)`, head h in columns
    /// h·P..(h+1)·P.
    pub u: Tr<(Batch, Seq, usize), E, D>,
}

/// Every head's value map from the latent space, in torch's `[out, in]` layout.
pub struct ValueMap<E: Real, D: Dev<E>> {
    /// W_v, `(Model, Latent)`: head h's map W_{v,h} is rows h·E..(h+1)·E.
    pub weight: Tr<(Model, Latent), E, D>,
    /// b_v, `(Model,)`; `None` without an in-projection bias.
    pub bias: Option<Tr<(Model,), E, D>>,
}

/// The per-component terms of evaluation-time denoising attention, which depend on the latent
/// alone: computed once per latent ([`EvalKeys::new`]) and read by every query batch that
/// attends to it (greedy decoding attends to one latent at every step, in every layer).
pub struct EvalKeys<E: Real, D: Dev<E>> {
    /// μ/V, the keys (shared by the heads): `(Batch, Comp, Latent)`.
    keys: Tr<(Batch, Comp, Latent), E, D>,
    /// [σ²/V, s·μ/V], the gate and the shift (shared by the heads): `(Batch, Comp, 2·Latent)`.
    values: Tr<(Batch, Comp, Latent), E, D>,
    /// log max(π, floor) − ½ Σ_p μ²/V − c₃ Σ_p log V: `(Batch, Comp)`.
    prior: Tr<(Batch, Comp), E, D>,
    /// The components that may be attended: `Batch × Comp`.
    keep: Vec<bool>,
}

impl<E: Real, D: Dev<E>> EvalKeys<E, D> {
    /// The terms of the components N(μ_n, σ²_n) with weights π for heads `head_width` wide
    /// (s = √head_width).
    ///
    /// # Shapes
    /// `mu, log_var: (Batch, Comp, Latent)`, `pi: (Batch, Comp)`, `keep: Batch × Comp`
    pub fn new(
        mu: Tr<(Batch, Comp, Latent), E, D>,
        log_var: Tr<(Batch, Comp, Latent), E, D>,
        pi: Tr<(Batch, Comp), E, D>,
        keep: &[bool],
        version: DaVersion,
        head_width: usize,
    ) -> Self {
        let keep = keep_where_pi_positive(keep, &pi);
        let DenoisingKeys {
            keys,
            values,
            terms,
        } = D::denoising_keys(
            mu,
            log_var,
            (head_width as f64).sqrt(),
            version.log_var_weight::<f64>(),
        );
        // log max(π, floor) − ½ Σ_p μ²/V − c₃ Σ_p log V
        let prior = log_pi(pi, version) + terms;
        Self {
            keys,
            values,
            prior,
            keep,
        }
    }

    /// Handles on the same terms for another query batch, without the tape that made them (no
    /// gradient reaches the latent through them: for evaluation).
    pub fn reuse(&self) -> Self {
        Self {
            keys: self.keys.retaped(),
            values: self.values.retaped(),
            prior: self.prior.retaped(),
            keep: self.keep.clone(),
        }
    }
}

/// Denoising attention to the component Gaussians, for every head, as the official code
/// computes it. With s = √E (E the head width; v1.0 has one head, so s = √P) and
/// V_np = σ²_np + s:
///
/// logit[m,n] = Σ_p u_mp μ_np/V_np + log max(π_n, floor) − ½ Σ_p μ²_np/V_np
/// − c₃ Σ_p log V_np, −∞ where the component is dropped (`keep` false or π_n ≤ 0);
///
/// out_m = [Σ_n a[m,n] (σ²_n/V_n ⊙ u_m + s/V_n ⊙ μ_n)] W_{v,h}ᵀ + b_{v,h} Σ_n a[m,n],
/// a = softmax_n(logit).
///
/// c₃ = 1 (v1.0) or ½ (HEAD). Like the official code, the logit omits −½ Σ_p u²_mp/V_np,
/// which depends on n when the variances differ (§B.2). HEAD's per-query constant
/// b = q_h·b_{k,h} is left out: it cancels in the softmax. So does the mass Σ_n a = 1.
///
/// One attention call computes both weighted sums and the interpolation: the keys μ/V and
/// the values [σ²/V, s·μ/V] (a gate for u and a shift) are shared by the heads.
///
/// Returns the output (heads packed) and the attention weights (without a tape).
///
/// # Shapes
/// `query.u: (Batch, Seq, heads·P)`, `mu, log_var: (Batch, Comp, Latent)`,
/// `pi: (Batch, Comp)`, `value.weight: (Model, Latent)`, `value.bias: (Model,)`,
/// `keep: Batch × Comp` → `(Batch, Seq, Model)`, `(Batch, Head, Seq, Comp)`
pub fn denoising_attention_eval<E: Real, D: Dev<E>>(
    query: LatentQuery<E, D>,
    mu: Tr<(Batch, Comp, Latent), E, D>,
    log_var: Tr<(Batch, Comp, Latent), E, D>,
    pi: Tr<(Batch, Comp), E, D>,
    value: ValueMap<E, D>,
    keep: &[bool],
    version: DaVersion,
) -> WithWeights<(Batch, Seq, Model), E, D> {
    let (model, _) = *value.weight.shape();
    let keys = EvalKeys::new(mu, log_var, pi, keep, version, model.0 / query.heads.0);
    denoising_attention_eval_with(query, keys, value)
}

/// [`denoising_attention_eval`] over terms computed beforehand ([`EvalKeys`]).
///
/// # Shapes
/// `query.u: (Batch, Seq, heads·P)`, `value.weight: (Model, Latent)`, `value.bias: (Model,)`
/// → `(Batch, Seq, Model)`, `(Batch, Head, Seq, Comp)`
pub fn denoising_attention_eval_with<E: Real, D: Dev<E>>(
    query: LatentQuery<E, D>,
    keys: EvalKeys<E, D>,
    value: ValueMap<E, D>,
) -> WithWeights<(Batch, Seq, Model), E, D> {
    let LatentQuery { heads, u } = query;
    let (batch, seq, _) = *u.shape();
    let (model, latent) = *value.weight.shape();
    let EvalKeys {
        keys,
        values,
        prior,
        keep,
    } = keys;
    let spec = AttentionSpec {
        heads,
        shared_kv: true,
        scale: 1.0,
        keep: Some(&keep),
        causal: false,
        queries: None,
        query_gate: true,
        want_weights: true,
    };
    let (interpolated, weights): (Tr<(Batch, Seq, usize), E, D>, _) =
        D::multi_head_attention(u, keys, values, Some(prior), spec);
    let rows = batch.0 * seq.0;

    // The value maps, every head's rows through its block of W_v.
    let out = D::grouped_linear(
        interpolated.reshape_like(&(rows, heads.0 * latent.0)),
        Weight::OutIn(value.weight),
        value.bias,
        heads.0,
    );
    let weights = weights.expect("the weights were asked for");
    (out.reshape_like(&(batch, seq, model)), weights)
}
