//! The NVIB layer (spec §A): encoder states → a Dirichlet-process mixture latent with a prior
//! component prepended (Nl = Ns + 1), in both official versions:
//!
//! - `v1` (ICLR 2023, the published NVAE): α = ReLU(Linear), approximate Dirichlet sampling,
//!   μ, logσ², α and z zeroed at padded positions;
//! - `head` (later): log α = b + x·w + (x⊙x)·w_q, α = exp(log α), Gamma sampling with implicit
//!   gradients, eval threshold α > 0.1, nothing zeroed at pads.
//!
//! Training samples z and π; evaluation uses z = μ and π from α. Dropped components get π = 0
//! (the official v1 code divides 0 by 0 there).

use dfdx::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Comp, Latent, Model, Seq};
use vaezoo_core::kernels::{Eps, Row, Weight};
use vaezoo_core::layers::Activation::{Identity, Relu};
use vaezoo_core::rng::{normal_vec, uniform_vec, HostRng};

use crate::dirichlet::{
    pi_head_eval, pi_head_train, pi_head_train_kappa, pi_v1_eval, pi_v1_train_kappa,
    repeat_components, repeat_keep,
};
use crate::gamma::{gamma_from_samples, gamma_rsample};
use crate::num::{c, Dev, Real, Tr};

/// Which official version to follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Version {
    /// ICLR 2023 (idiap/nvib v1.0), what the published NVAE used.
    #[default]
    V1,
    /// The latest official code (idiap/nvib HEAD = v3.0).
    Head,
}

/// The prior component prepended to every latent: N(μ₀, σ²₀) with pseudo-count α₀.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorComponent {
    /// μ₀, one value (all dimensions) or one per latent dimension.
    pub mu: Vec<f64>,
    /// σ²₀, one value or one per latent dimension.
    pub var: Vec<f64>,
    /// α₀ (v1: `prior_alpha`; head: exp(`prior_log_alpha`)).
    pub alpha: f64,
}

impl PriorComponent {
    /// `values` (length 1 or `latent`) spread over `latent` dimensions.
    pub fn per_dim(values: &[f64], latent: usize) -> Vec<f64> {
        if values.len() == 1 {
            vec![values[0]; latent]
        } else {
            values.to_vec()
        }
    }
}

/// The α projection of each version.
pub enum AlphaWeights<E: Real, D: Dev<E>> {
    /// α = ReLU(x·w + b).
    V1 {
        w: Tr<(Model,), E, D>,
        b: Tr<(), E, D>,
    },
    /// log α = b + x·w_lin + (x⊙x)·w_quad, α = exp(log α).
    Head {
        w_lin: Tr<(Model,), E, D>,
        w_quad: Tr<(Model,), E, D>,
        b: Tr<(), E, D>,
    },
}

/// The layer's weights as traced views, stored `(in, out)` (y = x W + b).
pub struct Weights<E: Real, D: Dev<E>> {
    pub mu_w: Tr<(Model, Latent), E, D>,
    pub mu_b: Tr<(Latent,), E, D>,
    pub log_var_w: Tr<(Model, Latent), E, D>,
    pub log_var_b: Tr<(Latent,), E, D>,
    pub alpha: AlphaWeights<E, D>,
}

/// Noise for a training pass: drawn from the host generator, or given (golden checks).
pub enum Noise<'a, E> {
    /// Draw everything from this generator.
    Host(&'a mut HostRng),
    /// Use exactly these draws (batch-first).
    Given {
        /// ε for z, `(Batch, κ·Nl, Latent)`.
        eps_z: Vec<E>,
        /// The Dirichlet noise of the version.
        dirichlet: DirichletNoise<E>,
    },
}

/// The draws behind the Dirichlet weights.
pub enum DirichletNoise<E> {
    /// v1: Gaussian ε and uniform u for ρ over Nl, and for the κ copies `(Batch, κ·Nl)`.
    V1 {
        eps_rho: Vec<E>,
        u_rho: Vec<E>,
        eps_sub: Vec<E>,
        u_sub: Vec<E>,
    },
    /// head: raw standard-Gamma(α) samples for the Nl components (ρ), and with κ > 1 the
    /// raw Gamma(α/κ) samples of the κ copies `(Batch, κ·Nl)`.
    Head { gamma: Vec<E>, gamma_sub: Vec<E> },
}

