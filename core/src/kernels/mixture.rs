//! Kernels of masked Gaussian mixture latents (NVIB's Dirichlet-process latents): assembling a
//! latent's rows from projected source rows, a constant prior row and zeros, drawing
//! z = μ + ε ⊙ exp(½ logσ²) in the same pass, and the α-weighted Gaussian KL against a diagonal
//! prior.
//!
//! [`MixtureKernels`] is part of [`super::Kernels`]: its default methods compose dfdx's generic
//! ops (the CUDA path and the f64 reference, below); `Cpu` in f32 overrides them with the fused
//! kernels of [`super::cpu::mixture`] and [`super::cpu::kl_gaussian`].

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use num_traits::Float;

use std::ops::Add;

use super::denoising_keys::{generic_denoising_keys, DenoisingKeys};
use super::{cpu, fast_path_enabled, Tr};
use crate::custom_op::HostGrad;
use crate::rng::{noise_vec_as, HostRng};

/// Where one row of an assembled latent comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// The constant prior row (it has no gradient).
    Prior,
    /// Row `r` of the source.
    Source(usize),
    /// Zeros (a dropped component, e.g. a padded position).
    Zero,
}

/// The noise ε of [`MixtureKernels::gaussian_rows`], one standard normal per output element
/// (row-major).
pub enum Eps<'a, E> {
    /// Exactly these values.
    Given(&'a [E]),
    /// Drawn from the host generator, as `rng::noise_vec_as` draws them.
    Draw(&'a mut HostRng),
}

/// The three `(rows, P)` outputs of [`MixtureKernels::gaussian_rows`]. The gradients of all
/// three reach the sources only when the tapes of all three are merged into the loss (as
/// `Mixture::into_tape` does); the CPU kernel puts its whole history on `z`.
pub struct GaussianRows<P: Dim, E: Dtype, D: Storage<E>> {
    /// z = μ + ε ⊙ exp(½ logσ²), 0 at [`Row::Zero`] rows.
    pub z: Tr<(usize, P), E, D>,
    /// The assembled means.
    pub mu: Tr<(usize, P), E, D>,
    /// The assembled log-variances.
    pub log_var: Tr<(usize, P), E, D>,
}

/// The mixture-latent operations a device provides; the defaults are dfdx's generic ops.
pub trait MixtureKernels<E: Dtype + Float>: Device<E> + HostGrad<E> {
    /// Row `i` of the output is `src[r]` for [`Row::Source`]`(r)`, `prior` for [`Row::Prior`]
    /// and zeros for [`Row::Zero`]; a source row may be used several times (its gradients
    /// add up) or not at all. `prior` may be empty when no row is [`Row::Prior`].
    ///
    /// # Shapes
    /// `src: (R, P)`, `prior: P`, `rows: N` → `(N, P)`
    ///
    /// # Panics
    /// If a source index is out of range, or a [`Row::Prior`] row meets a `prior` that is not
    /// `P` long.
    fn assemble_rows<R: Dim, P: Dim>(
        src: Tr<(R, P), E, Self>,
        prior: &[E],
        rows: &[Row],
    ) -> Tr<(usize, P), E, Self> {
        generic_assemble_rows(src, prior, rows)
    }

    /// [`assemble_rows`](Self::assemble_rows) of the means (with `prior.0`) and of the
    /// log-variances (with `prior.1`), and z = μ + ε ⊙ exp(½ logσ²) (0 at [`Row::Zero`] rows),
    /// in one pass.
    ///
    /// # Shapes
    /// `mu, log_var: (R, P)`, `prior: (P, P)`, `rows: N`, `eps`: N·P → three `(N, P)`
    ///
    /// # Panics
    /// As [`assemble_rows`](Self::assemble_rows), or if given `eps` are not `N·P`.
    fn gaussian_rows<R: Dim, P: Dim>(
        mu: Tr<(R, P), E, Self>,
        log_var: Tr<(R, P), E, Self>,
        prior: (&[E], &[E]),
        rows: &[Row],
        eps: Eps<E>,
    ) -> GaussianRows<P, E, Self> {
        generic_gaussian_rows(mu, log_var, prior, rows, eps)
    }

    /// `scale · Σ_c (α_c / Σ_kept α) · mean_p KL(N(μ_cp, σ²_cp) ‖ N(μ_p, σ²_p))` per batch
    /// element over the kept rows `c`: padded rows (`keep` false) reach neither the value nor
    /// any gradient, whatever they hold. The gradient reaches α through α_c / Σα too.
    ///
    /// # Shapes
    /// `mu, log_var: (B, C, P)`, `alpha: (B, C)`, `keep: B·C`, `prior_mu, prior_var: P` →
    /// `(B,)`
    ///
    /// # Panics
    /// If `keep`, `prior_mu` or `prior_var` has the wrong length.
    #[allow(clippy::too_many_arguments)]
    fn kl_gaussian_mixture<B: Dim, C: Dim, P: Dim>(
        mu: Tr<(B, C, P), E, Self>,
        log_var: Tr<(B, C, P), E, Self>,
        alpha: Tr<(B, C), E, Self>,
        keep: &[bool],
        prior_mu: &[f64],
        prior_var: &[f64],
        scale: f64,
    ) -> Tr<(B,), E, Self> {
        generic_kl_gaussian_mixture(mu, log_var, alpha, keep, prior_mu, prior_var, scale)
    }

    /// The per-component terms of evaluation-time denoising attention for heads of width s²:
    /// with var = exp(logσ²) and V = var + s, the keys μ/V, the values [var/V, s·μ/V] side by
    /// side, and −½ Σ_p μ²/V − `log_det_weight` · Σ_p ln V (see [`DenoisingKeys`]).
    ///
    /// # Shapes
    /// `mu, log_var: (B, C, P)` → `(B, C, P)`, `(B, C, P + P)`, `(B, C)`
    fn denoising_keys<B: Dim, C: Dim, P: Dim + Add<Output = P>>(
        mu: Tr<(B, C, P), E, Self>,
        log_var: Tr<(B, C, P), E, Self>,
        s: f64,
        log_det_weight: f64,
    ) -> DenoisingKeys<B, C, P, E, Self> {
        generic_denoising_keys(mu, log_var, s, log_det_weight)
    }
}

impl MixtureKernels<f64> for Cpu {}

impl MixtureKernels<f32> for Cpu {
    fn assemble_rows<R: Dim, P: Dim>(
        src: Tr<(R, P), f32, Self>,
        prior: &[f32],
        rows: &[Row],
    ) -> Tr<(usize, P), f32, Self> {
        if fast_path_enabled() {
            cpu::mixture::assemble_rows(src, prior, rows)
        } else {
            generic_assemble_rows(src, prior, rows)
        }
    }

    fn gaussian_rows<R: Dim, P: Dim>(
        mu: Tr<(R, P), f32, Self>,
        log_var: Tr<(R, P), f32, Self>,
        prior: (&[f32], &[f32]),
        rows: &[Row],
        eps: Eps<f32>,
    ) -> GaussianRows<P, f32, Self> {
        if fast_path_enabled() {
            cpu::mixture::gaussian_rows(mu, log_var, prior, rows, eps)
        } else {
            generic_gaussian_rows(mu, log_var, prior, rows, eps)
        }
    }

    fn kl_gaussian_mixture<B: Dim, C: Dim, P: Dim>(
        mu: Tr<(B, C, P), f32, Self>,
        log_var: Tr<(B, C, P), f32, Self>,
        alpha: Tr<(B, C), f32, Self>,
        keep: &[bool],
        prior_mu: &[f64],
        prior_var: &[f64],
        scale: f64,
    ) -> Tr<(B,), f32, Self> {
        if fast_path_enabled() {
            cpu::kl_gaussian::forward(mu, log_var, alpha, keep, prior_mu, prior_var, scale)
        } else {
            generic_kl_gaussian_mixture(mu, log_var, alpha, keep, prior_mu, prior_var, scale)
        }
    }

    fn denoising_keys<B: Dim, C: Dim, P: Dim + Add<Output = P>>(
        mu: Tr<(B, C, P), f32, Self>,
        log_var: Tr<(B, C, P), f32, Self>,
        s: f64,
        log_det_weight: f64,
    ) -> DenoisingKeys<B, C, P, f32, Self> {
        if fast_path_enabled() {
            cpu::denoising_keys::forward(mu, log_var, s, log_det_weight)
        } else {
            generic_denoising_keys(mu, log_var, s, log_det_weight)
        }
    }
}

#[cfg(feature = "cuda")]
impl MixtureKernels<f32> for Cuda {}
#[cfg(feature = "cuda")]
impl MixtureKernels<f64> for Cuda {}

/// `x` in `E` (every f64 the kernels are given converts).
fn cast<E: Float>(x: f64) -> E {
    E::from(x).expect("an f64 converts to the float type")
}

/// The preconditions of [`MixtureKernels::assemble_rows`], shared with the CPU kernel.
pub(crate) fn check_rows(sources: usize, width: usize, prior: &[impl Copy], rows: &[Row]) {
    for row in rows {
        match *row {
            Row::Source(r) => assert!(r < sources, "source row {r} of {sources}"),
            Row::Prior => assert_eq!(prior.len(), width, "the prior row's length"),
            Row::Zero => {}
        }
    }
}

/// See [`MixtureKernels::assemble_rows`]: the prior and zero rows concatenated before the
/// source, then gathered.
pub fn generic_assemble_rows<R: Dim, P: Dim, E: Dtype + Float, D: Device<E>>(
    src: Tr<(R, P), E, D>,
    prior: &[E],
    rows: &[Row],
) -> Tr<(usize, P), E, D> {
    let (r, p) = *src.shape();
    check_rows(r.size(), p.size(), prior, rows);
    let dev = src.device().clone();
    let mut fixed = vec![E::zero(); 2 * p.size()];
    if prior.len() == p.size() {
        fixed[..p.size()].copy_from_slice(prior);
    }
    let fixed = dev
        .tensor_from_vec(fixed, (2usize, p))
        .put_tape(OwnedTape::default());
    let all = (fixed, src.reshape_like(&(r.size(), p))).concat_along(Axis::<0>);
    let index = rows
        .iter()
        .map(|row| match *row {
            Row::Prior => 0,
            Row::Zero => 1,
            Row::Source(r) => r + 2,
        })
        .collect();
    all.gather(dev.tensor_from_vec(index, (rows.len(),)))
}

/// See [`MixtureKernels::gaussian_rows`].
pub fn generic_gaussian_rows<R: Dim, P: Dim, E: Dtype + Float, D: Device<E>>(
    mu: Tr<(R, P), E, D>,
    log_var: Tr<(R, P), E, D>,
    prior: (&[E], &[E]),
    rows: &[Row],
    eps: Eps<E>,
) -> GaussianRows<P, E, D> {
    let p = mu.shape().1;
    let n = rows.len() * p.size();
    let mut eps = match eps {
        Eps::Given(eps) => eps.to_vec(),
        Eps::Draw(rng) => noise_vec_as(rng, n),
    };
    assert_eq!(eps.len(), n, "one ε per output element");
    let dev = mu.device().clone();
    let mu = generic_assemble_rows(mu, prior.0, rows);
    let log_var = generic_assemble_rows(log_var, prior.1, rows);
    // ε = 0 makes z exactly 0 at zero rows (μ = logσ² = 0 there).
    for (e, row) in eps.chunks_mut(p.size()).zip(rows) {
        if *row == Row::Zero {
            e.fill(E::zero());
        }
    }
    let eps = dev.tensor_from_vec(eps, *mu.shape());
    let z = mu.retaped::<OwnedTape<E, D>>()
        + (log_var.retaped::<OwnedTape<E, D>>() * cast::<E>(0.5)).exp() * eps;
    GaussianRows { z, mu, log_var }
}

/// `keep` as a bool tensor of `shape`, one flag per element (for `choose` between kept and
/// padded entries).
pub fn keep_tensor<S: Shape, E: Dtype + Float, D: Device<E>>(
    dev: &D,
    keep: &[bool],
    shape: S,
) -> Tensor<S, bool, D> {
    let flags = keep
        .iter()
        .map(|&k| if k { E::one() } else { E::zero() })
        .collect();
    dev.tensor_from_vec(flags, shape).gt(cast::<E>(0.5))
}

/// See [`MixtureKernels::kl_gaussian_mixture`]: padded rows become the prior itself (KL 0).
#[allow(clippy::too_many_arguments)]
pub fn generic_kl_gaussian_mixture<B: Dim, C: Dim, P: Dim, E: Dtype + Float, D: Device<E>>(
    mu: Tr<(B, C, P), E, D>,
    log_var: Tr<(B, C, P), E, D>,
    alpha: Tr<(B, C), E, D>,
    keep: &[bool],
    prior_mu: &[f64],
    prior_var: &[f64],
    scale: f64,
) -> Tr<(B,), E, D> {
    let shape = *mu.shape();
    let (batch, comp, latent) = shape;
    check_kl_inputs(
        batch.size() * comp.size(),
        latent.size(),
        keep,
        prior_mu,
        prior_var,
    );
    let dev = mu.device().clone();
    let row = |v: &[f64]| {
        dev.tensor_from_vec(v.iter().map(|&x| cast::<E>(x)).collect(), (latent,))
            .broadcast_like(&shape)
    };
    let prior_logvar: Vec<f64> = prior_var.iter().map(|v| v.ln()).collect();
    let (prior_mu, prior_var, prior_logvar) = (row(prior_mu), row(prior_var), row(&prior_logvar));
    let keep2 = keep_tensor::<_, E, D>(&dev, keep, (batch, comp));
    let keep3 = keep2.clone().broadcast_like::<_, Axis<2>>(&shape);
    let mu = keep3.clone().choose(mu, prior_mu.clone());
    let log_ratio = keep3.choose(log_var, prior_logvar.clone()) - prior_logvar;
    let kl = log_ratio.with_empty_tape().exp() + (mu - prior_mu).square() / prior_var
        - log_ratio
        - E::one();
    let kl = kl.mean::<(B, C), Axis<2>>();
    let alpha = keep2.choose(alpha, dev.zeros_like(&(batch, comp)));
    let alpha0_q = alpha.with_empty_tape().sum::<(B,), Axis<1>>();
    let expected_pi = alpha / alpha0_q.broadcast_like(&(batch, comp));
    (expected_pi * kl).sum::<(B,), Axis<1>>() * cast::<E>(scale)
}

/// The preconditions of [`MixtureKernels::kl_gaussian_mixture`], shared with the CPU kernel.
pub(crate) fn check_kl_inputs(
    rows: usize,
    latent: usize,
    keep: &[bool],
    prior_mu: &[f64],
    prior_var: &[f64],
) {
    assert_eq!(keep.len(), rows, "one keep flag per row");
    assert_eq!(
        prior_mu.len(),
        latent,
        "one prior mean per latent dimension"
    );
    assert_eq!(
        prior_var.len(),
        latent,
        "one prior variance per latent dimension"
    );
}

#[cfg(test)]
mod tests;
