//! `ae`: the deterministic autoencoder baseline: z = W h + b for every encoder state, no noise
//! and no variance, so no KL (pair it with the `none` prior).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Comp, Latent, Model};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Linear;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates};
use vaezoo_core::registry::{parse_config, schema_of, Build, BuiltBottleneck, PluginRegistration};
use vaezoo_core::{Backend, Result};

/// Config of `ae`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Size of the code vector of each component.
    #[schemars(range(min = 1, max = 1_048_576))]
    pub latent_dim: usize,
}

/// One linear map from the encoder state to the code (PyTorch `nn.Linear` initialisation).
pub struct Autoencoder {
    code: Linear<Model, Latent>,
}

impl Autoencoder {
    /// Declares `code.*`.
    pub fn new(cfg: &AutoencoderConfig, params: &mut ParamBuilder, model_dim: usize) -> Self {
        Self {
            code: Linear::new(params, "code", Model(model_dim), Latent(cfg.latent_dim)),
        }
    }
}

impl<D: Backend> Bottleneck<D> for Autoencoder {
    /// The same code in training and evaluation.
    ///
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = Seq, Latent)`, no variance
    fn forward(&self, ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let (batch, seq, _) = *input.states.shape();
        let shape = (batch, Comp(seq.0), self.code.out_dim());
        let code = self
            .code
            .forward_seq(ctx.params, input.states)
            .reshape_like(&shape);
        Ok(Mixture::gaussian(code.reuse(), code, None, input.mask))
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let cfg: AutoencoderConfig = parse_config("ae", config)?;
    Ok(BuiltBottleneck {
        latent_dim: cfg.latent_dim,
        shared: Default::default(),
        module: Box::new(Autoencoder::new(&cfg, params, model_dim)),
    })
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "ae",
        version: env!("CARGO_PKG_VERSION"),
        description: "Deterministic autoencoder code: no noise, no KL (use with the `none` prior)",
        schema: schema_of::<AutoencoderConfig>,
        example: || vaezoo_core::serde_json::json!({ "latent_dim": 3 }),
        partners: &["none"],
        build: Build::Bottleneck(build),
    }
}
