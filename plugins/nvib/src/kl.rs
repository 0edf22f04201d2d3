//! The two KL terms of NVIB against the (conditional) Dirichlet-process prior, and draws from
//! that prior for generation (`docs/nvib-math.md` §A.6, §A.7; official `v1:nvib/kl.py`, HEAD
//! `Nvib.kl_gaussian` / `Nvib.kl_dirichlet`, v1 `Nvib.sample`).
//!
//! Layout (batch-first): latent rows `(Batch, Comp, Latent)` with Comp = κ·Nl, row k·Nl + i
//! being copy k of component i (component 0 is the prior component); α per row `(Batch, Comp)`;
//! `keep` row-major Batch×Comp, true = a real row (the official mask negated).
//!
//! Masking: both KLs mask padded rows themselves, as HEAD does, before any arithmetic, so
//! garbage there (even NaN or ±∞) reaches neither values nor gradients. On v1.0's inputs, which
//! are already 0 at padded rows, this changes nothing: α is 0 there either way, and the row's
//! Gaussian term is 0 in both (v1 fills it with 0; here the row becomes the prior).
//!
//! Precision: [`kl_gaussian`] computes in the tensors' float type. [`kl_dirichlet`] computes
//! entirely in f64 on the host (the sum α₀q, lgamma, digamma and the cancellations between
//! them) and casts only its value and its derivative d KL_D / d α₀q to `E`, as HEAD computes in
//! f64 and casts the result to float32.

use dfdx::prelude::*;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::custom_op::with_host_derivative;
use vaezoo_core::kernels::mixture::keep_tensor;
use vaezoo_core::rng::HostRng;

use crate::num::{c, Dev, Real, Tr};
use crate::special::{digamma_f64, lgamma_f64, trigamma_f64};

/// The DP prior's settings. v1.0 has scalar μ_p, σ²_p (give one value); HEAD has one per latent
/// dimension (give `latent` values). [`Default`] is the NVAE's: μ_p = 0, σ²_p = 1, α = 1, δ = 1,
/// κ = 1 (`T:train.py:457-469`).
#[derive(Clone, Debug, PartialEq)]
pub struct DpPrior {
    /// Prior mean μ_p: one value for every latent dimension, or one per dimension.
    pub mu: Vec<f64>,
    /// Prior variance σ²_p (> 0), likewise.
    pub var: Vec<f64>,
    /// `prior_alpha`, the prior component's pseudo-count (HEAD: exp(prior_log_alpha)).
    pub alpha: f64,
    /// δ of the conditional prior: δ pseudo-counts per token (0 = the plain DP prior).
    pub delta: f64,
    /// κ, samples per component (rows per component in training).
    pub kappa: usize,
}

impl Default for DpPrior {
    fn default() -> Self {
        Self {
            mu: vec![0.0],
            var: vec![1.0],
            alpha: 1.0,
            delta: 1.0,
            kappa: 1,
        }
    }
}

impl DpPrior {
    /// (μ_p, σ²_p), one entry per latent dimension (a single value is repeated).
    ///
    /// # Panics
    /// If `mu` or `var` has neither 1 nor `latent` entries.
    pub fn per_dim(&self, latent: usize) -> (Vec<f64>, Vec<f64>) {
        let expand = |v: &[f64], what: &str| match v.len() {
            1 => vec![v[0]; latent],
            n if n == latent => v.to_vec(),
            n => panic!("prior {what} has {n} entries, want 1 or {latent}"),
        };
        (expand(&self.mu, "mu"), expand(&self.var, "var"))
    }

    /// The conditional prior's total pseudo-count α₀p = α + δ·(n − 1) for n components.
    pub fn alpha0(&self, n: f64) -> f64 {
        self.alpha + self.delta * (n - 1.0)
    }
}

