//! Initial parameters of the NVIB layer: HEAD's tau scheme (spec §A.2), and PyTorch's
//! `nn.Linear` defaults (what v1.0 used).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// HEAD's initialisation knobs. `mu_tau = 1` makes μ = x (identity); `stdev_tau` scales the
/// prior standard deviation of the initial posterior; `alpha_tau` scales the α bias.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Taus {
    /// W_μ = mu_tau · I and b_μ = prior_mu · (1 − mu_tau).
    #[serde(default = "one")]
    pub mu_tau: f64,
    /// b_logσ² = log(prior_var · stdev_tau² + tiny); W_logσ² = 0.
    #[serde(default = "one")]
    pub stdev_tau: f64,
    /// b_α = prior_log_alpha_stdev · alpha_tau.
    #[serde(default = "one")]
    pub alpha_tau: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for Taus {
    fn default() -> Self {
        Self {
            mu_tau: 1.0,
            stdev_tau: 1.0,
            alpha_tau: 1.0,
        }
    }
}

/// The layer's parameters on the host, weights stored `(in, out)` row-major (y = x W + b).
#[derive(Clone, Debug, PartialEq)]
pub struct HeadInit {
    pub mu_w: Vec<f64>,
    pub mu_b: Vec<f64>,
    pub log_var_w: Vec<f64>,
    pub log_var_b: Vec<f64>,
    pub alpha_lin: Vec<f64>,
    pub alpha_quad: Vec<f64>,
    pub alpha_b: f64,
}

/// HEAD's `init_parameters`: `prior_mu`/`prior_var` have length 1 or `size_out`; `tiny` is the
/// smallest positive normal number of the float type the layer computes in.
#[allow(clippy::too_many_arguments)]
pub fn head_init(
    size_in: usize,
    size_out: usize,
    heads: usize,
    prior_mu: &[f64],
    prior_var: &[f64],
    prior_log_alpha_stdev: f64,
    taus: Taus,
    tiny: f64,
) -> HeadInit {
    let at = |v: &[f64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let mut mu_w = vec![0.0; size_in * size_out];
    for i in 0..size_in.min(size_out) {
        mu_w[i * size_out + i] = taus.mu_tau;
    }
    let d = (size_out / heads.max(1)).max(1) as f64;
    HeadInit {
        mu_w,
        mu_b: (0..size_out)
            .map(|i| at(prior_mu, i) * (1.0 - taus.mu_tau))
            .collect(),
        log_var_w: vec![0.0; size_in * size_out],
        log_var_b: (0..size_out)
            .map(|i| (at(prior_var, i) * taus.stdev_tau * taus.stdev_tau + tiny).ln())
            .collect(),
        alpha_lin: vec![0.0; size_in],
        alpha_quad: vec![1.0 / (2.0 * d.sqrt()); size_in],
        alpha_b: prior_log_alpha_stdev * taus.alpha_tau,
    }
}
