//! The official `DenoisingMultiheadAttention` module (§B.3 of `docs/nvib-math.md`) as pure
//! functions of explicit weights: the decoder's cross-attention reading the NVIB latent
//! (z, π, μ, logσ²). Weights are traced tensors, so a plugin owning them as parameters gets
//! their gradients.
//!
//! v1.0 (the NVAE's: one head, `bias=False`) and HEAD (any number of heads, `bias=True`) are
//! covered. HEAD's module eval path is broken (§B.3); [`denoising_mha_eval`] computes what it
//! is meant to return (golden `da_head_eval_fn.mha_output_intended`).

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use vaezoo_core::axes::{Batch, Comp, Head, Latent, Model, Seq};
use vaezoo_core::kernels::Weight;
use vaezoo_core::layers::Activation;

use super::train::attend_train;
use super::{
    denoising_attention_eval_with, sdpa, with_weights, DaVersion, EvalKeys, LatentQuery,
    MaybeWeights, Projected, Read, ValueMap, WithWeights,
};
use crate::num::{Dev, Real, Tr};

/// The projection biases (torch's `bias=True`).
pub struct MhaBias<E: Real, D: Dev<E>> {
    /// b_q, b_k, b_v: the official `in_proj_bias` [3P] split in three, each `(Model,)`.
    pub q: Tr<(Model,), E, D>,
    /// See `q`.
    pub k: Tr<(Model,), E, D>,
    /// See `q`.
    pub v: Tr<(Model,), E, D>,
    /// The output projection's bias, `(Model,)`.
    pub out: Tr<(Model,), E, D>,
}

/// The weights of one denoising multi-head attention, in torch's `[out, in]` layout
/// (y = x Wᵀ + b). The official packed `in_proj_weight` [3P, P] is `[q; k; v]` stacked along
/// its rows. Head h owns rows h·E..(h+1)·E of `q`, `k` and `v` (E = Model / heads).
pub struct MhaWeights<E: Real, D: Dev<E>> {
    /// The number of heads; it must divide the `Model` width.
    pub heads: Head,
    /// W_q, `(Model, Model)`.
    pub q: Tr<(Model, Model), E, D>,
    /// W_k, `(Model, Latent)`.
    pub k: Tr<(Model, Latent), E, D>,
    /// W_v, `(Model, Latent)`.
    pub v: Tr<(Model, Latent), E, D>,
    /// W_o, the output projection, `(Model, Model)`.
    pub out: Tr<(Model, Model), E, D>,
    /// The biases, `None` for `bias=False` (the NVAE decoder's).
    pub bias: Option<MhaBias<E, D>>,
}

/// Training mode: the queries attend to the sampled latent `z` with weights `pi`
/// ([`denoising_attention_train`] per head), then the output projection.
///
/// Returns the attention output and the per-head attention weights (HEAD returns these; v1.0
/// returns their mean over heads, the same for its single head).
///
/// # Shapes
/// `query: (Batch, Seq, Model)`, `z: (Batch, Comp, Latent)`, `pi: (Batch, Comp)`,
/// `keep: Batch × Comp` → `(Batch, Seq, Model)`, `(Batch, Head, Seq, Comp)`
pub fn denoising_mha_train<E: Real, D: Dev<E>>(
    query: Tr<(Batch, Seq, Model), E, D>,
    weights: MhaWeights<E, D>,
    z: Tr<(Batch, Comp, Latent), E, D>,
    pi: Tr<(Batch, Comp), E, D>,
    keep: &[bool],
    version: DaVersion,
) -> WithWeights<(Batch, Seq, Model), E, D> {
    with_weights(train_multihead(
        query,
        None,
        weights,
        (z, pi, keep),
        version,
        Read::All,
    ))
}

/// The sampled latent that training-time attention reads: z `(Batch, Comp, Latent)`, π
/// `(Batch, Comp)` and which components exist (`Batch × Comp`).
pub type SampledLatent<'a, E, D> = (
    Tr<(Batch, Comp, Latent), E, D>,
    Tr<(Batch, Comp), E, D>,
    &'a [bool],
);