/// The sparsity statistics the official code logs (§A.8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Mean over the batch of the number of components kept.
    pub avg_num_vec: f64,
    /// Mean over the batch of components kept / existing components (prior included).
    pub avg_prop_vec: f64,
    /// Mean over the batch of Σ α over existing components.
    pub avg_alpha0: f64,
}

/// What the layer returns; every per-component tensor has Comp = κ·Nl.
pub struct Output<E: Real, D: Dev<E>> {
    pub z: Tr<(Batch, Comp, Latent), E, D>,
    pub mu: Tr<(Batch, Comp, Latent), E, D>,
    pub log_var: Tr<(Batch, Comp, Latent), E, D>,
    pub alpha: Tr<(Batch, Comp), E, D>,
    /// head only.
    pub log_alpha: Option<Tr<(Batch, Comp), E, D>>,
    pub pi: Tr<(Batch, Comp), E, D>,
    /// Which components exist (not padding), row-major Batch × Comp.
    pub keep: Vec<bool>,
    pub stats: Stats,
}

/// The NVIB layer's forward pass: the projections through the device's fused Linear, the latent
/// rows (prior component, κ copies, zeros) assembled and z drawn by its mixture kernels.
///
/// # Shapes
/// `x: (Batch, Seq, Model)`, `keep_src`: Batch × Seq → latent `(Batch, κ·(Seq + 1), Latent)`
#[allow(clippy::too_many_arguments)]
pub fn forward<E: Real, D: Dev<E>>(
    x: Tr<(Batch, Seq, Model), E, D>,
    keep_src: &[bool],
    w: Weights<E, D>,
    prior: &PriorComponent,
    version: Version,
    kappa: usize,
    noise: Option<Noise<E>>,
) -> Output<E, D> {
    let (batch, seq, model) = *x.shape();
    let latent = w.mu_b.shape().0;
    let nl = Comp(seq.0 + 1);
    let keep_nl: Vec<bool> = (0..batch.0)
        .flat_map(|b| {
            std::iter::once(true).chain(keep_src[b * seq.0..(b + 1) * seq.0].iter().copied())
        })
        .collect();
    let (x, rows_nl) = source_rows(x, keep_src, version);

    let mu_src = D::linear(
        x.retaped::<OwnedTape<E, D>>(),
        Weight::InOut(w.mu_w),
        Some(w.mu_b),
        Identity,
    );
    let lv_src = D::linear(
        x.retaped::<OwnedTape<E, D>>(),
        Weight::InOut(w.log_var_w),
        Some(w.log_var_b),
        Identity,
    );
    let column = |w: Tr<(Model,), E, D>| Weight::InOut(w.reshape_like(&(model, Const::<1>)));
    let scalar = |b: Tr<(), E, D>| Some(b.reshape_like(&(Const::<1>,)));
    let (alpha_src, log_alpha_src) = match w.alpha {
        AlphaWeights::V1 { w: wa, b } => (D::linear(x, column(wa), scalar(b), Relu), None),
        AlphaWeights::Head { w_lin, w_quad, b } => {
            let sq = x.retaped::<OwnedTape<E, D>>().square();
            let quad = D::linear(sq, column(w_quad), None, Identity);
            let log_a = D::linear(x, column(w_lin), scalar(b), Identity) + quad;
            (log_a.retaped::<OwnedTape<E, D>>().exp(), Some(log_a))
        }
    };

    // The prior component is row 0 of every batch element.
    let to_comp = |t: Tr<(usize, Const<1>), E, D>| t.reshape_like(&(batch, nl));
    let alpha = to_comp(D::assemble_rows(alpha_src, &[c(prior.alpha)], &rows_nl));
    let log_alpha =
        log_alpha_src.map(|la| to_comp(D::assemble_rows(la, &[c(prior.alpha.ln())], &rows_nl)));
    let per_dim = |values: Vec<f64>| -> Vec<E> {
        PriorComponent::per_dim(&values, latent.0)
            .into_iter()
            .map(c)
            .collect()
    };
    let prior_mu = per_dim(prior.mu.clone());
    let prior_lv = per_dim(prior.var.iter().map(|v| v.ln()).collect());

    // κ copies (row k·Nl + i is copy k of component i) exist in training only; evaluation
    // uses the means of the Nl components.
    let kn = Comp(kappa * nl.0);
    let copies = if noise.is_some() { kappa } else { 1 };
    let keep = repeat_keep(&keep_nl, batch.0, nl.0, copies);
    let to_latent =
        |t: Tr<(usize, Latent), E, D>, comps: Comp| t.reshape_like(&(batch, comps, latent));
    let (z, pi, mu, log_var, alpha) = match noise {
        None => {
            let pi = match version {
                Version::V1 => pi_v1_eval(alpha.retaped(), &keep_nl),
                Version::Head => pi_head_eval(alpha.retaped(), &keep_nl),
            };
            let mu = to_latent(D::assemble_rows(mu_src, &prior_mu, &rows_nl), nl);
            let log_var = to_latent(D::assemble_rows(lv_src, &prior_lv, &rows_nl), nl);
            (mu.retaped(), pi, mu, log_var, alpha)
        }
        Some(noise) => {
            let rows_kn: Vec<Row> = rows_nl
                .chunks(nl.0)
                .flat_map(|row| (0..kappa).flat_map(move |_| row.iter().copied()))
                .collect();
            let prior_rows = (&prior_mu[..], &prior_lv[..]);
            // ε for z is drawn before the Dirichlet noise.
            let (g, pi) = match noise {
                Noise::Host(rng) => (
                    D::gaussian_rows(mu_src, lv_src, prior_rows, &rows_kn, Eps::Draw(rng)),
                    sample_pi(alpha.retaped(), &keep_nl, kappa, version, rng),
                ),
                Noise::Given { eps_z, dirichlet } => (
                    D::gaussian_rows(mu_src, lv_src, prior_rows, &rows_kn, Eps::Given(&eps_z)),
                    given_pi(alpha.retaped(), &keep_nl, kappa, version, dirichlet),
                ),
            };
            let alpha = match kappa {
                1 => alpha,
                // The multi-sample path of both versions: each copy holds α/κ (α's history
                // moves along with it).
                _ => repeat_components(alpha, kappa) / c::<E>(kappa as f64),
            };
            let (z, mu, log_var) = (
                to_latent(g.z, kn),
                to_latent(g.mu, kn),
                to_latent(g.log_var, kn),
            );
            (z, pi, mu, log_var, alpha)
        }
    };
    let stats = statistics(
        &alpha.as_vec(),
        &pi.as_vec(),
        &keep,
        alpha.shape().1 .0,
        version,
    );
    Output {
        z,
        mu,
        log_var,
        alpha,
        log_alpha,
        pi,
        keep,
        stats,
    }
}

