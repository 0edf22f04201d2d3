//! `beta_vae`: the Gaussian bottleneck of `gaussian_vib` whose KL enters the training loss
//! with a weight β (Higgins et al. 2017: β < 1 against posterior collapse, β > 1 towards
//! disentangled factors), optionally as `β · |KL − C(t)|` with a capacity C rising linearly
//! from 0 to `max_nats` over `steps` (Burgess et al. 2018, where β plays their γ).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, KlShaping, Progress};
use vaezoo_core::registry::{parse_config, schema_of, Build, BuiltBottleneck, PluginRegistration};
use vaezoo_core::{Backend, Result};

use crate::vib::{GaussianVib, GaussianVibConfig};

/// Config of `beta_vae`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BetaVaeConfig {
    /// Size of the latent vector.
    #[schemars(range(min = 1, max = 1_048_576))]
    pub latent_dim: usize,
    /// The weight β of the KL in the training loss (1 is the plain VAE).
    #[schemars(range(min = 0.0))]
    pub beta: f32,
    /// Capacity annealing: train towards a KL of C(t) instead of towards 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
}

/// A KL target C(t) = `max_nats` · min(1, t / `steps`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// The final target, in nats (Burgess et al. use 25 for dSprites).
    #[schemars(range(min = 0.0))]
    pub max_nats: f32,
    /// Steps over which the target rises from 0 to `max_nats`.
    #[schemars(range(min = 1))]
    pub steps: u64,
}

impl Capacity {
    /// C(t) at `progress`.
    pub fn at(&self, progress: Progress) -> f32 {
        let t = (progress.step as f64 / self.steps as f64).min(1.0);
        (f64::from(self.max_nats) * t) as f32
    }
}

/// A [`GaussianVib`] with β and capacity.
pub struct BetaVae {
    vib: GaussianVib,
    beta: f32,
    capacity: Option<Capacity>,
}

impl BetaVae {
    /// Declares the parameters of its [`GaussianVib`] (`mean.*`, `log_var.*`).
    pub fn new(cfg: &BetaVaeConfig, params: &mut ParamBuilder, model_dim: usize) -> Self {
        let vib_cfg = GaussianVibConfig {
            latent_dim: cfg.latent_dim,
        };
        Self {
            vib: GaussianVib::new(&vib_cfg, params, model_dim),
            beta: cfg.beta,
            capacity: cfg.capacity,
        }
    }
}

impl<D: Backend> Bottleneck<D> for BetaVae {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = Seq, Latent)`
    fn forward(&self, ctx: &mut Ctx<D>, states: EncoderStates<D>) -> Result<Mixture<D>> {
        Bottleneck::<D>::forward(&self.vib, ctx, states)
    }

    fn kl_shaping(&self, progress: Progress) -> KlShaping {
        KlShaping {
            weight: self.beta,
            capacity: self.capacity.map(|c| c.at(progress)),
        }
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let cfg: BetaVaeConfig = parse_config("beta_vae", config)?;
    Ok(BuiltBottleneck {
        latent_dim: cfg.latent_dim,
        shared: Default::default(),
        module: Box::new(BetaVae::new(&cfg, params, model_dim)),
    })
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "beta_vae",
        version: env!("CARGO_PKG_VERSION"),
        description: "Gaussian posterior whose KL is weighted by β, with optional capacity annealing",
        schema: schema_of::<BetaVaeConfig>,
        example: || vaezoo_core::serde_json::json!({
            "latent_dim": 3, "beta": 4.0, "capacity": { "max_nats": 5.0, "steps": 100 }
        }),
        partners: &[],
        build: Build::Bottleneck(build),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_rises_linearly_then_holds() {
        let c = Capacity {
            max_nats: 10.0,
            steps: 4,
        };
        let at = |step| {
            c.at(Progress {
                step,
                total_steps: 100,
                epochs: 1,
            })
        };
        assert_eq!(
            [at(0), at(1), at(2), at(4), at(50)],
            [0.0, 2.5, 5.0, 10.0, 10.0]
        );
    }
}
