//! `mlp_decoder`: a one-component latent → hidden layers → the parameters of p(x | z).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Feature, Latent};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, Decoder, DynDecoder, Observation};
use vaezoo_core::registry::{parse_config, schema_of, Build, DataDims, PluginRegistration};
use vaezoo_core::{Backend, Error, Result, Traced};

use crate::condition::{BuiltCondition, Condition};
use crate::likelihood::{BuiltLikelihood, Likelihood};
use crate::stack::Stack;

/// Config of `mlp_decoder`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MlpDecoderConfig {
    /// Widths of the hidden layers (e.g. `[256, 512]` to mirror a 512-256 encoder); the output
    /// layer's width is the data's number of features.
    #[serde(default)]
    #[schemars(inner(range(min = 1, max = 1_048_576)))]
    pub hidden: Vec<usize>,
    /// Non-linearity after every hidden layer.
    #[serde(default)]
    pub activation: Activation,
    /// The observation model.
    pub likelihood: Likelihood,
    /// How a latent with several components becomes the one vector the MLP reads.
    #[serde(default)]
    pub read: Read,
    /// Condition on the class label: p(x | z, c) reads `[z; c]` (a conditional VAE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// How the decoder reads a latent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Read {
    /// The latent must have exactly one component (a vector VAE).
    #[default]
    Single,
    /// The mixture's mean Σᵢ πᵢ zᵢ over its existing components (π uniform when the latent has
    /// no weights), e.g. to decode an NVIB latent with an MLP.
    WeightedMean,
}

/// An MLP from the latent to the likelihood's parameters.
pub struct MlpDecoder {
    stack: Stack<Latent, Feature>,
    likelihood: BuiltLikelihood,
    read: Read,
    condition: Option<BuiltCondition<Latent>>,
}

impl MlpDecoder {
    /// Declares `layers.*` (`log_variance` for a learned Gaussian variance, `condition` for a
    /// learned label embedding).
    pub fn new(
        cfg: &MlpDecoderConfig,
        params: &mut ParamBuilder,
        latent: usize,
        data: DataDims,
    ) -> Result<Self> {
        let condition = (cfg.condition.as_ref())
            .map(|c| BuiltCondition::new(c, params, data.classes, "mlp_decoder"))
            .transpose()?;
        let extra = condition.as_ref().map_or(0, BuiltCondition::width);
        let stack = Stack::new(
            params,
            Latent(latent + extra),
            &cfg.hidden,
            Feature(data.features),
            cfg.activation,
            false,
        );
        let likelihood = BuiltLikelihood::new(&cfg.likelihood, params, data.features);
        Ok(Self {
            stack,
            likelihood,
            read: cfg.read,
            condition,
        })
    }

    /// # Shapes
    /// `latent.z: (Batch, Comp = 1, Latent)`, `labels: [Batch]` → `(Batch, Feature)`
    fn output<D: Backend>(
        &self,
        ctx: &Ctx<D>,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
    ) -> Result<Traced<(Batch, Feature), D>> {
        let (batch, comps, dim) = latent.dims();
        let z = match self.read {
            Read::Single if comps.0 != 1 => {
                return Err(Error::Shape(format!(
                    "mlp_decoder with `read: single` reads one-component (vector) latents, got {} \
                     components; use `read: weighted_mean`",
                    comps.0
                )))
            }
            Read::Single => latent.z.reuse().reshape_like(&(batch, dim)),
            Read::WeightedMean => {
                let weights = latent.weights_or_uniform();
                let shape = (batch, comps, dim);
                (latent.z.reuse() * weights.broadcast_like(&shape))
                    .sum::<(Batch, Latent), Axis<1>>()
            }
        };
        let z = match &self.condition {
            Some(c) => c.append(ctx.params, z, labels)?,
            None => z,
        };
        Ok(self.stack.forward(ctx.params, z))
    }
}

impl<D: Backend> Decoder<D> for MlpDecoder {
    fn reads_labels(&self) -> bool {
        self.condition.is_some()
    }

    fn nll(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        obs: &Observation<D>,
    ) -> Result<Traced<(Batch,), D>> {
        let out = self.output(ctx, latent, obs.labels.as_deref())?;
        if out.shape() != obs.x.shape() {
            return Err(Error::Shape(format!(
                "decoder output {:?} does not match the data {:?}",
                out.shape(),
                obs.x.shape()
            )));
        }
        Ok(self.likelihood.nll(ctx.params, out, obs.x.clone()))
    }

    fn mean(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
    ) -> Result<Tensor<(Batch, Feature), f32, D>> {
        Ok(self.likelihood.mean(self.output(ctx, latent, labels)?))
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    latent: usize,
    data: DataDims,
) -> Result<Box<dyn DynDecoder>> {
    let cfg: MlpDecoderConfig = parse_config("mlp_decoder", config)?;
    Ok(Box::new(MlpDecoder::new(&cfg, params, latent, data)?))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "mlp_decoder",
        version: env!("CARGO_PKG_VERSION"),
        description: "MLP from a vector latent to a Bernoulli-logit or Gaussian likelihood",
        schema: schema_of::<MlpDecoderConfig>,
        example: || vaezoo_core::serde_json::json!({ "hidden": [5], "activation": "tanh", "likelihood": { "type": "bernoulli" }, "read": "weighted_mean" }),
        partners: &[],
        build: Build::Decoder(build),
    }
}