/// The rows the projections read, and where each of the Batch·Nl components comes from: the
/// prior row, a projected row, or zeros. v1 zeroes μ, logσ², α and z at padded positions, so
/// only kept positions are projected there; head projects every position.
///
/// # Shapes
/// `x: (Batch, Seq, Model)` → `(rows, Model)` and Batch·(Seq + 1) sources
fn source_rows<E: Real, D: Dev<E>>(
    x: Tr<(Batch, Seq, Model), E, D>,
    keep_src: &[bool],
    version: Version,
) -> (Tr<(usize, Model), E, D>, Vec<Row>) {
    let (batch, seq, model) = *x.shape();
    let compact = version == Version::V1 && keep_src.contains(&false);
    let mut kept = Vec::new();
    let mut rows = Vec::with_capacity(batch.0 * (seq.0 + 1));
    for (s, &k) in keep_src.iter().enumerate() {
        if s % seq.0 == 0 {
            rows.push(Row::Prior);
        }
        rows.push(if !compact {
            Row::Source(s)
        } else if k {
            kept.push(Row::Source(s));
            Row::Source(kept.len() - 1)
        } else {
            Row::Zero
        });
    }
    let x = x.reshape_like(&(batch.0 * seq.0, model));
    let x = if compact {
        D::assemble_rows(x, &[], &kept)
    } else {
        x
    };
    (x, rows)
}

