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

/// The NVIB layer's forward pass.
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
    let (batch, seq, _) = *x.shape();
    let latent = w.mu_b.shape().0;
    let dev = x.device().clone();
    let nl = Comp(seq.0 + 1);
    let comps = |s: Seq| Comp(s.0);

    let mu = linear(x.retaped(), w.mu_w, w.mu_b).reshape_like(&(batch, comps(seq), latent));
    let log_var =
        linear(x.retaped(), w.log_var_w, w.log_var_b).reshape_like(&(batch, comps(seq), latent));
    let (alpha_src, log_alpha_src) = match w.alpha {
        AlphaWeights::V1 { w: wa, b } => {
            let a = project(x, wa, b).relu();
            (a, None)
        }
        AlphaWeights::Head { w_lin, w_quad, b } => {
            let sq = x.retaped::<OwnedTape<E, D>>().square();
            let quad = dot(sq, w_quad);
            let log_a = project(x, w_lin, b) + quad;
            (log_a.retaped::<OwnedTape<E, D>>().exp(), Some(log_a))
        }
    };

    // Prepend the prior component.
    let row = |values: Vec<f64>| -> Tr<(Batch, Comp, Latent), E, D> {
        let one: Vec<E> = PriorComponent::per_dim(&values, latent.0)
            .into_iter()
            .map(c)
            .collect();
        let t: Tensor<(Latent,), E, D> = dev.tensor_from_vec(one, (latent,));
        t.broadcast_like(&(batch, Comp(1), latent))
            .put_tape(Default::default())
    };
    let mu = (row(prior.mu.clone()), mu).concat_along(Axis::<1>);
    let log_var =
        (row(prior.var.iter().map(|v| v.ln()).collect()), log_var).concat_along(Axis::<1>);
    let first = |v: f64| -> Tr<(Batch, Comp), E, D> {
        dev.tensor_from_vec(vec![c(v); batch.0], (batch, Comp(1)))
            .put_tape(Default::default())
    };
    let to_comp = |t: Tr<(Batch, Seq), E, D>| t.reshape_like(&(batch, comps(seq)));
    let alpha = (first(prior.alpha), to_comp(alpha_src)).concat_along(Axis::<1>);
    let log_alpha =
        log_alpha_src.map(|la| (first(prior.alpha.ln()), to_comp(la)).concat_along(Axis::<1>));
    let keep_nl: Vec<bool> = (0..batch.0)
        .flat_map(|b| {
            std::iter::once(true).chain(keep_src[b * seq.0..(b + 1) * seq.0].iter().copied())
        })
        .collect();

    // κ copies (row k·Nl + i is copy k of component i) and the sampling.
    let kn = Comp(kappa * nl.0);
    // κ copies exist in training only; evaluation uses the means of the Nl components.
    let copies = if noise.is_some() { kappa } else { 1 };
    let keep = repeat_keep(&keep_nl, batch.0, nl.0, copies);
    let (z, pi, mu, log_var, alpha) = match noise {
        None => {
            let pi = match version {
                Version::V1 => pi_v1_eval(alpha.retaped(), &keep_nl),
                Version::Head => pi_head_eval(alpha.retaped(), &keep_nl),
            };
            (mu.retaped(), pi, mu, log_var, alpha)
        }
        Some(noise) => {
            let (mu, log_var) = (repeat3(mu, kappa), repeat3(log_var, kappa));
            let (eps_z, pi) = match noise {
                Noise::Host(rng) => {
                    let n = batch.0 * kn.0 * latent.0;
                    let eps = normal_vec(rng, n)
                        .into_iter()
                        .map(|v| c(f64::from(v)))
                        .collect();
                    (
                        eps,
                        sample_pi(alpha.retaped(), &keep_nl, kappa, version, rng),
                    )
                }
                Noise::Given { eps_z, dirichlet } => {
                    let pi = match (version, dirichlet) {
                        (
                            Version::V1,
                            DirichletNoise::V1 {
                                eps_rho,
                                u_rho,
                                eps_sub,
                                u_sub,
                            },
                        ) => pi_v1_train_kappa(
                            alpha.retaped(),
                            &keep_nl,
                            kappa,
                            eps_rho,
                            u_rho,
                            eps_sub,
                            u_sub,
                        ),
                        (Version::Head, DirichletNoise::Head { gamma, gamma_sub }) => {
                            let rho = gamma_from_samples(alpha.retaped(), gamma);
                            if kappa == 1 {
                                pi_head_train(alpha.retaped(), &keep_nl, rho)
                            } else {
                                let sub = gamma_from_samples(per_copy(&alpha, kappa), gamma_sub);
                                pi_head_train_kappa(alpha.retaped(), &keep_nl, kappa, rho, sub)
                            }
                        }
                        _ => panic!("the Dirichlet noise does not match the NVIB version"),
                    };
                    (eps_z, pi)
                }
            };
            let z = sample_z(&dev, &mu, &log_var, eps_z);
            let alpha = match kappa {
                1 => alpha,
                // The multi-sample path of both versions: each copy holds α/κ (α's history
                // moves along with it).
                _ => repeat_components(alpha, kappa) / c::<E>(kappa as f64),
            };
            (z, pi, mu, log_var, alpha)
        }
    };
    finish(z, pi, mu, log_var, alpha, log_alpha, keep, version)
}

