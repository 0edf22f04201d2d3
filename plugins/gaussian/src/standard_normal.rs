//! `standard_normal`: the prior p(z) = N(0, I), with the closed-form KL of a diagonal Gaussian
//! posterior, KL = ½ Σ (μ² + σ² − 1 − log σ²), summed over latent dimensions and components.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::backend::{lift, Reuse};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, KlTerm, Prior};
use vaezoo_core::registry::{parse_config, schema_of, Build, PluginRegistration};
use vaezoo_core::{Backend, Error, Result};

/// Config of `standard_normal` (it has no settings).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StandardNormalConfig {}

/// N(0, I) over the latent of every component.
pub struct StandardNormal;

impl<D: Backend> Prior<D> for StandardNormal {
    /// # Shapes
    /// posterior `(Batch, Comp, Latent)` → `kl: (Batch,)`
    fn kl(
        &self,
        ctx: &mut Ctx<D>,
        posterior: &Mixture<D>,
        _labels: Option<&[usize]>,
    ) -> Result<Vec<KlTerm<D>>> {
        let log_var = posterior.log_var.as_ref().ok_or_else(|| Error::Config {
            plugin: "standard_normal".into(),
            message: "the KL needs a posterior variance; this bottleneck is deterministic".into(),
        })?;
        let mean = posterior.mean.reuse();
        let per_dim = mean.square() + log_var.reuse().exp() - log_var.reuse() - 1.0;
        let per_comp = per_dim.sum::<(Batch, Comp), Axis<2>>() * 0.5;
        let per_comp = match &posterior.mask {
            Some(mask) => {
                let shape = *per_comp.shape();
                let keep = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
                per_comp * ctx.dev().tensor_from_vec(keep, shape)
            }
            None => per_comp,
        };
        Ok(vec![KlTerm {
            name: "kl".into(),
            value: per_comp.sum::<(Batch,), Axis<1>>(),
            weight: 1.0,
        }])
    }

    /// # Shapes
    /// → `(batch, comps, latent)`, z ~ N(0, I)
    fn sample(
        &self,
        ctx: &mut Ctx<D>,
        batch: Batch,
        comps: Comp,
        latent: Latent,
        _labels: Option<&[usize]>,
    ) -> Result<Mixture<D>> {
        let shape = (batch, comps, latent);
        let z = lift(ctx.normal(shape));
        let zeros: Tensor<_, f32, D> = ctx.dev().zeros_like(&shape);
        Ok(Mixture::gaussian(
            z,
            lift(zeros.clone()),
            Some(lift(zeros)),
            None,
        ))
    }
}

fn build(
    config: &serde_json::Value,
    _params: &mut ParamBuilder,
    _latent_dim: usize,
    _data: vaezoo_core::registry::DataDims,
) -> Result<Box<dyn vaezoo_core::plugin::DynPrior>> {
    let _: StandardNormalConfig = parse_config("standard_normal", config)?;
    Ok(Box::new(StandardNormal))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "standard_normal",
        version: env!("CARGO_PKG_VERSION"),
        description: "Standard normal prior N(0, I) with closed-form Gaussian KL",
        schema: schema_of::<StandardNormalConfig>,
        example: || vaezoo_core::serde_json::json!({}),
        partners: &[],
        build: Build::Prior(build),
    }
}
