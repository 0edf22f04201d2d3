//! `learned_memory`: `vectors` learned vectors, the same for every input; the encoder's states
//! are not read. A decoder that reads this latent through cross-attention learns p(x) alone:
//! with `transformer_decoder` it is a causal language model of the training sentences, the LM
//! of the forward and reverse perplexity of generated text (`zoo/lm-wiki.json`). No KL (pair
//! it with the `none` prior).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Comp, Latent};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::{ParamBuilder, ParamId};
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates};
use vaezoo_core::registry::{parse_config, schema_of, Build, BuiltBottleneck, PluginRegistration};
use vaezoo_core::{Backend, Result};

/// Config of `learned_memory`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LearnedMemoryConfig {
    /// How many vectors.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 65_536))]
    pub vectors: usize,
}

fn one() -> usize {
    1
}

/// The memory: `vectors × width`, N(0, 0.02²) at start.
pub struct LearnedMemory {
    memory: ParamId,
    vectors: Comp,
    width: Latent,
}

impl<D: Backend> Bottleneck<D> for LearnedMemory {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = vectors, Latent = Model)`, the
    /// same for every row
    fn forward(&self, ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let (batch, _, _) = *input.states.shape();
        let memory = ctx.params.get(self.memory, (self.vectors, self.width));
        let z = memory.broadcast_like(&(batch, self.vectors, self.width));
        Ok(Mixture::gaussian(z.reuse(), z, None, None))
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let cfg: LearnedMemoryConfig = parse_config("learned_memory", config)?;
    // Not an official model: initialised as the NVAE's `train.py` initialises every matrix.
    let xavier = (6.0 / (cfg.vectors + model_dim) as f32).sqrt();
    let memory = params.uniform("memory", &[cfg.vectors, model_dim], xavier);
    Ok(BuiltBottleneck {
        latent_dim: model_dim,
        shared: Default::default(),
        module: Box::new(LearnedMemory {
            memory,
            vectors: Comp(cfg.vectors),
            width: Latent(model_dim),
        }),
    })
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "learned_memory",
        version: env!("CARGO_PKG_VERSION"),
        description: "Learned vectors independent of the input: the decoder becomes a language model p(x) (use with `none`)",
        schema: schema_of::<LearnedMemoryConfig>,
        example: || vaezoo_core::serde_json::json!({ "vectors": 2 }),
        partners: &["none"],
        build: Build::Bottleneck(build),
    }
}
