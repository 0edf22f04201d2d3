//! Evaluation-time denoising attention (§B.2 of `docs/nvib-math.md`; v1.0
//! `scaled_dot_product_attention_evaluation`, HEAD `denoising_attention_eval`): the query
//! attends to the component Gaussians N(μ_n, σ²_n) and reads an interpolation between itself
//! and their means.

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use vaezoo_core::axes::{Batch, Comp, Head, HeadDim, Latent, Seq};

use super::{
    keep_where_pi_positive, log_pi, masked_softmax, per_head_matmul, per_query, DaVersion,
    WithWeights,
};
use crate::num::{c, Dev, Real, Tr};

/// Every head's query mapped into the latent space.
pub struct LatentQuery<E: Real, D: Dev<E>> {
    /// u = q_h W_{k,h}: the query through the head's key weights (the official
    /// `projected_u`), `(Batch, Head, Seq, Latent)`.
    pub u: Tr<(Batch, Head, Seq, Latent), E, D>,
    /// b = q_h·b_{k,h}, the key bias's per-query constant (HEAD's `projected_b`; it cancels in
    /// the softmax), `(Batch, Head, Seq)`; `None` without an in-projection bias.
    pub b: Option<Tr<(Batch, Head, Seq), E, D>>,
}

/// Every head's value map from the latent space, in torch's `[out, in]` layout.
pub struct ValueMap<E: Real, D: Dev<E>> {
    /// W_{v,h}, `(Head, HeadDim, Latent)`.
    pub weight: Tr<(Head, HeadDim, Latent), E, D>,
    /// b_{v,h}, `(Head, HeadDim)`; `None` without an in-projection bias.
    pub bias: Option<Tr<(Head, HeadDim), E, D>>,
}

/// Denoising attention to the component Gaussians, for every head, as the official code
/// computes it. With s = √E (E the head width; v1.0 has one head, so s = √P) and
/// V_np = σ²_np + s:
///
/// logit[m,n] = Σ_p u_mp μ_np/V_np + b_m + log max(π_n, floor) − ½ Σ_p μ²_np/V_np
/// − c₃ Σ_p log V_np, −∞ where the component is dropped (`keep` false or π_n ≤ 0);
///
/// out_m = [Σ_n a[m,n] (σ²_n/V_n ⊙ u_m + s/V_n ⊙ μ_n)] W_{v,h}ᵀ + b_{v,h} Σ_n a[m,n],
/// a = softmax_n(logit).
///
/// c₃ = 1 (v1.0) or ½ (HEAD). Like the official code, the logit omits −½ Σ_p u²_mp/V_np,
/// which depends on n when the variances differ (§B.2).
///
/// Returns the output and the attention weights (without a tape).
///
/// # Shapes
/// `query.u: (Batch, Head, Seq, Latent)`, `query.b: (Batch, Head, Seq)`,
/// `mu, log_var: (Batch, Comp, Latent)`, `pi: (Batch, Comp)`,
/// `value.weight: (Head, HeadDim, Latent)`, `value.bias: (Head, HeadDim)`,
/// `keep: Batch × Comp` → `(Batch, Head, Seq, HeadDim)`, `(Batch, Head, Seq, Comp)`
pub fn denoising_attention_eval<E: Real, D: Dev<E>>(
    query: LatentQuery<E, D>,
    mu: Tr<(Batch, Comp, Latent), E, D>,
    log_var: Tr<(Batch, Comp, Latent), E, D>,
    pi: Tr<(Batch, Comp), E, D>,
    value: ValueMap<E, D>,
    keep: &[bool],
    version: DaVersion,
) -> WithWeights<(Batch, Head, Seq, HeadDim), E, D> {
    let keep = keep_where_pi_positive(keep, &pi);
    let LatentQuery { u, b } = query;
    let s = c::<E>((value.weight.shape().1 .0 as f64).sqrt());

    // Per component: V = σ² + s, μ/V, and the prior terms of the logits.
    let var = log_var.exp();
    let biased_var = var.retaped::<OwnedTape<E, D>>() + s;
    let mu_over_v = mu.retaped::<OwnedTape<E, D>>() / biased_var.retaped::<OwnedTape<E, D>>();
    let var_ratio = var / biased_var.retaped::<OwnedTape<E, D>>();
    let half_mahalanobis =
        (mu * mu_over_v.retaped::<OwnedTape<E, D>>()).sum::<(Batch, Comp), Axis<2>>() * c::<E>(0.5);
    let log_det = biased_var.ln().sum::<(Batch, Comp), Axis<2>>() * version.log_var_weight::<E>();
    let prior = log_pi(pi, version) - half_mahalanobis - log_det;

    // Logits and attention weights.
    let logits = shared_by_heads(
        u.retaped::<OwnedTape<E, D>>(),
        mu_over_v
            .retaped::<OwnedTape<E, D>>()
            .permute::<_, Axes3<0, 2, 1>>(),
    );
    let shape = *logits.shape();
    let logits = logits + per_query(prior, &shape);
    let logits = match b {
        Some(b) => logits + b.broadcast_like::<_, Axis<3>>(&shape),
        None => logits,
    };
    let (attn, weights) = masked_softmax(logits, &keep);

    // Interpolation between the query and the means, then the value map.
    let toward_query = shared_by_heads(attn.retaped::<OwnedTape<E, D>>(), var_ratio) * u;
    let toward_mean = shared_by_heads(attn.retaped::<OwnedTape<E, D>>(), mu_over_v * s);
    let ValueMap { weight, bias } = value;
    let out = per_head_matmul(
        toward_query + toward_mean,
        weight.permute::<_, Axes3<0, 2, 1>>(),
    );
    let out_shape = *out.shape();
    let out = match bias {
        Some(bias) => {
            let mass = attn.sum::<(Batch, Head, Seq), Axis<3>>();
            out + bias.broadcast_like::<_, Axes2<0, 2>>(&out_shape)
                * mass.broadcast_like::<_, Axis<3>>(&out_shape)
        }
        None => {
            let (out, tape) = out.split_tape();
            out.put_tape(tape.merge(attn.split_tape().1))
        }
    };
    (out, weights)
}

/// Σ_k x[b,h,m,k] y[b,k,j]: every head's rows times the example's matrix `y`, as one batched
/// matmul over examples (no zero-stride operand, which cuBLAS rejects).
///
/// # Shapes
/// `x: (Batch, Head, Seq, K)`, `y: (Batch, K, J)` → `(Batch, Head, Seq, J)`
fn shared_by_heads<K: Dim, J: Dim, E: Real, D: Dev<E>>(
    x: Tr<(Batch, Head, Seq, K), E, D>,
    y: Tr<(Batch, K, J), E, D>,
) -> Tr<(Batch, Head, Seq, J), E, D> {
    let (batch, heads, seq, k) = *x.shape();
    let j = y.shape().2;
    x.reshape_like(&(batch, heads.0 * seq.0, k))
        .matmul(y)
        .reshape_like(&(batch, heads, seq, j))
}
