//! `nvib`: the NVIB layer as a bottleneck plugin. Encoder states become a Dirichlet-process
//! mixture latent: the prior component, then one Gaussian component per state, with weights π
//! (sampled in training, from α in evaluation), pseudo-counts α and the sparsity statistics.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Latent, Model};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, Mode};
use vaezoo_core::registry::{
    parse_config, schema_of, Build, BuiltBottleneck, PluginRegistration, Shared,
};
use vaezoo_core::torch_layout::TorchView;
use vaezoo_core::{Backend, Result};

use crate::init::{head_init, Taus};
use crate::layer::{forward, AlphaWeights, Noise, PriorComponent, Version, Weights};

/// Config of `nvib`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NvibConfig {
    /// Which official version: `v1` (ICLR 2023, the published NVAE) or `head` (the latest).
    #[serde(default)]
    pub version: Version,
    /// Width of the latent components (default: the encoder's width, as the official layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub latent_dim: Option<usize>,
    /// Mean of the prior component (every dimension).
    #[serde(default)]
    pub prior_mu: f64,
    /// Variance of the prior component.
    #[serde(default = "one")]
    #[schemars(range(min = 1e-12))]
    pub prior_var: f64,
    /// Pseudo-count α₀ of the prior component (`head`: exp(prior_log_alpha)).
    #[serde(default = "one")]
    #[schemars(range(min = 1e-12))]
    pub prior_alpha: f64,
    /// `head` initialisation: the α bias is prior_log_alpha_stdev · alpha_tau.
    #[serde(default = "one")]
    pub prior_log_alpha_stdev: f64,
    /// Samples per component κ in training (the NVAE used 1).
    #[serde(default = "one_usize")]
    #[schemars(range(min = 1, max = 1024))]
    pub kappa: usize,
    /// `head` initialisation: heads of the attention reading the latent (the quadratic α weight
    /// is 1/(2√(latent_dim/heads))).
    #[serde(default = "one_usize")]
    #[schemars(range(min = 1, max = 1024))]
    pub heads: usize,
    /// `head` initialisation (tau scheme; ignored by `v1`, which initialises as the NVAE's
    /// `train.py`: Xavier-uniform weights, PyTorch's Linear default biases).
    #[serde(default)]
    pub init: Taus,
}

impl NvibConfig {
    /// The settings `dirichlet_process` reads instead of repeating them: the prior component
    /// (`prior_mu`, `prior_var`, `prior_alpha`) and `kappa`.
    pub fn shared(&self) -> Shared {
        let mut shared = Shared::new();
        shared.insert("prior_mu".into(), self.prior_mu.into());
        shared.insert("prior_var".into(), self.prior_var.into());
        shared.insert("prior_alpha".into(), self.prior_alpha.into());
        shared.insert("kappa".into(), self.kappa.into());
        shared
    }
}

fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}

/// The parameters of the α projection.
enum AlphaIds {
    V1 {
        w: ParamId,
        b: ParamId,
    },
    Head {
        w_lin: ParamId,
        w_quad: ParamId,
        b: ParamId,
    },
}

/// The built `nvib` bottleneck.
pub struct Nvib {
    version: Version,
    kappa: usize,
    prior: PriorComponent,
    model: Model,
    latent: Latent,
    mu: (ParamId, ParamId),
    log_var: (ParamId, ParamId),
    alpha: AlphaIds,
}

