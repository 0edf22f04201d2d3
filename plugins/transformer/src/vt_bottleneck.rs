//! `vt_variable` and `vt_pooled`: the Variational Transformer baselines (§E) as bottleneck
//! plugins, over the maths of [`crate::vt`].
//!
//! - `vt_variable` is VTV: one Gaussian per encoder state (μ, logσ² linear in the state; z a
//!   sample in training, μ in evaluation), zeroed at padded tokens, whose mask is the latent's
//!   [`Mixture::mask`]. With `stride_perc` it is VTS: the stride mask ([`stride_mask`](crate::vt::stride_mask)) drops a
//!   fraction of the latents on top of the padding (the official memory mask is src_mask OR
//!   stride_mask), and the dropped latents are zeroed and masked like padding.
//! - `vt_pooled` is VTP: the states pooled over the real tokens (mean or max), then one
//!   Gaussian vector per row (`Comp = 1`, no mask).
//!
//! Neither has weights π or pseudo-counts α (their components are uniform). Both report the
//! sparsity statistics under NVIB's names, so that evaluation reports the proportion of vectors
//! kept for every model: `avg_num_vec` (latent vectors kept per row) and `avg_prop_vec` (kept
//! vectors / unpadded tokens per row), each a batch mean. The prior to pair them with is
//! `vt_normal` ([`crate::vt_prior`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Latent, Model};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates};
use vaezoo_core::registry::{parse_config, schema_of, Build, BuiltBottleneck, PluginRegistration};
use vaezoo_core::{Backend, Result};

use crate::vt::{pooled, stride_keep, variable, GaussianHeads, Pooling, VtLatent};

/// Config of `vt_variable` (VTV; VTS with `stride_perc`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VtVariableConfig {
    /// Width of the latent vectors (default: the encoder's width, which `transformer_decoder`
    /// needs as its d_model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub latent_dim: Option<usize>,
    /// VTS: the fraction of the latent vectors the official stride mask drops, on top of the
    /// padding (absent or 0: VTV, nothing dropped; 1 keeps only the first vector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub stride_perc: Option<f64>,
}

/// Config of `vt_pooled` (VTP).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VtPooledConfig {
    /// Width of the latent vector (default: the encoder's width, which `transformer_decoder`
    /// needs as its d_model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub latent_dim: Option<usize>,
    /// How the encoder states are pooled over the real tokens: `mean` (the official default)
    /// or `max`.
    #[serde(default)]
    pub pooling: Pooling,
}

/// The sparsity statistics of a batch: `avg_num_vec`, the batch mean of the latent vectors
/// kept per row, and `avg_prop_vec`, the batch mean of kept / unpadded tokens per row.
///
/// # Shapes
/// `kept`: one count per row; `real`: row-major `Batch × Seq`, `true` for a real token.
pub fn vector_stats(kept: &[usize], real: &[bool]) -> Vec<(&'static str, f64)> {
    let rows = kept.len().max(1);
    let seq = real.len() / rows;
    let tokens = real
        .chunks(seq.max(1))
        .map(|r| r.iter().filter(|&&k| k).count());
    let prop: f64 = kept
        .iter()
        .zip(tokens)
        .map(|(&k, n)| k as f64 / n.max(1) as f64)
        .sum();
    let num: f64 = kept.iter().map(|&k| k as f64).sum();
    vec![
        ("avg_num_vec", num / rows as f64),
        ("avg_prop_vec", prop / rows as f64),
    ]
}

/// The real tokens of `input` (all of them when the encoder gives no mask), row-major.
fn real_tokens<D: Backend>(input: &EncoderStates<D>) -> Vec<bool> {
    let (batch, seq, _) = *input.states.shape();
    (input.mask.clone()).unwrap_or_else(|| vec![true; batch.0 * seq.0])
}

/// A VT latent as a Gaussian mixture with uniform weights; its mask is `None` when every
/// component is kept.
fn mixture<D: Backend>(lat: VtLatent<f32, D>) -> Mixture<D> {
    let mask = (!lat.keep.iter().all(|&k| k)).then_some(lat.keep);
    Mixture::gaussian(lat.z, lat.mu, Some(lat.log_var), mask)
}

/// The built `vt_variable`.
pub struct VtVariable {
    heads: GaussianHeads,
    stride_perc: Option<f64>,
}

