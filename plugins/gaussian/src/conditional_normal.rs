//! `conditional_normal`: a learned conditional prior p(z | c) = N(μ_c, diag σ²_c), one mean and
//! log-variance row per class (both start at 0, i.e. at N(0, I)), for conditional VAEs. The
//! KL of a diagonal Gaussian posterior against it, per latent dimension, is
//! ½ (log σ²_c − log σ² + (σ² + (μ − μ_c)²) / σ²_c − 1).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::backend::{lift, Reuse};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::{Embedding, Init};
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::plugin::{Ctx, DynPrior, KlTerm, Prior};
use vaezoo_core::registry::{
    parse_config, schema_of, Build, DataDims, LatentInfo, PluginRegistration,
};
use vaezoo_core::{Backend, Error, Result, Traced};

use crate::standard_normal::kl_term;

const NAME: &str = "conditional_normal";

/// Config of `conditional_normal` (it has no settings; the classes come from the data).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionalNormalConfig {}

/// Per-class prior means and log-variances.
pub struct ConditionalNormal {
    mean: Embedding<Latent>,
    log_var: Embedding<Latent>,
}

/// The prior's mean and log-variance for each row's label, broadcast over components.
type Rows<D> = (
    Traced<(Batch, Comp, Latent), D>,
    Traced<(Batch, Comp, Latent), D>,
);

impl ConditionalNormal {
    /// Declares `mean` and `log_var`, `classes × latent` each, zero.
    pub fn new(params: &mut ParamBuilder, latent: usize, classes: usize) -> Result<Self> {
        if classes == 0 {
            return Err(Error::Config {
                plugin: NAME.into(),
                message: "a conditional prior needs labelled data (the data has no classes)".into(),
            });
        }
        Ok(Self {
            mean: Embedding::new(params, "mean", classes, Latent(latent), Init::Constant(0.0)),
            log_var: Embedding::new(
                params,
                "log_var",
                classes,
                Latent(latent),
                Init::Constant(0.0),
            ),
        })
    }

    /// # Shapes
    /// `labels: [Batch]` → μ_c, log σ²_c: `(Batch, comps, Latent)`
    fn rows<D: Backend>(
        &self,
        params: &ParamStore<D>,
        labels: Option<&[usize]>,
        comps: Comp,
    ) -> Result<Rows<D>> {
        let labels = labels.ok_or_else(|| Error::Config {
            plugin: NAME.into(),
            message: "p(z | c) needs a class label per example (`sample --class C`)".into(),
        })?;
        let mean = self.mean.forward(params, labels, NAME)?;
        let log_var = self.log_var.forward(params, labels, NAME)?;
        let (batch, latent) = *mean.shape();
        let shape = (batch, comps, latent);
        Ok((mean.broadcast_like(&shape), log_var.broadcast_like(&shape)))
    }
}

impl<D: Backend> Prior<D> for ConditionalNormal {
    fn reads_labels(&self) -> bool {
        true
    }

    /// # Shapes
    /// posterior `(Batch, Comp, Latent)`, `labels: [Batch]` → `kl: (Batch,)`
    fn kl(
        &self,
        ctx: &mut Ctx<D>,
        posterior: &Mixture<D>,
        labels: Option<&[usize]>,
    ) -> Result<Vec<KlTerm<D>>> {
        let log_var = posterior.log_var_for_kl(NAME)?;
        let (batch, comps, _) = posterior.dims();
        let (mean_p, log_var_p) = self.rows(ctx.params, labels, comps)?;
        if mean_p.shape().0 != batch {
            return Err(Error::Shape(format!(
                "{} labels for a batch of {}",
                mean_p.shape().0 .0,
                batch.0
            )));
        }
        let diff = posterior.mean.reuse() - mean_p;
        let inv_var_p = (log_var_p.reuse() * -1.0).exp();
        let per_dim =
            log_var_p - log_var.reuse() + (log_var.reuse().exp() + diff.square()) * inv_var_p - 1.0;
        let per_comp = per_dim.sum::<(Batch, Comp), Axis<2>>() * 0.5;
        Ok(vec![kl_term(ctx, per_comp, posterior)])
    }

    /// # Shapes
    /// `labels: [batch]` → `(batch, comps, latent)`, z ~ N(μ_c, σ²_c)
    fn sample(
        &self,
        ctx: &mut Ctx<D>,
        batch: Batch,
        comps: Comp,
        latent: Latent,
        labels: Option<&[usize]>,
    ) -> Result<Mixture<D>> {
        let (mean, log_var) = self.rows(ctx.params, labels, comps)?;
        let shape = (batch, comps, latent);
        if *mean.shape() != shape {
            return Err(Error::Shape(format!(
                "prior samples of shape {shape:?} with {} labels",
                mean.shape().0 .0
            )));
        }
        let eps = ctx.normal(shape);
        let z = mean.reuse() + (log_var.reuse() * 0.5).exp() * eps;
        Ok(Mixture::gaussian(z, mean, Some(log_var), None))
    }

    /// log N(z; μ_c, σ²_c), summed over dimensions and components.
    ///
    /// # Shapes
    /// `z: (Batch, Comp, Latent)` → `(Batch,)`
    fn log_density(
        &self,
        ctx: &mut Ctx<D>,
        z: &Tensor<(Batch, Comp, Latent), f32, D>,
        labels: Option<&[usize]>,
    ) -> Option<Result<Tensor<(Batch,), f32, D>>> {
        let (_, comps, _) = *z.shape();
        Some(self.rows(ctx.params, labels, comps).map(|(mean, log_var)| {
            let diff = lift(z.clone()) - mean;
            let inv_var = (log_var.reuse() * -1.0).exp();
            let per_dim =
                (log_var + diff.square() * inv_var + (2.0 * std::f32::consts::PI).ln()) * -0.5;
            let per_comp = per_dim.sum::<(Batch, Comp), Axis<2>>();
            per_comp.sum::<(Batch,), Axis<1>>().split_tape().0
        }))
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    latent: LatentInfo,
    data: DataDims,
) -> Result<Box<dyn DynPrior>> {
    let _: ConditionalNormalConfig = parse_config(NAME, config)?;
    Ok(Box::new(ConditionalNormal::new(
        params,
        latent.dim,
        data.classes,
    )?))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: NAME,
        version: env!("CARGO_PKG_VERSION"),
        description: "Learned conditional prior p(z | c) = N(μ_c, σ²_c) per class, for conditional VAEs",
        schema: schema_of::<ConditionalNormalConfig>,
        example: || vaezoo_core::serde_json::json!({}),
        partners: &[],
        build: Build::Prior(build),
    }
}
