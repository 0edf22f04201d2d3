//! `dirichlet_process`: the conditional Dirichlet-process prior of NVIB. Its KL against an NVIB
//! posterior has two terms, KL_G (Gaussian, weighted by the expected π) and KL_D (Dirichlet),
//! each with its weight in the loss (λ_G, λ_D); its samples are mixtures for generation.

use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, DynPrior, KlTerm, Prior};
use vaezoo_core::registry::{parse_config, schema_of, Build, PluginRegistration};
use vaezoo_core::{Backend, Error, Result};

use crate::kl::{kl_dirichlet, kl_gaussian, prior_latent, sample_prior_lengths, DpPrior};

/// Config of `dirichlet_process`. The prior component's settings must equal the `nvib`
/// bottleneck's (checked at the first KL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirichletProcessConfig {
    /// Prior mean μ_p (every dimension).
    #[serde(default)]
    pub prior_mu: f64,
    /// Prior variance σ²_p.
    #[serde(default = "one")]
    #[schemars(range(min = 1e-12))]
    pub prior_var: f64,
    /// The prior component's pseudo-count α.
    #[serde(default = "one")]
    #[schemars(range(min = 1e-12))]
    pub prior_alpha: f64,
    /// δ of the conditional prior α₀p = α + δ(n − 1); 0 is the plain DP prior.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0))]
    pub delta: f64,
    /// Samples per component κ (must equal the bottleneck's).
    #[serde(default = "one_usize")]
    #[schemars(range(min = 1))]
    pub kappa: usize,
    /// λ_G, the weight of KL_G in the loss.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0))]
    pub lambda_g: f64,
    /// λ_D, the weight of KL_D in the loss.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0))]
    pub lambda_d: f64,
}

fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}

/// The built prior.
pub struct DirichletProcess {
    prior: DpPrior,
    lambda: (f32, f32),
    /// The outcome of the check of the posterior's prior component (done at the first KL).
    checked: OnceLock<std::result::Result<(), String>>,
}

impl DirichletProcess {
    /// From its config.
    pub fn new(cfg: &DirichletProcessConfig) -> Self {
        Self {
            prior: DpPrior {
                mu: vec![cfg.prior_mu],
                var: vec![cfg.prior_var],
                alpha: cfg.prior_alpha,
                delta: cfg.delta,
                kappa: cfg.kappa,
            },
            lambda: (cfg.lambda_g as f32, cfg.lambda_d as f32),
            checked: OnceLock::new(),
        }
    }

    /// The posterior's first component is the bottleneck's prior component: it must be ours.
    /// The error is the message of a config error.
    fn check_prior_component(
        &self,
        mean: &[f32],
        log_var: &[f32],
        alpha: &[f32],
        latent: usize,
    ) -> std::result::Result<(), String> {
        let (mu, var) = (self.prior.mu[0] as f32, self.prior.var[0] as f32);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
        let same = mean[..latent].iter().all(|&m| close(m, mu))
            && log_var[..latent].iter().all(|&v| close(v.exp(), var))
            // In training each of the κ copies holds α₀/κ; evaluation keeps α₀.
            && [1.0, self.prior.kappa as f32]
                .iter()
                .any(|k| close(alpha[0] * k, self.prior.alpha as f32));
        if same {
            return Ok(());
        }
        Err(format!(
            "its prior (mu {mu}, var {var}, alpha {}) differs from the bottleneck's prior component \
             (mu {}, var {}, alpha {}); give both the same settings",
            self.prior.alpha,
            mean[0],
            log_var[0].exp(),
            alpha[0] * self.prior.kappa as f32
        ))
    }
}

