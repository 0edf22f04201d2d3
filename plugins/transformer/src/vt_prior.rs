//! `vt_normal`: the scalar Gaussian prior N(μ_p, σ²_p) of the Variational Transformer baselines
//! (§E), for `vt_variable` and `vt_pooled`.
//!
//! Its KL is the official one ([`crate::vt::kl`]): ½ Σ_kept mean_P[σ²/σ²_p + (μ − μ_p)²/σ²_p −
//! 1 − ln(σ²/σ²_p)], a **mean** over the latent dimensions (not the sum of a textbook KL), summed
//! over the components the posterior's mask keeps, as one term `kl_g` weighted by `lambda_g`
//! (the official λ_G, `KL_GAUSSIAN_LAMBDA`).
//!
//! Samples: z ~ N(μ_p, σ²_p) at kept components, zero elsewhere. One component is one vector
//! per row (VTP's `sample`); with more, the lengths are drawn as the official `sample_lengths`
//! (uniform, [`sample_prior_lengths`], as the NVIB prior) and the mask keeps the first `length`
//! components of each row (VTV's `sample`). Beside VTS (`vt_variable` with `stride_perc`, which
//! the bottleneck shares with its prior) the stride mask then drops components as it does in
//! the posterior, as the official VTS's memory mask (length mask OR stride mask). The samples'
//! mean and log-variance are the prior's μ_p and ln σ²_p (zero at masked components), so a
//! sampling temperature scales the draw around μ_p.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::backend::{lift, Reuse};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, DynPrior, KlTerm, Prior};
use vaezoo_core::registry::{
    parse_config, schema_of, Build, DataDims, LatentInfo, PluginRegistration,
};
use vaezoo_core::{Backend, Error, Result};
use vaezoo_nvib::kl::sample_prior_lengths;

use crate::vt::{kl, stride_keep};

const NAME: &str = "vt_normal";

/// Config of `vt_normal`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VtNormalConfig {
    /// Prior mean μ_p (every dimension; the official PRIOR_MU).
    #[serde(default)]
    pub prior_mu: f64,
    /// Prior variance σ²_p (the official PRIOR_VAR).
    #[serde(default = "one")]
    #[schemars(range(min = 1e-12))]
    pub prior_var: f64,
    /// λ_G, the weight of the KL term `kl_g` in the loss.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0))]
    pub lambda_g: f64,
}

impl Default for VtNormalConfig {
    fn default() -> Self {
        Self {
            prior_mu: 0.0,
            prior_var: 1.0,
            lambda_g: 1.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

/// The built `vt_normal`.
pub struct VtNormal {
    mu: f64,
    var: f64,
    lambda_g: f32,
    /// VTS's drop fraction, from the bottleneck: samples get its stride mask.
    stride_perc: Option<f64>,
}

impl VtNormal {
    /// From its config, for a bottleneck without a stride.
    pub fn new(cfg: &VtNormalConfig) -> Self {
        Self {
            mu: cfg.prior_mu,
            var: cfg.prior_var,
            lambda_g: cfg.lambda_g as f32,
            stride_perc: None,
        }
    }

    /// From its config, its samples masked with VTS's stride mask of `stride_perc`.
    pub fn with_stride(cfg: &VtNormalConfig, stride_perc: Option<f64>) -> Self {
        Self {
            stride_perc,
            ..Self::new(cfg)
        }
    }
}

impl<D: Backend> Prior<D> for VtNormal {
    /// # Shapes
    /// posterior `(Batch, Comp, Latent)` → `kl_g: (Batch,)`
    fn kl(
        &self,
        _ctx: &mut Ctx<D>,
        posterior: &Mixture<D>,
        _labels: Option<&[usize]>,
    ) -> Result<Vec<KlTerm<D>>> {
        let log_var = posterior.log_var_for_kl(NAME)?;
        let value = kl(
            posterior.mean.reuse(),
            log_var.reuse(),
            &posterior.keep(),
            self.mu,
            self.var,
        );
        Ok(vec![KlTerm {
            name: "kl_g".into(),
            value,
            weight: self.lambda_g,
        }])
    }

    /// # Shapes
    /// → `(batch, comps, latent)`, mask `batch × comps` (`None` when every component is kept)
    fn sample(
        &self,
        ctx: &mut Ctx<D>,
        batch: Batch,
        comps: Comp,
        latent: Latent,
        _labels: Option<&[usize]>,
    ) -> Result<Mixture<D>> {
        if comps.0 == 0 {
            return Err(Error::Shape(format!(
                "{NAME} samples at least one component"
            )));
        }
        // One component: no draw (every row keeps it).
        let lengths = sample_prior_lengths(ctx.rng, batch.0, 1, comps.0);
        let mut keep: Vec<bool> = (lengths.iter())
            .flat_map(|&n| (0..comps.0).map(move |i| i < n))
            .collect();
        if let Some(perc) = self.stride_perc {
            keep = stride_keep(&keep, comps.0, perc);
        }
        let shape = (batch, comps, latent);
        let eps = ctx.normal(shape);
        let flags: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        let kept = ctx
            .dev()
            .tensor_from_vec(flags, (batch, comps))
            .broadcast_like::<_, Axis<2>>(&shape);
        let z = (eps * self.var.sqrt() as f32 + self.mu as f32) * kept.clone();
        let mean = kept.clone() * self.mu as f32;
        let log_var = kept * self.var.ln() as f32;
        let mask = (!keep.iter().all(|&k| k)).then_some(keep);
        Ok(Mixture::gaussian(
            lift(z),
            lift(mean),
            Some(lift(log_var)),
            mask,
        ))
    }

    /// log N(z; μ_p, σ²_p) = −½ Σ ((z − μ_p)²/σ²_p + ln 2πσ²_p), summed over latent dimensions
    /// and components (the exact density; the trait passes no component mask, so every
    /// component counts).
    ///
    /// # Shapes
    /// `z: (Batch, Comp, Latent)` → `(Batch,)`
    fn log_density(
        &self,
        _ctx: &mut Ctx<D>,
        z: &Tensor<(Batch, Comp, Latent), f32, D>,
        _labels: Option<&[usize]>,
    ) -> Option<Result<Tensor<(Batch,), f32, D>>> {
        let log_norm = (2.0 * std::f64::consts::PI * self.var).ln() as f32;
        let per_dim =
            ((z.clone() - self.mu as f32).square() * (1.0 / self.var) as f32 + log_norm) * -0.5;
        Some(Ok(per_dim.sum::<(Batch,), Axes2<1, 2>>()))
    }
}

fn build(
    config: &serde_json::Value,
    _params: &mut ParamBuilder,
    latent: LatentInfo,
    _data: DataDims,
) -> Result<Box<dyn DynPrior>> {
    let cfg: VtNormalConfig = parse_config(NAME, config)?;
    // `vt_variable` shares its stride (null without one); `vt_pooled` shares none.
    let stride_perc = match latent.shared.get("stride_perc") {
        Some(_) => latent.setting(NAME, "stride_perc")?,
        None => None,
    };
    Ok(Box::new(VtNormal::with_stride(&cfg, stride_perc)))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: NAME,
        version: env!("CARGO_PKG_VERSION"),
        description: "Scalar Gaussian prior of the Variational Transformers: KL_G (mean over dims), masked samples",
        schema: schema_of::<VtNormalConfig>,
        example: || vaezoo_core::serde_json::json!({ "prior_mu": 0.1, "prior_var": 2.0, "lambda_g": 0.5 }),
        partners: &["transformer_encoder", "vt_variable", "transformer_decoder"],
        build: Build::Prior(build),
    }
}
