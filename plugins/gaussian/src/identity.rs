//! `identity`: the encoder states themselves as the latent, one deterministic component per
//! state (padding masked), no parameters and no KL: the memory of a plain Transformer
//! autoencoder (the NVAE paper's baseline T). Pair it with the `none` prior.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Comp, Latent};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates};
use vaezoo_core::registry::{parse_config, schema_of, Build, BuiltBottleneck, PluginRegistration};
use vaezoo_core::{Backend, Result};

/// Config of `identity`: nothing to set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {}

/// Passes the encoder states through.
pub struct Identity;

impl<D: Backend> Bottleneck<D> for Identity {
    /// The same latent in training and evaluation.
    ///
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = Seq, Latent = Model)`, no variance
    fn forward(&self, _ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let (batch, seq, width) = *input.states.shape();
        let z = input
            .states
            .reshape_like(&(batch, Comp(seq.0), Latent(width.0)));
        Ok(Mixture::gaussian(z.reuse(), z, None, input.mask))
    }
}

fn build(
    config: &serde_json::Value,
    _params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let _: IdentityConfig = parse_config("identity", config)?;
    Ok(BuiltBottleneck {
        latent_dim: model_dim,
        shared: Default::default(),
        module: Box::new(Identity),
    })
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "identity",
        version: env!("CARGO_PKG_VERSION"),
        description: "The encoder states as the latent: a plain autoencoder's memory (no noise, no KL; use with `none`)",
        schema: schema_of::<IdentityConfig>,
        example: || vaezoo_core::serde_json::json!({}),
        partners: &["none"],
        build: Build::Bottleneck(build),
    }
}