/// KL_G (§A.6): ½·k₀·Σ_i (α_i/α₀q)·mean_p[σ²_ip/σ²_p + (μ_ip − μ_p)²/σ²_p − 1 − ln(σ²_ip/σ²_p)]
/// / n per batch element, over the kept rows (k₀ of them, n = k₀/κ, α₀q = Σ_kept α_i). As
/// k₀/n = κ, this is ½·κ·Σ_i E[π_i]·mean_p KL. A mean over the latent dimensions, not a sum.
///
/// # Shapes
/// `mu, logvar: (Batch, Comp, Latent)`, `alpha: (Batch, Comp)`, `keep`: Batch×Comp → `(Batch,)`
///
/// # Panics
/// If `keep` does not have one flag per row, or the prior's μ/σ² do not fit `Latent`.
pub fn kl_gaussian<E: Real, D: Dev<E>>(
    mu: Tr<(Batch, Comp, Latent), E, D>,
    logvar: Tr<(Batch, Comp, Latent), E, D>,
    alpha: Tr<(Batch, Comp), E, D>,
    keep: &[bool],
    prior: &DpPrior,
) -> Tr<(Batch,), E, D> {
    let (prior_mu, prior_var) = prior.per_dim(mu.shape().2 .0);
    let scale = 0.5 * prior.kappa as f64;
    D::kl_gaussian_mixture(mu, logvar, alpha, keep, &prior_mu, &prior_var, scale)
}

/// KL_D (§A.6) of one batch element and its derivative d KL_D / d α₀q, in f64: with k₀ kept
/// rows, n = k₀/κ and the conditional prior α₀p = α + δ(n − 1),
/// [lnΓ(α₀q) − lnΓ(α₀p) + (α₀q − α₀p)(ψ(α₀q/k₀) − ψ(α₀q)) + k₀(lnΓ(α₀p/k₀) − lnΓ(α₀q/k₀))] / n,
/// i.e. KL(Dir(α₀q/k₀·1_{k₀}) ‖ Dir(α₀p/k₀·1_{k₀})) / n. The derivative is
/// (α₀q − α₀p)(ψ′(α₀q/k₀)/k₀ − ψ′(α₀q)) / n.
pub fn kl_dirichlet_f64(alpha0_q: f64, k0: usize, prior: &DpPrior) -> (f64, f64) {
    let (q, k) = (alpha0_q, k0 as f64);
    let n = k / prior.kappa as f64;
    let p = prior.alpha0(n);
    let value = lgamma_f64(q) - lgamma_f64(p)
        + (q - p) * (digamma_f64(q / k) - digamma_f64(q))
        + k * (lgamma_f64(p / k) - lgamma_f64(q / k));
    let slope = (q - p) * (trigamma_f64(q / k) / k - trigamma_f64(q));
    (value / n, slope / n)
}

/// KL_D (§A.6) per batch element against the conditional prior, k₀ and n from `keep` and κ.
/// It depends on α only through α₀q = Σ_kept α_i, so every kept row gets the same gradient and
/// padded rows none. Computed in f64 whatever `E` ([`kl_dirichlet_f64`]).
///
/// # Shapes
/// `alpha: (Batch, Comp)`, `keep`: Batch×Comp → `(Batch,)`
///
/// # Panics
/// If `keep` does not have one flag per row. A batch element without a kept row gives NaN.
pub fn kl_dirichlet<E: Real, D: Dev<E>>(
    alpha: Tr<(Batch, Comp), E, D>,
    keep: &[bool],
    prior: &DpPrior,
) -> Tr<(Batch,), E, D> {
    let shape = *alpha.shape();
    let comp = shape.1 .0;
    assert_eq!(keep.len(), shape.0 .0 * comp, "one keep flag per row");
    let host = alpha.as_vec();
    let (values, slopes): (Vec<E>, Vec<E>) = host
        .chunks(comp)
        .zip(keep.chunks(comp))
        .map(|(a, k)| {
            let kept = a.iter().zip(k).filter(|(_, &k)| k);
            let alpha0_q = kept.map(|(a, _)| a.to_f64().unwrap_or(f64::NAN)).sum();
            let k0 = k.iter().filter(|&&k| k).count();
            let (value, slope) = kl_dirichlet_f64(alpha0_q, k0, prior);
            (c::<E>(value), c::<E>(slope))
        })
        .unzip();
    let dev = alpha.device().clone();
    let alpha = keep_tensor::<_, E, D>(&dev, keep, shape).choose(alpha, dev.zeros_like(&shape));
    with_host_derivative(alpha.sum::<(Batch,), Axis<1>>(), values, slopes)
}