impl Nvib {
    /// Declares `mu.*`, `log_var.*` and `alpha.*`.
    pub fn new(cfg: &NvibConfig, params: &mut ParamBuilder, model_dim: usize) -> Self {
        let (m, p) = (model_dim, cfg.latent_dim.unwrap_or(model_dim));
        let prior = PriorComponent {
            mu: vec![cfg.prior_mu],
            var: vec![cfg.prior_var],
            alpha: cfg.prior_alpha,
        };
        let (mu, log_var, alpha) = match cfg.version {
            Version::V1 => {
                // The NVAE's `train.py`: Xavier-uniform for every matrix (torch stores these
                // `[out, in]`; the bound is symmetric in the fans), PyTorch's Linear default
                // U(±1/√in) for the biases.
                let xavier = |fan_out: usize| (6.0 / (m + fan_out) as f32).sqrt();
                let bias = 1.0 / (m as f32).sqrt();
                let linear = |params: &mut ParamBuilder, name: &str| {
                    (
                        params.uniform(&format!("{name}.weight"), &[m, p], xavier(p)),
                        params.uniform(&format!("{name}.bias"), &[p], bias),
                    )
                };
                let mu = linear(params, "mu");
                let log_var = linear(params, "log_var");
                let (w, b) = (
                    params.uniform("alpha.weight", &[m], xavier(1)),
                    params.uniform("alpha.bias", &[], bias),
                );
                // The official `alpha_proj` is `nn.Linear(d, 1)`.
                params.set_torch_view(w, TorchView::Reshaped(vec![1, m]));
                params.set_torch_view(b, TorchView::Reshaped(vec![1]));
                (mu, log_var, AlphaIds::V1 { w, b })
            }
            Version::Head => {
                let init = head_init(
                    m,
                    p,
                    cfg.heads,
                    &prior.mu,
                    &prior.var,
                    cfg.prior_log_alpha_stdev,
                    cfg.init,
                    f64::from(f32::MIN_POSITIVE),
                );
                let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
                let mu = (
                    params.declare("mu.weight", &[m, p], f(init.mu_w)),
                    params.declare("mu.bias", &[p], f(init.mu_b)),
                );
                let log_var = (
                    params.declare("log_var.weight", &[m, p], f(init.log_var_w)),
                    params.declare("log_var.bias", &[p], f(init.log_var_b)),
                );
                let alpha = AlphaIds::Head {
                    w_lin: params.declare("alpha.weight_linear", &[m], f(init.alpha_lin)),
                    w_quad: params.declare("alpha.weight_quadratic", &[m], f(init.alpha_quad)),
                    b: params.declare("alpha.bias", &[], vec![init.alpha_b as f32]),
                };
                (mu, log_var, alpha)
            }
        };
        // Both versions store the projections (in, out), the official `nn.Linear`s (out, in).
        for (weight, _) in [mu, log_var] {
            params.set_torch_view(weight, TorchView::Transposed);
        }
        Self {
            version: cfg.version,
            kappa: cfg.kappa,
            prior,
            model: Model(m),
            latent: Latent(p),
            mu,
            log_var,
            alpha,
        }
    }

    fn weights<D: Backend>(&self, params: &ParamStore<D>) -> Weights<f32, D> {
        let (m, l) = (self.model, self.latent);
        Weights {
            mu_w: params.get(self.mu.0, (m, l)),
            mu_b: params.get(self.mu.1, (l,)),
            log_var_w: params.get(self.log_var.0, (m, l)),
            log_var_b: params.get(self.log_var.1, (l,)),
            alpha: match self.alpha {
                AlphaIds::V1 { w, b } => AlphaWeights::V1 {
                    w: params.get(w, (m,)),
                    b: params.get(b, ()),
                },
                AlphaIds::Head { w_lin, w_quad, b } => AlphaWeights::Head {
                    w_lin: params.get(w_lin, (m,)),
                    w_quad: params.get(w_quad, (m,)),
                    b: params.get(b, ()),
                },
            },
        }
    }
}

impl<D: Backend> Bottleneck<D> for Nvib {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = κ·(Seq + 1), Latent)`
    fn forward(&self, ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let (batch, seq, _) = *input.states.shape();
        let keep = input.mask.unwrap_or_else(|| vec![true; batch.0 * seq.0]);
        let weights = self.weights(ctx.params);
        let noise = match ctx.mode {
            Mode::Train => Some(Noise::Host(&mut *ctx.rng)),
            Mode::Eval => None,
        };
        let out = forward(
            input.states,
            &keep,
            weights,
            &self.prior,
            self.version,
            self.kappa,
            noise,
        );
        // log α's history (the α projection) belongs to α's.
        let alpha = match out.log_alpha {
            Some(log_alpha) => {
                let (a, tape) = out.alpha.split_tape();
                a.put_tape(tape.merge(log_alpha.split_tape().1))
            }
            None => out.alpha,
        };
        let mut latent = Mixture::gaussian(out.z, out.mu, Some(out.log_var), Some(out.keep));
        latent.weights = Some(out.pi);
        latent.alpha = Some(alpha);
        latent.stats = vec![
            ("avg_num_vec", out.stats.avg_num_vec),
            ("avg_prop_vec", out.stats.avg_prop_vec),
            ("avg_alpha0", out.stats.avg_alpha0),
        ];
        Ok(latent)
    }
}

fn build(
    config: &serde_json::Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let cfg: NvibConfig = parse_config("nvib", config)?;
    Ok(BuiltBottleneck {
        latent_dim: cfg.latent_dim.unwrap_or(model_dim),
        shared: cfg.shared(),
        module: Box::new(Nvib::new(&cfg, params, model_dim)),
    })
}

vaezoo_core::inventory::submit! {
    PluginRegistration {
        name: "nvib",
        version: env!("CARGO_PKG_VERSION"),
        description: "Nonparametric VIB: a Dirichlet-process mixture latent (v1 or head)",
        schema: schema_of::<NvibConfig>,
        example: || vaezoo_core::serde_json::json!({ "version": "head", "latent_dim": 3, "heads": 1 }),
        partners: &["dirichlet_process"],
        build: Build::Bottleneck(build),
    }
}
