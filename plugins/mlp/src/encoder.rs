//! `mlp_encoder`: features → hidden layers → one state vector (`Seq` of length one).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Feature, Model, Seq};
use vaezoo_core::backend::lift;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, Encoder, EncoderStates, Observation};
use vaezoo_core::registry::{
    parse_config, schema_of, Build, BuiltEncoder, DataDims, PluginRegistration,
};
use vaezoo_core::{Backend, Error, Result};

use crate::condition::{BuiltCondition, Condition};
use crate::stack::Stack;

/// Config of `mlp_encoder`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MlpEncoderConfig {
    /// Widths of the layers; the last one is the width of the state handed to the bottleneck
    /// (e.g. `[512, 256]` for 784-512-256).
    #[schemars(length(min = 1), inner(range(min = 1, max = 1_048_576)))]
    pub hidden: Vec<usize>,
    /// Non-linearity after every layer.
    #[serde(default)]
    pub activation: Activation,
    /// How many state vectors the observation becomes (each as wide as the last layer); more
    /// than one gives mixture bottlenecks such as `nvib` a set of vectors to weigh.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 65_536))]
    pub tokens: usize,
    /// Condition on the class label: q(z | x, c) reads `[x; c]` (a conditional VAE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

fn one() -> usize {
    1
}

/// An MLP whose every layer, the last included, is followed by the activation.
pub struct MlpEncoder {
    stack: Stack<Feature, Model>,
    tokens: usize,
    condition: Option<BuiltCondition<Feature>>,
}

impl MlpEncoder {
    /// Declares `layers.*` (and `condition` for a learned label embedding); the output width
    /// is `cfg.hidden`'s last entry.
    pub fn new(cfg: &MlpEncoderConfig, params: &mut ParamBuilder, data: DataDims) -> Result<Self> {
        let (&out, hidden) = cfg.hidden.split_last().ok_or_else(|| Error::Config {
            plugin: "mlp_encoder".into(),
            message: "`hidden` needs at least one layer".into(),
        })?;
        let condition = (cfg.condition.as_ref())
            .map(|c| BuiltCondition::new(c, params, data.classes, "mlp_encoder"))
            .transpose()?;
        let extra = condition.as_ref().map_or(0, BuiltCondition::width);
        let stack = Stack::new(
            params,
            Feature(data.features + extra),
            hidden,
            Model(out * cfg.tokens),
            cfg.activation,
            true,
        );
        Ok(Self {
            stack,
            tokens: cfg.tokens,
            condition,
        })
    }
}

impl<D: Backend> Encoder<D> for MlpEncoder {
    /// # Shapes
    /// `obs.x: (Batch, Feature)` → `states: (Batch, Seq = tokens, Model)`
    fn forward(&self, ctx: &mut Ctx<D>, obs: &Observation<D>) -> Result<EncoderStates<D>> {
        // The data needs no gradient: without a condition the first layer computes none for it.
        let h = match &self.condition {
            Some(c) => {
                let x = c.append(ctx.params, lift(obs.x.clone()), obs.labels.as_deref())?;
                self.stack.forward(ctx.params, x)
            }
            None => self.stack.forward(ctx.params, obs.x.clone()),
        };
        let (batch, model) = *h.shape();
        let width = Model(model.0 / self.tokens);
        Ok(EncoderStates {
            states: h.reshape_like(&(batch, Seq(self.tokens), width)),
            mask: None,
        })
    }

    fn reads_labels(&self) -> bool {
        self.condition.is_some()
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    data: DataDims,
) -> Result<BuiltEncoder> {
    let cfg: MlpEncoderConfig = parse_config("mlp_encoder", config)?;
    let output_dim = *cfg.hidden.last().unwrap_or(&data.features);
    Ok(BuiltEncoder {
        module: Box::new(MlpEncoder::new(&cfg, params, data)?),
        output_dim,
    })
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "mlp_encoder",
        version: env!("CARGO_PKG_VERSION"),
        description: "MLP from flat features to one state vector",
        schema: schema_of::<MlpEncoderConfig>,
        example: || vaezoo_core::serde_json::json!({ "hidden": [5, 4], "activation": "tanh" }),
        partners: &[],
        build: Build::Encoder(build),
    }
}