impl VtVariable {
    /// Declares `mu_proj.*` and `logvar_proj.*` (`model_dim → latent_dim`).
    pub fn new(cfg: &VtVariableConfig, params: &mut ParamBuilder, model_dim: usize) -> Self {
        let latent = Latent(cfg.latent_dim.unwrap_or(model_dim));
        Self {
            heads: GaussianHeads::new(params, Model(model_dim), latent),
            stride_perc: cfg.stride_perc,
        }
    }

    /// Which latents exist, row-major `Batch × Seq`: the real tokens, less those the stride
    /// mask drops.
    pub fn keep(&self, real: &[bool], seq: usize) -> Vec<bool> {
        match self.stride_perc {
            Some(perc) => stride_keep(real, seq, perc),
            None => real.to_vec(),
        }
    }
}

impl<D: Backend> Bottleneck<D> for VtVariable {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = Seq, Latent)`, mask `Batch × Seq`
    fn forward(&self, ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let real = real_tokens(&input);
        let seq = input.states.shape().1 .0;
        let keep = self.keep(&real, seq);
        let lat = variable(
            &self.heads,
            ctx.params,
            input.states,
            &keep,
            ctx.mode,
            ctx.rng,
        );
        let kept: Vec<usize> = (keep.chunks(seq.max(1)))
            .map(|r| r.iter().filter(|&&k| k).count())
            .collect();
        let mut latent = mixture(lat);
        latent.stats = vector_stats(&kept, &real);
        Ok(latent)
    }
}

/// The built `vt_pooled`.
pub struct VtPooled {
    heads: GaussianHeads,
    pooling: Pooling,
}

impl VtPooled {
    /// Declares `mu_proj.*` and `logvar_proj.*` (`model_dim → latent_dim`).
    pub fn new(cfg: &VtPooledConfig, params: &mut ParamBuilder, model_dim: usize) -> Self {
        let latent = Latent(cfg.latent_dim.unwrap_or(model_dim));
        Self {
            heads: GaussianHeads::new(params, Model(model_dim), latent),
            pooling: cfg.pooling,
        }
    }
}

impl<D: Backend> Bottleneck<D> for VtPooled {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = 1, Latent)`, no mask
    fn forward(&self, ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let real = real_tokens(&input);
        let batch = input.states.shape().0 .0;
        let lat = pooled(
            &self.heads,
            ctx.params,
            input.states,
            &real,
            self.pooling,
            ctx.mode,
            ctx.rng,
        );
        let mut latent = mixture(lat);
        latent.stats = vector_stats(&vec![1; batch], &real);
        Ok(latent)
    }
}

fn build_variable(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let cfg: VtVariableConfig = parse_config("vt_variable", config)?;
    // `vt_normal` applies the same stride mask to its samples.
    let mut shared = vaezoo_core::registry::Shared::new();
    shared.insert("stride_perc".into(), serde_json::json!(cfg.stride_perc));
    Ok(BuiltBottleneck {
        latent_dim: cfg.latent_dim.unwrap_or(model_dim),
        shared,
        module: Box::new(VtVariable::new(&cfg, params, model_dim)),
    })
}

fn build_pooled(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let cfg: VtPooledConfig = parse_config("vt_pooled", config)?;
    Ok(BuiltBottleneck {
        latent_dim: cfg.latent_dim.unwrap_or(model_dim),
        shared: Default::default(),
        module: Box::new(VtPooled::new(&cfg, params, model_dim)),
    })
}

// The conformance kit composes each with the text Transformer (encoder width 8, decoder d_model
// 3, hence `latent_dim: 3`) and `vt_normal`, so that padded tokens reach the plugin.
vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "vt_variable",
        version: env!("CARGO_PKG_VERSION"),
        description: "Variational Transformer: one Gaussian per token (VTV), or strided (VTS with stride_perc)",
        schema: schema_of::<VtVariableConfig>,
        example: || vaezoo_core::serde_json::json!({ "latent_dim": 3, "stride_perc": 0.25 }),
        partners: &["transformer_encoder", "vt_normal", "transformer_decoder"],
        build: Build::Bottleneck(build_variable),
    }
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "vt_pooled",
        version: env!("CARGO_PKG_VERSION"),
        description: "Pooled Variational Transformer (VTP): mean- or max-pooled states, one Gaussian vector",
        schema: schema_of::<VtPooledConfig>,
        example: || vaezoo_core::serde_json::json!({ "latent_dim": 3, "pooling": "mean" }),
        partners: &["transformer_encoder", "vt_normal", "transformer_decoder"],
        build: Build::Bottleneck(build_pooled),
    }
}