/// v1 zeroes μ, logσ², α and z at padded positions; both compute the statistics.
#[allow(clippy::too_many_arguments)]
fn finish<E: Real, D: Dev<E>>(
    z: Tr<(Batch, Comp, Latent), E, D>,
    pi: Tr<(Batch, Comp), E, D>,
    mu: Tr<(Batch, Comp, Latent), E, D>,
    log_var: Tr<(Batch, Comp, Latent), E, D>,
    alpha: Tr<(Batch, Comp), E, D>,
    log_alpha: Option<Tr<(Batch, Comp), E, D>>,
    keep: Vec<bool>,
    version: Version,
) -> Output<E, D> {
    let (z, mu, log_var, alpha) = match version {
        Version::V1 => {
            let m2 = mask_tensor(z.device(), &keep, *alpha.shape());
            let m3 = m2.clone().broadcast_like(z.shape());
            (z * m3.clone(), mu * m3.clone(), log_var * m3, alpha * m2)
        }
        Version::Head => (z, mu, log_var, alpha),
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

/// x W + b as one 2-D matmul over all Batch·Seq rows (one large gemm instead of one per batch
/// element).
///
/// # Shapes
/// `x: (Batch, Seq, Model)`, `w: (Model, Latent)` → `(Batch, Seq, Latent)`
fn linear<E: Real, D: Dev<E>>(
    x: Tr<(Batch, Seq, Model), E, D>,
    w: Tr<(Model, Latent), E, D>,
    b: Tr<(Latent,), E, D>,
) -> Tr<(Batch, Seq, Latent), E, D> {
    let (batch, seq, model) = *x.shape();
    let latent = w.shape().1;
    let rows = batch.0 * seq.0;
    let y = x.reshape_like(&(rows, model)).matmul(w);
    (y + b.broadcast_like(&(rows, latent))).reshape_like(&(batch, seq, latent))
}

/// x·w (+ b) for a single output, as one matrix-vector product over all Batch·Seq rows.
///
/// # Shapes
/// `x: (Batch, Seq, Model)` → `(Batch, Seq)`
fn dot<E: Real, D: Dev<E>>(
    x: Tr<(Batch, Seq, Model), E, D>,
    w: Tr<(Model,), E, D>,
) -> Tr<(Batch, Seq), E, D> {
    let (batch, seq, model) = *x.shape();
    x.reshape_like(&(batch.0 * seq.0, model))
        .matmul(w)
        .reshape_like(&(batch, seq))
}

/// x·w + b for a single output.
///
/// # Shapes
/// `x: (Batch, Seq, Model)` → `(Batch, Seq)`
fn project<E: Real, D: Dev<E>>(
    x: Tr<(Batch, Seq, Model), E, D>,
    w: Tr<(Model,), E, D>,
    b: Tr<(), E, D>,
) -> Tr<(Batch, Seq), E, D> {
    let xw = dot(x, w);
    let s2 = *xw.shape();
    xw + b.broadcast_like(&s2)
}

fn mask_tensor<E: Real, D: Dev<E>>(
    dev: &D,
    keep: &[bool],
    shape: (Batch, Comp),
) -> Tensor<(Batch, Comp), E, D> {
    let m = keep
        .iter()
        .map(|&k| if k { E::one() } else { E::zero() })
        .collect();
    dev.tensor_from_vec(m, shape)
}

/// κ copies along Comp (row k·Nl + i = copy k of component i).
///
/// # Shapes
/// `(Batch, Nl, Latent)` → `(Batch, κ·Nl, Latent)`
fn repeat3<E: Real, D: Dev<E>>(
    t: Tr<(Batch, Comp, Latent), E, D>,
    kappa: usize,
) -> Tr<(Batch, Comp, Latent), E, D> {
    if kappa == 1 {
        return t;
    }
    let (b, n, l) = *t.shape();
    t.broadcast_like(&(b, kappa, n, l))
        .reshape_like(&(b, Comp(kappa * n.0), l))
}

/// z = μ + ε ⊙ exp(½ logσ²).
fn sample_z<E: Real, D: Dev<E>>(
    dev: &D,
    mu: &Tr<(Batch, Comp, Latent), E, D>,
    log_var: &Tr<(Batch, Comp, Latent), E, D>,
    eps: Vec<E>,
) -> Tr<(Batch, Comp, Latent), E, D> {
    let eps = dev.tensor_from_vec(eps, *mu.shape());
    mu.retaped::<OwnedTape<E, D>>()
        + (log_var.retaped::<OwnedTape<E, D>>() * c::<E>(0.5)).exp() * eps
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