/// Lengths K for generation, as the NVAE's `sample` (`T:VariationalTransformerNVIB.py:70-108`):
/// uniform on [min_len + 2, max_len + 1] (+2 for the initial token and the prior component), or
/// `max_len` for all when `min_len == max_len`. The latent keeps min(K, max_len) rows per copy
/// ([`prior_latent`]), so K = max_len + 1 also means no padding.
///
/// # Panics
/// If `min_len > max_len`.
pub fn sample_prior_lengths(
    rng: &mut HostRng,
    batch: usize,
    min_len: usize,
    max_len: usize,
) -> Vec<usize> {
    assert!(min_len <= max_len, "min_len {min_len} > max_len {max_len}");
    if min_len == max_len {
        return vec![max_len; batch];
    }
    (0..batch)
        .map(|_| rng.gen_range(min_len + 2..max_len + 2))
        .collect()
}

/// A latent drawn from the prior for generation (§A.7). The decoder receives
/// (z, π, μ = z, logvar), so eval DA with σ² ≈ 0 is train DA with Z = μ = z.
pub struct PriorLatent<E: Real, D: Dev<E>> {
    /// z ~ N(μ_p, σ²_p) at kept rows, 0 at padded ones: `(Batch, Comp, Latent)`.
    pub z: Tensor<(Batch, Comp, Latent), E, D>,
    /// −200 at every row (σ² ≈ 0): `(Batch, Comp, Latent)`.
    pub logvar: Tensor<(Batch, Comp, Latent), E, D>,
    /// α = (α + δ(K₀ − 1))/K₀ at kept rows, 0 at padded ones: `(Batch, Comp)`.
    pub alpha: Tensor<(Batch, Comp), E, D>,
    /// Batch×Comp, true = kept row.
    pub keep: Vec<bool>,
}