/// The output of [`denoising_mha_train`] for the queries flagged in `query_keep` (row-major
/// `Batch × Seq`; `None`: all), without the weights (a decoder's cross-attention in training):
/// the other queries are padding, neither projected, attended nor output-projected, and their
/// outputs are zero.
///
/// # Shapes
/// As [`denoising_mha_train`], `query_keep: Batch × Seq` → `(Batch, Seq, Model)`
pub fn denoising_mha_train_kept<E: Real, D: Dev<E>>(
    query: Tr<(Batch, Seq, Model), E, D>,
    query_keep: Option<&[bool]>,
    weights: MhaWeights<E, D>,
    latent: SampledLatent<'_, E, D>,
    version: DaVersion,
) -> Tr<(Batch, Seq, Model), E, D> {
    let read = Read::Outputs(query_keep);
    train_multihead(query, query_keep, weights, latent, version, read).0
}

/// [`denoising_mha_train`] with the queries `query_keep` flags projected, reading what `read`
/// says.
///
/// # Shapes
/// As [`denoising_mha_train_kept`].
fn train_multihead<E: Real, D: Dev<E>>(
    query: Tr<(Batch, Seq, Model), E, D>,
    query_keep: Option<&[bool]>,
    weights: MhaWeights<E, D>,
    (z, pi, keep): SampledLatent<'_, E, D>,
    version: DaVersion,
    read: Read,
) -> MaybeWeights<(Batch, Seq, Model), E, D> {
    let MhaWeights {
        heads,
        q: w_q,
        k: w_k,
        v: w_v,
        out: w_o,
        bias,
    } = weights;
    let [b_q, b_k, b_v, b_o] = split_bias(bias);
    // A padded component's key and value are never read: only the others are projected.
    let queries = |x, w, b| match query_keep {
        Some(rows) => project_rows(x, w, b, rows),
        None => project(x, w, b),
    };
    let x = Projected {
        heads,
        q: queries(query, w_q, b_q),
        k: project_rows(z.retaped(), w_k, b_k, keep),
        v: project_rows(z.retaped(), w_v, b_v, keep),
    };
    let (out, attn) = attend_train(x, pi, z, keep, version, read);
    (queries(out, w_o, b_o), attn)
}

/// Evaluation mode: each head's query is mapped into the latent space (u = q_h W_{k,h}, one
/// grouped Linear over the heads) and attends to the component Gaussians N(μ, σ²)
/// ([`denoising_attention_eval`]); the per-head value map is W_{v,h} (+ b_{v,h}), then the
/// output projection. HEAD's key bias only adds q_h·b_{k,h} to every logit of a query, which
/// cancels in the softmax. As the official v1.0 module, [`DaVersion::V1`] leaves out b_{v,h}
/// (a difference only with `bias`; the NVAE has none).
///
/// # Shapes
/// `query: (Batch, Seq, Model)`, `mu, log_var: (Batch, Comp, Latent)`, `pi: (Batch, Comp)`,
/// `keep: Batch × Comp` → `(Batch, Seq, Model)`, `(Batch, Head, Seq, Comp)`
pub fn denoising_mha_eval<E: Real, D: Dev<E>>(
    query: Tr<(Batch, Seq, Model), E, D>,
    weights: MhaWeights<E, D>,
    mu: Tr<(Batch, Comp, Latent), E, D>,
    log_var: Tr<(Batch, Comp, Latent), E, D>,
    pi: Tr<(Batch, Comp), E, D>,
    keep: &[bool],
    version: DaVersion,
) -> WithWeights<(Batch, Seq, Model), E, D> {
    let head_width = weights.v.shape().0 .0 / weights.heads.0;
    let keys = EvalKeys::new(mu, log_var, pi, keep, version, head_width);
    denoising_mha_eval_with(query, weights, keys, version)
}

