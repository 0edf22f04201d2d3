//! `dirichlet_process`: the conditional Dirichlet-process prior of NVIB. Its KL against an NVIB
//! posterior has two terms, KL_G (Gaussian, weighted by the expected π) and KL_D (Dirichlet),
//! each with its weight in the loss (λ_G, λ_D); its samples are mixtures for generation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Ctx, DynPrior, KlTerm, Prior};
use vaezoo_core::registry::{parse_config, schema_of, Build, LatentInfo, PluginRegistration};
use vaezoo_core::{Backend, Error, Result};

use crate::kl::{kl_dirichlet, kl_gaussian, prior_latent, sample_prior_lengths, DpPrior};

/// Config of `dirichlet_process`: δ and the two weights. The prior component (μ_p, σ²_p, α)
/// and κ are the `nvib` bottleneck's (`prior_mu`, `prior_var`, `prior_alpha`, `kappa`), read
/// from it so that each setting is stated once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirichletProcessConfig {
    /// δ of the conditional prior α₀p = α + δ(n − 1); 0 is the plain DP prior.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0))]
    pub delta: f64,
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

/// The built prior.
pub struct DirichletProcess {
    prior: DpPrior,
    lambda: (f32, f32),
}

impl DirichletProcess {
    /// From its config and the bottleneck's shared settings.
    pub fn new(cfg: &DirichletProcessConfig, latent: LatentInfo) -> Result<Self> {
        let setting = |key: &str| latent.setting::<f64>(NAME, key);
        Ok(Self {
            prior: DpPrior {
                mu: vec![setting("prior_mu")?],
                var: vec![setting("prior_var")?],
                alpha: setting("prior_alpha")?,
                delta: cfg.delta,
                kappa: latent.setting(NAME, "kappa")?,
            },
            lambda: (cfg.lambda_g as f32, cfg.lambda_d as f32),
        })
    }
}

const NAME: &str = "dirichlet_process";

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
    latent: LatentInfo,
    _data: vaezoo_core::registry::DataDims,
) -> Result<Box<dyn DynPrior>> {
    let cfg: DirichletProcessConfig = parse_config(NAME, config)?;
    Ok(Box::new(DirichletProcess::new(&cfg, latent)?))
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