/// π from the given Dirichlet noise of the version.
fn given_pi<E: Real, D: Dev<E>>(
    alpha: Tr<(Batch, Comp), E, D>,
    keep_nl: &[bool],
    kappa: usize,
    version: Version,
    dirichlet: DirichletNoise<E>,
) -> Tr<(Batch, Comp), E, D> {
    match (version, dirichlet) {
        (
            Version::V1,
            DirichletNoise::V1 {
                eps_rho,
                u_rho,
                eps_sub,
                u_sub,
            },
        ) => pi_v1_train_kappa(alpha, keep_nl, kappa, eps_rho, u_rho, eps_sub, u_sub),
        (Version::Head, DirichletNoise::Head { gamma, gamma_sub }) => {
            let rho = gamma_from_samples(alpha.retaped(), gamma);
            if kappa == 1 {
                pi_head_train(alpha, keep_nl, rho)
            } else {
                let sub = gamma_from_samples(per_copy(&alpha, kappa), gamma_sub);
                pi_head_train_kappa(alpha, keep_nl, kappa, rho, sub)
            }
        }
        _ => panic!("the Dirichlet noise does not match the NVIB version"),
    }
}

/// The pseudo-counts of the κ copies, α/κ each (row k·Nl + i = copy k of component i).
///
/// # Shapes
/// `(Batch, Nl)` → `(Batch, κ·Nl)`
fn per_copy<E: Real, D: Dev<E>>(
    alpha: &Tr<(Batch, Comp), E, D>,
    kappa: usize,
) -> Tr<(Batch, Comp), E, D> {
    repeat_components(alpha.retaped(), kappa) / c::<E>(kappa as f64)
}

/// π drawn with the host generator.
fn sample_pi<E: Real, D: Dev<E>>(
    alpha: Tr<(Batch, Comp), E, D>,
    keep_nl: &[bool],
    kappa: usize,
    version: Version,
    rng: &mut HostRng,
) -> Tr<(Batch, Comp), E, D> {
    let n = alpha.shape().0 .0 * alpha.shape().1 .0;
    let to_e = |v: Vec<f32>| v.into_iter().map(|x| c(f64::from(x))).collect::<Vec<E>>();
    match version {
        Version::V1 => {
            let (eps_rho, u_rho) = (
                to_e(normal_vec(rng, n)),
                to_e(uniform_vec(rng, n, 1e-8, 1.0 - 1e-8)),
            );
            let (eps_sub, u_sub) = (
                to_e(normal_vec(rng, n * kappa)),
                to_e(uniform_vec(rng, n * kappa, 1e-8, 1.0 - 1e-8)),
            );
            pi_v1_train_kappa(alpha, keep_nl, kappa, eps_rho, u_rho, eps_sub, u_sub)
        }
        Version::Head if kappa == 1 => {
            let g = gamma_rsample(alpha.retaped(), rng);
            pi_head_train(alpha, keep_nl, g)
        }
        Version::Head => {
            let rho = gamma_rsample(alpha.retaped(), rng);
            let sub = gamma_rsample(per_copy(&alpha, kappa), rng);
            pi_head_train_kappa(alpha, keep_nl, kappa, rho, sub)
        }
    }
}

/// avg_num_vec, avg_prop_vec, avg_alpha0 (§A.8): v1 counts α ≠ 0, head counts π ≠ 0.
fn statistics<E: Real>(
    alpha: &[E],
    pi: &[E],
    keep: &[bool],
    comps: usize,
    version: Version,
) -> Stats {
    let batch = keep.len() / comps.max(1);
    let (mut num, mut prop, mut alpha0) = (0.0, 0.0, 0.0);
    for b in 0..batch {
        let rows = b * comps..(b + 1) * comps;
        let kept = rows
            .clone()
            .filter(|&i| match version {
                Version::V1 => alpha[i] != E::zero(),
                Version::Head => pi[i] != E::zero(),
            })
            .count() as f64;
        let existing = rows.clone().filter(|&i| keep[i]).count().max(1) as f64;
        num += kept;
        prop += kept / existing;
        alpha0 += rows
            .filter(|&i| keep[i])
            .map(|i| alpha[i].to_f64().unwrap_or(f64::NAN))
            .sum::<f64>();
    }
    let n = batch.max(1) as f64;
    Stats {
        avg_num_vec: num / n,
        avg_prop_vec: prop / n,
        avg_alpha0: alpha0 / n,
    }
}