impl<D: Backend> Prior<D> for DirichletProcess {
    /// # Shapes
    /// posterior `(Batch, Comp, Latent)` with α `(Batch, Comp)` → `kl_g`, `kl_d`: `(Batch,)`
    fn kl(
        &self,
        _ctx: &mut Ctx<D>,
        posterior: &Mixture<D>,
        _labels: Option<&[usize]>,
    ) -> Result<Vec<KlTerm<D>>> {
        let needs = |what: &str| Error::Config {
            plugin: "dirichlet_process".into(),
            message: format!("the KL needs the posterior's {what}; use the `nvib` bottleneck"),
        };
        let log_var = posterior
            .log_var
            .as_ref()
            .ok_or_else(|| needs("variances"))?;
        let alpha = posterior
            .alpha
            .as_ref()
            .ok_or_else(|| needs("pseudo-counts α"))?;
        let keep = posterior.keep();
        // The prior component is fixed by the bottleneck's config: check it once.
        self.checked
            .get_or_init(|| {
                self.check_prior_component(
                    &posterior.mean.as_vec(),
                    &log_var.as_vec(),
                    &alpha.as_vec(),
                    posterior.dims().2 .0,
                )
            })
            .clone()
            .map_err(|message| Error::Config {
                plugin: "dirichlet_process".into(),
                message,
            })?;
        let kl_g = kl_gaussian(
            posterior.mean.reuse(),
            log_var.reuse(),
            alpha.reuse(),
            &keep,
            &self.prior,
        );
        let kl_d = kl_dirichlet(alpha.reuse(), &keep, &self.prior);
        Ok(vec![
            KlTerm {
                name: "kl_g".into(),
                value: kl_g,
                weight: self.lambda.0,
            },
            KlTerm {
                name: "kl_d".into(),
                value: kl_d,
                weight: self.lambda.1,
            },
        ])
    }

    /// Mixtures of `comps` rows at most: lengths K uniform as the NVAE's `sample`, z ~ N(μ_p,
    /// σ²_p), logσ² = −200, α = α₀p(K)/K per kept row, π = α/Σα.
    ///
    /// # Shapes
    /// → `(batch, κ·comps, latent)`
    fn sample(
        &self,
        ctx: &mut Ctx<D>,
        batch: Batch,
        comps: Comp,
        latent: Latent,
        _labels: Option<&[usize]>,
    ) -> Result<Mixture<D>> {
        let lengths = sample_prior_lengths(ctx.rng, batch.0, 1, comps.0);
        let dev = ctx.dev().clone();
        let drawn = prior_latent::<f32, D>(&dev, ctx.rng, &lengths, comps.0, latent, &self.prior);
        let alpha = drawn.alpha.as_vec();
        let pi: Vec<f32> = alpha
            .chunks(self.prior.kappa * comps.0)
            .flat_map(|row| {
                let s: f32 = row.iter().sum();
                row.iter().map(move |a| a / s)
            })
            .collect();
        let shape = *drawn.alpha.shape();
        let z = drawn.z.put_tape(OwnedTape::default());
        let mut latent = Mixture::gaussian(
            z.reuse(),
            z,
            Some(drawn.logvar.put_tape(OwnedTape::default())),
            Some(drawn.keep),
        );
        latent.weights = Some(
            dev.tensor_from_vec(pi, shape)
                .put_tape(OwnedTape::default()),
        );
        latent.alpha = Some(drawn.alpha.put_tape(OwnedTape::default()));
        Ok(latent)
    }
}

fn build(
    config: &serde_json::Value,
    _params: &mut ParamBuilder,
    _latent: usize,
    _data: vaezoo_core::registry::DataDims,
) -> Result<Box<dyn DynPrior>> {
    let cfg: DirichletProcessConfig = parse_config("dirichlet_process", config)?;
    Ok(Box::new(DirichletProcess::new(&cfg)))
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "dirichlet_process",
        version: env!("CARGO_PKG_VERSION"),
        description: "Conditional Dirichlet-process prior of NVIB: KL_G and KL_D, mixture samples",
        schema: schema_of::<DirichletProcessConfig>,
        example: || vaezoo_core::serde_json::json!({ "delta": 0.3, "lambda_g": 0.5, "lambda_d": 0.1 }),
        partners: &["nvib"],
        build: Build::Prior(build),
    }
}
