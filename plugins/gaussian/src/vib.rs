//! `gaussian_vib`: a diagonal Gaussian posterior q(z | h) = N(μ(h), diag σ²(h)) for every
//! encoder state h, sampled with the reparameterisation trick z = μ + σ ⊙ ε.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Comp, Latent, Model};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Linear;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, Mode};
use vaezoo_core::registry::{parse_config, schema_of, Build, BuiltBottleneck, PluginRegistration};
use vaezoo_core::{Backend, Result};

/// Config of `gaussian_vib`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GaussianVibConfig {
    /// Size of the latent vector of each component.
    #[schemars(range(min = 1, max = 1_048_576))]
    pub latent_dim: usize,
}

/// Two linear heads from the encoder state to the posterior mean and log-variance.
pub struct GaussianVib {
    mean: Linear<Model, Latent>,
    log_var: Linear<Model, Latent>,
}

impl GaussianVib {
    /// Declares `mean.*` and `log_var.*` (PyTorch `nn.Linear` initialisation).
    pub fn new(cfg: &GaussianVibConfig, params: &mut ParamBuilder, model_dim: usize) -> Self {
        Self {
            mean: Linear::new(params, "mean", Model(model_dim), Latent(cfg.latent_dim)),
            log_var: Linear::new(params, "log_var", Model(model_dim), Latent(cfg.latent_dim)),
        }
    }
}

impl<D: Backend> Bottleneck<D> for GaussianVib {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = Seq, Latent)`
    fn forward(&self, ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let h = input.states;
        let (batch, seq, _) = *h.shape();
        let latent = self.mean.out_dim();
        let comps = (batch, Comp(seq.0), latent);
        let mean = self
            .mean
            .forward_seq(ctx.params, h.reuse())
            .reshape_like(&comps);
        let log_var = self.log_var.forward_seq(ctx.params, h).reshape_like(&comps);
        let z = match ctx.mode {
            Mode::Train => {
                let eps = ctx.normal(comps);
                mean.reuse() + (log_var.reuse() * 0.5).exp() * eps
            }
            Mode::Eval => mean.reuse(),
        };
        Ok(Mixture::gaussian(z, mean, Some(log_var), input.mask))
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let cfg: GaussianVibConfig = parse_config("gaussian_vib", config)?;
    Ok(BuiltBottleneck {
        latent_dim: cfg.latent_dim,
        shared: Default::default(),
        module: Box::new(GaussianVib::new(&cfg, params, model_dim)),
    })
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "gaussian_vib",
        version: env!("CARGO_PKG_VERSION"),
        description: "Diagonal Gaussian posterior per encoder state, reparameterised sampling",
        schema: schema_of::<GaussianVibConfig>,
        example: || vaezoo_core::serde_json::json!({ "latent_dim": 3 }),
        partners: &[],
        build: Build::Bottleneck(build),
    }
}