/// A draw from the prior with the given lengths, as v1.0 `Nvib.sample`: κ copies of `max_len`
/// rows, row k·max_len + i kept iff i < length, K₀ = κ·min(length, max_len) kept rows (there is
/// no separate prior row). ε is drawn for every row, kept or not, in row-major order.
///
/// # Shapes
/// `lengths`: Batch → `z, logvar: (Batch, Comp = κ·max_len, Latent)`, `alpha: (Batch, Comp)`
///
/// # Panics
/// If `max_len` or a length is 0, or the prior's μ/σ² do not fit `latent`.
pub fn prior_latent<E: Real, D: Dev<E>>(
    dev: &D,
    rng: &mut HostRng,
    lengths: &[usize],
    max_len: usize,
    latent: Latent,
    prior: &DpPrior,
) -> PriorLatent<E, D> {
    assert!(max_len > 0 && !lengths.contains(&0), "empty prior latent");
    let (batch, comp) = (Batch(lengths.len()), Comp(prior.kappa * max_len));
    let (mu, var) = prior.per_dim(latent.0);
    let keep: Vec<bool> = lengths
        .iter()
        .flat_map(|&len| (0..comp.0).map(move |r| r % max_len < len))
        .collect();
    let mut z = Vec::with_capacity(keep.len() * latent.0);
    for &k in &keep {
        for (m, v) in mu.iter().zip(&var) {
            let eps: f64 = StandardNormal.sample(rng);
            z.push(c::<E>(if k { m + v.sqrt() * eps } else { 0.0 }));
        }
    }
    let alpha = lengths.iter().flat_map(|&len| {
        let kept = len.min(max_len);
        let k0 = (prior.kappa * kept) as f64;
        let each = prior.alpha0(k0) / k0;
        (0..comp.0).map(move |r| c::<E>(if r % max_len < kept { each } else { 0.0 }))
    });
    let shape = (batch, comp, latent);
    PriorLatent {
        z: dev.tensor_from_vec(z, shape),
        logvar: dev.zeros_like(&shape) + c::<E>(-200.0),
        alpha: dev.tensor_from_vec(alpha.collect(), (batch, comp)),
        keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vaezoo_core::rng::seeded;

    #[test]
    fn per_dim_repeats_a_scalar_and_keeps_a_vector() {
        let prior = DpPrior {
            mu: vec![0.5],
            var: vec![1.0, 2.0, 3.0],
            ..DpPrior::default()
        };
        assert_eq!(prior.per_dim(3), (vec![0.5; 3], vec![1.0, 2.0, 3.0]));
        assert!(std::panic::catch_unwind(|| prior.per_dim(2)).is_err());
    }

    #[test]
    fn kl_dirichlet_f64_slope_is_its_derivative() {
        let prior = DpPrior {
            alpha: 1.3,
            delta: 0.3,
            kappa: 2,
            ..DpPrior::default()
        };
        for (q, k0) in [(0.4, 2), (3.0, 6), (9.5, 12), (250.0, 400)] {
            let h = 1e-6 * q;
            let fd = (kl_dirichlet_f64(q + h, k0, &prior).0
                - kl_dirichlet_f64(q - h, k0, &prior).0)
                / (2.0 * h);
            let slope = kl_dirichlet_f64(q, k0, &prior).1;
            assert!(
                (slope - fd).abs() <= 1e-6 * fd.abs().max(1e-3),
                "{slope} vs {fd}"
            );
        }
        // At α₀q = α₀p the KL and its slope vanish.
        let p = prior.alpha0(3.0);
        assert_eq!(kl_dirichlet_f64(p, 6, &prior), (0.0, 0.0));
    }

    #[test]
    fn prior_lengths_are_uniform_on_the_official_range() {
        let (min_len, max_len, n) = (3, 7, 60_000);
        let lengths = sample_prior_lengths(&mut seeded(0), n, min_len, max_len);
        assert_eq!(
            lengths,
            sample_prior_lengths(&mut seeded(0), n, min_len, max_len)
        );
        // randint(min + 2, max + 2) = 5..=8, each with probability 1/4.
        for k in min_len + 2..=max_len + 1 {
            let freq = lengths.iter().filter(|&&l| l == k).count() as f64 / n as f64;
            assert!((freq - 0.25).abs() < 0.01, "P(K = {k}) = {freq}");
        }
        assert!(lengths
            .iter()
            .all(|l| (min_len + 2..=max_len + 1).contains(l)));
        assert_eq!(sample_prior_lengths(&mut seeded(0), 4, 5, 5), vec![5; 4]);
    }

    #[test]
    fn prior_latent_draws_the_prior_with_the_conditional_alpha() {
        let prior = DpPrior {
            mu: vec![0.5, -1.0],
            var: vec![4.0, 0.25],
            alpha: 1.5,
            delta: 0.3,
            kappa: 2,
        };
        let (max_len, lengths) = (4, [2, 4, 5, 3].repeat(500));
        let out = prior_latent::<f64, _>(
            &Cpu::default(),
            &mut seeded(3),
            &lengths,
            max_len,
            Latent(2),
            &prior,
        );
        assert_eq!(out.z.shape(), &(Batch(2000), Comp(8), Latent(2)));
        let (z, alpha) = (out.z.as_vec(), out.alpha.as_vec());
        assert!(out.logvar.as_vec().iter().all(|&l| l == -200.0));
        let (mut sum, mut sq, mut count) = ([0.0; 2], [0.0; 2], 0.0);
        for (r, &keep) in out.keep.iter().enumerate() {
            let (len, i) = (lengths[r / 8], r % 8 % max_len);
            assert_eq!(keep, i < len, "row {r}");
            let k0 = (2 * len.min(max_len)) as f64;
            let want = if keep {
                (1.5 + 0.3 * (k0 - 1.0)) / k0
            } else {
                0.0
            };
            assert!((alpha[r] - want).abs() < 1e-15, "α of row {r}");
            for p in 0..2 {
                if keep {
                    sum[p] += z[2 * r + p];
                    sq[p] += z[2 * r + p] * z[2 * r + p];
                } else {
                    assert_eq!(z[2 * r + p], 0.0);
                }
            }
            count += f64::from(u8::from(keep));
        }
        // Σα over the kept rows is the conditional prior α₀p(K₀).
        let total: f64 = alpha[..8].iter().sum();
        assert!((total - prior.alpha0(4.0)).abs() < 1e-14);
        // 13 000 draws per dimension: the mean within 4 standard errors, the variance within 5%.
        for p in 0..2 {
            let mean = sum[p] / count;
            let var = sq[p] / count - mean * mean;
            let se = (prior.var[p] / count).sqrt();
            assert!((mean - prior.mu[p]).abs() < 4.0 * se, "mean {mean}");
            assert!((var / prior.var[p] - 1.0).abs() < 0.05, "var {var}");
        }
    }
}
