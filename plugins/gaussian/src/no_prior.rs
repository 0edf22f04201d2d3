//! `none`: the empty prior, for models without a KL term of the prior's: a deterministic
//! autoencoder, or a bottleneck that computes its KL against a prior of its own
//! ([`Mixture::kl`]). It adds no KL term and draws no samples.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, KlTerm, Prior};
use vaezoo_core::registry::{parse_config, schema_of, Build, PluginRegistration};
use vaezoo_core::{Backend, Error, Result};

/// Config of `none` (it has no settings).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoPriorConfig {}

/// No prior: no KL, no samples.
pub struct NoPrior;

impl<D: Backend> Prior<D> for NoPrior {
    /// # Shapes
    /// posterior `(Batch, Comp, Latent)` → no terms
    fn kl(
        &self,
        _ctx: &mut Ctx<D>,
        _posterior: &Mixture<D>,
        _labels: Option<&[usize]>,
    ) -> Result<Vec<KlTerm<D>>> {
        Ok(Vec::new())
    }

    /// Always [`Error::Unsupported`]: there is nothing to sample from.
    fn sample(
        &self,
        _ctx: &mut Ctx<D>,
        _batch: Batch,
        _comps: Comp,
        _latent: Latent,
        _labels: Option<&[usize]>,
    ) -> Result<Mixture<D>> {
        Err(Error::Unsupported(
            "this model has no prior (`none`), so it cannot sample; train a VAE to sample".into(),
        ))
    }
}

fn build(
    config: &serde_json::Value,
    _params: &mut ParamBuilder,
    _latent: vaezoo_core::registry::LatentInfo,
    _data: vaezoo_core::registry::DataDims,
) -> Result<Box<dyn vaezoo_core::plugin::DynPrior>> {
    let _: NoPriorConfig = parse_config("none", config)?;
    Ok(Box::new(NoPrior))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "none",
        version: env!("CARGO_PKG_VERSION"),
        description: "No prior: no KL term, no samples (autoencoders, bottlenecks with their own KL)",
        schema: schema_of::<NoPriorConfig>,
        example: || vaezoo_core::serde_json::json!({}),
        partners: &[],
        build: Build::Prior(build),
    }
}
