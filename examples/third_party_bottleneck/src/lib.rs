//! `laplace_vib`, a bottleneck vaezoo does not ship, written as a third party would: a Laplace
//! posterior q(z | h) = Laplace(μ(h), b(h)) per encoder state, sampled by reparameterisation,
//! with its own KL to a standard Laplace prior (so specs pair it with the `none` prior).
//!
//! The same source builds the plugin library (`export_bottleneck!`, for `--plugin-dir`) and
//! registers statically (`register_bottleneck!`, for a Rust binary that links this crate).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::abi::capability;
use vaezoo_core::abi::sdk::ExportBottleneck;
use vaezoo_core::axes::{Batch, Comp, Latent, Model};
use vaezoo_core::backend::{lift, Reuse};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Linear;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, KlTerm, Mode};
use vaezoo_core::rng::uniform_vec;
use vaezoo_core::serde_json::{json, Value};
use vaezoo_core::{Backend, Result, Traced};

/// Config of `laplace_vib`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaplaceVibConfig {
    /// Size of the latent vector of each component.
    #[schemars(range(min = 1))]
    pub latent_dim: usize,
}

/// Two linear heads from the encoder state to the location μ and the log-scale log b.
pub struct LaplaceVib {
    location: Linear<Model, Latent>,
    log_scale: Linear<Model, Latent>,
}

/// KL(Laplace(μ, b) ‖ Laplace(0, 1)) of one dimension: −log b + |μ| + b·exp(−|μ|/b) − 1.
pub fn laplace_kl(mu: f64, b: f64) -> f64 {
    -b.ln() + mu.abs() + b * (-mu.abs() / b).exp() - 1.0
}

/// Standard Laplace noise from uniform draws `u` in `[-1/2, 1/2)`: −sign(u)·ln(1 − 2|u|).
fn laplace_noise(u: f32) -> f32 {
    -u.signum() * (1.0 - 2.0 * u.abs()).max(f32::MIN_POSITIVE).ln()
}

impl<D: Backend> Bottleneck<D> for LaplaceVib {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = Seq, Latent)`, KL `(Batch,)`
    fn forward(&self, ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let h = input.states;
        let (batch, seq, _) = *h.shape();
        let dims = (batch, Comp(seq.0), self.location.out_dim());
        let mu = self
            .location
            .forward_seq(ctx.params, h.reuse())
            .reshape_like(&dims);
        let log_b = self
            .log_scale
            .forward_seq(ctx.params, h)
            .reshape_like(&dims);
        let z = match ctx.mode {
            Mode::Train => {
                let u = uniform_vec(ctx.rng, dims.num_elements(), -0.5, 0.5);
                let eps = u.into_iter().map(laplace_noise).collect();
                mu.reuse() + log_b.reuse().exp() * ctx.dev().tensor_from_vec(eps, dims)
            }
            Mode::Eval => mu.reuse(),
        };
        // Per dimension: −log b + |μ| + b·exp(−|μ|/b) − 1; `log_b` itself (with its history)
        // is consumed here, so the KL term carries the log-scale head's gradient.
        let b = log_b.reuse().exp();
        let abs_mu = mu.reuse().abs();
        let per_dim = abs_mu.reuse() + b.reuse() * (-(abs_mu / b)).exp() - log_b - 1.0;
        let per_comp = per_dim.sum::<(Batch, Comp), Axis<2>>();
        let per_comp = match &input.mask {
            Some(mask) => {
                let keep = mask.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
                let keep = ctx.dev().tensor_from_vec(keep, (batch, dims.1));
                per_comp * lift(keep)
            }
            None => per_comp,
        };
        let kl: Traced<(Batch,), D> = per_comp.sum::<(Batch,), Axis<1>>();
        let mut latent = Mixture::gaussian(z, mu, None, input.mask);
        latent.kl.push(KlTerm {
            name: "kl".into(),
            value: kl,
            weight: 1.0,
        });
        Ok(latent)
    }
}

impl ExportBottleneck for LaplaceVib {
    type Config = LaplaceVibConfig;
    const NAME: &'static str = "laplace_vib";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Laplace posterior per encoder state with its own KL to Laplace(0, 1) (third-party example)";
    const CAPABILITIES: u64 = capability::PROVIDES_KL;

    fn example() -> Value {
        json!({ "latent_dim": 3 })
    }

    /// Declares `location.*` and `log_scale.*` (PyTorch `nn.Linear` initialisation).
    fn build(
        config: &LaplaceVibConfig,
        params: &mut ParamBuilder,
        model_dim: usize,
    ) -> Result<Self> {
        let latent = Latent(config.latent_dim);
        Ok(Self {
            location: Linear::new(params, "location", Model(model_dim), latent),
            log_scale: Linear::new(params, "log_scale", Model(model_dim), latent),
        })
    }

    fn latent_dim(&self) -> usize {
        self.location.out_dim().0
    }
}

vaezoo_core::export_bottleneck!(LaplaceVib);
vaezoo_core::register_bottleneck!(LaplaceVib);

/// The names of the plugins this crate registers statically. A binary that links the crate
/// calls it so that the linker keeps the crate's `inventory` submission.
pub fn link() -> &'static [&'static str] {
    &[<LaplaceVib as ExportBottleneck>::NAME]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kl_is_zero_only_at_the_prior_and_positive_elsewhere() {
        assert!(laplace_kl(0.0, 1.0).abs() < 1e-15);
        for mu in [-5.0, -1.0, -0.1, 0.0, 0.3, 2.0, 30.0] {
            for b in [1e-3, 0.1, 0.5, 1.0, 2.0, 10.0] {
                let kl = laplace_kl(mu, b);
                assert!(kl.is_finite() && kl >= 0.0, "KL({mu}, {b}) = {kl}");
                if (mu, b) != (0.0, 1.0) {
                    assert!(kl > 1e-6, "KL({mu}, {b}) = {kl}");
                }
            }
        }
    }

    #[test]
    fn the_kl_matches_numerical_integration() {
        // ∫ q(z) (log q(z) − log p(z)) dz by the midpoint rule on [μ − 40b, μ + 40b].
        for (mu, b) in [(0.7, 0.4), (-1.5, 2.0), (0.0, 0.2)] {
            let (n, lo, hi) = (400_000, mu - 40.0 * b, mu + 40.0 * b);
            let dz = (hi - lo) / n as f64;
            let log_q = |z: f64| -(z - mu).abs() / b - (2.0 * b).ln();
            let log_p = |z: f64| -z.abs() - 2f64.ln();
            let integral: f64 = (0..n)
                .map(|i| lo + (i as f64 + 0.5) * dz)
                .map(|z| log_q(z).exp() * (log_q(z) - log_p(z)) * dz)
                .sum();
            assert!(
                (integral - laplace_kl(mu, b)).abs() < 1e-6,
                "{integral} vs {}",
                laplace_kl(mu, b)
            );
        }
    }

    #[test]
    fn laplace_noise_has_unit_scale() {
        let mut rng = vaezoo_core::rng::seeded(3);
        let eps: Vec<f32> = uniform_vec(&mut rng, 200_000, -0.5, 0.5)
            .into_iter()
            .map(laplace_noise)
            .collect();
        let mean = eps.iter().sum::<f32>() / eps.len() as f32;
        let mean_abs = eps.iter().map(|e| e.abs()).sum::<f32>() / eps.len() as f32;
        assert!(
            mean.abs() < 0.02 && (mean_abs - 1.0).abs() < 0.02,
            "{mean} {mean_abs}"
        );
        assert!(eps.iter().all(|e| e.is_finite()));
    }
}