/// [`denoising_mha_eval`] over the latent's terms computed beforehand ([`EvalKeys::new`] with
/// the head width `Model / heads`), for many query batches over one latent.
///
/// # Shapes
/// `query: (Batch, Seq, Model)` → `(Batch, Seq, Model)`, `(Batch, Head, Seq, Comp)`
pub fn denoising_mha_eval_with<E: Real, D: Dev<E>>(
    query: Tr<(Batch, Seq, Model), E, D>,
    weights: MhaWeights<E, D>,
    keys: EvalKeys<E, D>,
    version: DaVersion,
) -> WithWeights<(Batch, Seq, Model), E, D> {
    let MhaWeights {
        heads,
        q: w_q,
        k: w_k,
        v: w_v,
        out: w_o,
        bias,
    } = weights;
    // b_k only adds q_h·b_{k,h} to every logit of a query, which cancels in the softmax.
    let [b_q, _, b_v, b_o] = split_bias(bias);
    let b_v = match version {
        DaVersion::V1 => None,
        DaVersion::Head => b_v,
    };
    let q = project(query, w_q, b_q);
    let (batch, seq, model) = *q.shape();
    let latent = w_k.shape().1;
    let u: Tr<(usize, usize), E, D> = D::grouped_linear(
        q.reshape_like(&(batch.0 * seq.0, model)),
        Weight::InOut(w_k),
        None,
        heads.0,
    );
    let query = LatentQuery {
        heads,
        u: u.reshape_like(&(batch, seq, heads.0 * latent.0)),
    };
    let value = ValueMap {
        weight: w_v,
        bias: b_v,
    };
    let (out, attn) = denoising_attention_eval_with(query, keys, value);
    (project(out, w_o, b_o), attn)
}

type Biases<E, D> = [Option<Tr<(Model,), E, D>>; 4];

/// (b_q, b_k, b_v, b_out), each `None` without bias.
fn split_bias<E: Real, D: Dev<E>>(bias: Option<MhaBias<E, D>>) -> Biases<E, D> {
    match bias {
        Some(MhaBias { q, k, v, out }) => [Some(q), Some(k), Some(v), Some(out)],
        None => [None, None, None, None],
    }
}

/// x Wᵀ (+ b) for a torch-layout weight, as one fused Linear over all Batch·N rows (one large
/// gemm instead of one per batch element).
///
/// # Shapes
/// `x: (Batch, N, I)`, `w: (Model, I)`, `b: (Model,)` → `(Batch, N, Model)`
fn project<N: Dim, I: Dim, E: Real, D: Dev<E>>(
    x: Tr<(Batch, N, I), E, D>,
    w: Tr<(Model, I), E, D>,
    b: Option<Tr<(Model,), E, D>>,
) -> Tr<(Batch, N, Model), E, D> {
    let (batch, n, i) = *x.shape();
    let model = w.shape().0;
    let rows = batch.0 * n.size();
    D::linear(
        x.reshape_like(&(rows, i)),
        Weight::OutIn(w),
        b,
        Activation::Identity,
    )
    .reshape_like(&(batch, n, model))
}

/// [`project`] of the rows `keep` flags (row-major `Batch × N`); the others are zero.
///
/// # Shapes
/// `x: (Batch, N, I)`, `w: (Model, I)`, `b: (Model,)`, `keep: Batch × N` → `(Batch, N, Model)`
fn project_rows<N: Dim, I: Dim, E: Real, D: Dev<E>>(
    x: Tr<(Batch, N, I), E, D>,
    w: Tr<(Model, I), E, D>,
    b: Option<Tr<(Model,), E, D>>,
    keep: &[bool],
) -> Tr<(Batch, N, Model), E, D> {
    let (batch, n, i) = *x.shape();
    let model = w.shape().0;
    let rows = x.reshape_like(&(batch.0 * n.size(), i));
    D::linear_rows(rows, Weight::OutIn(w), b, Activation::Identity, keep, None)
        .reshape_like(&(batch, n, model))
}

/// Standard multi-head scaled dot-product attention over the latent's components, with the same
/// weights as the denoising module: what denoising attention generalises (uniform π, Z = 0).
///
/// # Shapes
/// `query: (Batch, Seq, Model)`, `memory: (Batch, Comp, Latent)`, `keep: Batch × Comp`
/// → `(Batch, Seq, Model)`, `(Batch, Head, Seq, Comp)`
pub fn sdpa_mha<E: Real, D: Dev<E>>(
    query: Tr<(Batch, Seq, Model), E, D>,
    weights: MhaWeights<E, D>,
    memory: Tr<(Batch, Comp, Latent), E, D>,
    keep: &[bool],
) -> WithWeights<(Batch, Seq, Model), E, D> {
    let MhaWeights {
        heads,
        q,
        k,
        v,
        out,
        bias,
    } = weights;
    let [b_q, b_k, b_v, b_o] = split_bias(bias);
    let x = Projected {
        heads,
        q: project(query, q, b_q),
        k: project(memory.retaped(), k, b_k),
        v: project(memory, v, b_v),
    };
    let (attn, weights) = sdpa(x, keep);
    (project(attn, out, b_o), weights)
}
