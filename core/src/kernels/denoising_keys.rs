//! The per-component terms of evaluation-time denoising attention (`docs/nvib-math.md` §B.2),
//! which depend on a latent's Gaussians alone: with var = exp(logσ²) and V = var + s, the keys
//! μ/V, the values [var/V, s·μ/V] (a gate and a shift) and −½ Σ_p μ²/V − c Σ_p ln V.
//!
//! [`MixtureKernels::denoising_keys`](super::MixtureKernels::denoising_keys) composes dfdx's
//! generic ops by default ([`generic_denoising_keys`], the CUDA path and the f64 reference);
//! `Cpu` in f32 overrides it with the one-pass kernel of `cpu::denoising_keys`.

use std::ops::Add;

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use num_traits::Float;

use super::Tr;

/// The three outputs of [`MixtureKernels::denoising_keys`](super::MixtureKernels::denoising_keys).
/// The gradients of all three reach μ and logσ² only when the tapes of all three are merged
/// into the loss (as the attention that reads them does); the CPU kernel puts its whole
/// history on `keys`.
pub struct DenoisingKeys<B: Dim, C: Dim, P: Dim, E: Dtype, D: Storage<E>> {
    /// μ/V: `(B, C, P)`.
    pub keys: Tr<(B, C, P), E, D>,
    /// [var/V, s·μ/V] side by side: `(B, C, P + P)`.
    pub values: Tr<(B, C, P), E, D>,
    /// −½ Σ_p μ²/V − c Σ_p ln V: `(B, C)`.
    pub terms: Tr<(B, C), E, D>,
}

/// See [`MixtureKernels::denoising_keys`](super::MixtureKernels::denoising_keys).
pub fn generic_denoising_keys<B, C, P, E, D>(
    mu: Tr<(B, C, P), E, D>,
    log_var: Tr<(B, C, P), E, D>,
    s: f64,
    log_det_weight: f64,
) -> DenoisingKeys<B, C, P, E, D>
where
    B: Dim,
    C: Dim,
    P: Dim + Add<Output = P>,
    E: Dtype + Float,
    D: Device<E>,
{
    let cast = |x: f64| E::from(x).expect("an f64 converts to the float type");
    let s = cast(s);
    let var = log_var.exp();
    let biased_var = var.retaped::<OwnedTape<E, D>>() + s;
    let mu_over_v = mu.retaped::<OwnedTape<E, D>>() / biased_var.retaped::<OwnedTape<E, D>>();
    let var_ratio = var / biased_var.retaped::<OwnedTape<E, D>>();
    let half_mahalanobis =
        (mu * mu_over_v.retaped::<OwnedTape<E, D>>()).sum::<(B, C), Axis<2>>() * cast(0.5);
    let log_det = biased_var.ln().sum::<(B, C), Axis<2>>() * cast(log_det_weight);
    let values = (var_ratio, mu_over_v.retaped::<OwnedTape<E, D>>() * s).concat_along(Axis::<2>);
    DenoisingKeys {
        keys: mu_over_v,
        values,
        terms: (half_mahalanobis + log_det).negate(),
    }
}
