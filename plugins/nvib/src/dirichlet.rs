//! The Dirichlet weights π of the NVIB latent (spec §A.3, §A.4), batch-first: α and π are
//! `(Batch, Comp)`, and `keep` is a row-major Batch × Comp mask with `true` = a real component
//! (the negation of the official padding mask). With κ samples per component, component axis
//! entry `k·Nl + i` is copy k of component i.
//!
//! - v1 (the ICLR 2023 code the NVAE used): eval π = α/Σα; train draws Gammas with two explicit
//!   approximations (Gaussian for α > 0.63, inverse CDF otherwise) whose gradients flow directly.
//! - HEAD: eval thresholds α > 0.1; train uses `Gamma.rsample` (see [`crate::gamma`]) and adds
//!   the float type's tiny to the normaliser.
//!
//! A dropped component (padded, or α ≤ 0 in v1) always gets π = 0 with a zero gradient. The
//! official v1 code divides 0 by 0 there (NaN, spec §A.3 pitfall); this port does not.

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp};

use crate::num::{c, tiny, Dev, Real};
use crate::special::{lgamma, lgamma_f64};

/// What is added to a normaliser Σγ.
#[derive(Clone, Copy)]
enum Offset {
    /// v1: nothing; 1 where every γ of the sum is 0, so that 0/0 becomes 0.
    IfEmpty,
    /// HEAD: the float type's tiny.
    Tiny,
}

impl Offset {
    fn of<E: Real>(self, sum: E) -> E {
        match self {
            Offset::IfEmpty if sum == E::zero() => E::one(),
            Offset::IfEmpty => E::zero(),
            Offset::Tiny => tiny(),
        }
    }
}

/// A boolean tensor from host flags.
fn flags<S: Shape, E: Real, D: Dev<E>>(
    dev: &D,
    shape: S,
    f: impl IntoIterator<Item = bool>,
) -> Tensor<S, bool, D> {
    let v: Vec<E> = f
        .into_iter()
        .map(|k| if k { E::one() } else { E::zero() })
        .collect();
    dev.tensor_from_vec(v, shape).gt(c::<E>(0.5))
}

/// `x` where `cond`, else 0 (torch's `masked_fill`: no gradient reaches `x` where 0).
fn zero_unless<S: Shape, E: Real, D: Dev<E>, T: Tape<E, D>>(
    cond: Tensor<S, bool, D>,
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    let zeros = x.device().zeros_like(x.shape());
    cond.choose(x, zeros)
}

fn check_len(what: &str, len: usize, want: usize) {
    assert_eq!(len, want, "{what}: {len} entries for {want} components");
}

/// π = γ / D per group, D = Σ_group γ + offset, with the backward written by hand:
/// dL/dγ_j = (g_j − Σ_{i ∈ group} g_i π_i) / D, 0 where π_j = 0, and at most the largest
/// finite value. dfdx's division would take −γ/D² for the denominator, which overflows where
/// D² underflows (tiny Gammas, in f32 especially) and turns the exactly-zero gradient of a lone
/// copy (κ = 1: σ = γ/γ) into ∞ − ∞.
fn normalise<E: Real, D: Dev<E>, T: Tape<E, D>>(
    gamma: Tensor<(Batch, Comp), E, D, T>,
    groups: usize,
    group_of: impl Fn(usize) -> usize,
    offset: Offset,
) -> Tensor<(Batch, Comp), E, D, T> {
    let shape = *gamma.shape();
    // Contiguous, so that the gradient buffer is in logical order.
    let gamma = gamma.reshape_like(&shape);
    let host = gamma.as_vec();
    let group: Vec<usize> = (0..host.len()).map(group_of).collect();
    let mut denom = vec![E::zero(); groups];
    for (&g, &k) in host.iter().zip(&group) {
        denom[k] += g;
    }
    for d in &mut denom {
        *d = *d + offset.of(*d);
    }
    let pi: Vec<E> = host
        .iter()
        .zip(&group)
        .map(|(&g, &k)| g / denom[k])
        .collect();
    let (gamma, mut tape) = gamma.split_tape();
    let out = gamma.device().tensor_from_vec(pi.clone(), shape);
    if T::OWNS_TAPE {
        let (gamma_ghost, out_ghost) = (gamma.ghost(), out.ghost());
        let dev = gamma.device().clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&out_ghost)?;
            let grad_out = grads.get(&out_ghost).as_vec();
            let mut dot = vec![E::zero(); groups];
            for ((&g, &p), &k) in grad_out.iter().zip(&pi).zip(&group) {
                dot[k] += g * p;
            }
            let grad_in: Vec<E> = grad_out
                .iter()
                .zip(&pi)
                .zip(&group)
                .map(|((&g, &p), &k)| {
                    // A zero γ (dropped, or an inverse-CDF Gamma that underflowed) has no
                    // gradient to pass on: whatever made it passes none back (masked) or
                    // multiplies by its derivative γ·f′ = 0, and ∞ · 0 would be NaN.
                    if p == E::zero() {
                        return E::zero();
                    }
                    // A subnormal D (copies whose Gammas all nearly underflowed) can overflow
                    // the quotient; the largest finite value keeps the product with the
                    // Gamma's own derivative (γ ≤ D) finite, where ∞ would turn the step NaN.
                    let d = (g - dot[k]) / denom[k];
                    match d.is_infinite() {
                        true => d.signum() * E::max_value(),
                        false => d,
                    }
                })
                .collect();
            dev.accumulate(grads.get_or_alloc_mut(&gamma_ghost)?, &grad_in)
        });
    }
    out.put_tape(tape)
}

/// γ / (Σ_row γ + offset).
fn normalise_rows<E: Real, D: Dev<E>, T: Tape<E, D>>(
    gamma: Tensor<(Batch, Comp), E, D, T>,
    offset: Offset,
) -> Tensor<(Batch, Comp), E, D, T> {
    let (b, n) = *gamma.shape();
    normalise(gamma, b.0, |e| e / n.0, offset)
}

/// γ / (Σ over the κ copies of each component + offset); entry b·κNl + k·Nl + i is in group
/// b·Nl + i.
fn normalise_copies<E: Real, D: Dev<E>, T: Tape<E, D>>(
    gamma: Tensor<(Batch, Comp), E, D, T>,
    kappa: usize,
    offset: Offset,
) -> Tensor<(Batch, Comp), E, D, T> {
    let (b, kn) = *gamma.shape();
    let n = kn.0 / kappa;
    normalise(gamma, b.0 * n, |e| (e / kn.0) * n + e % n, offset)
}

/// `x` repeated κ times along the component axis: entry `k·Nl + i` is `x[i]`.
///
/// # Shapes
/// `x: (Batch, Comp = Nl)` → `(Batch, Comp = κ·Nl)`
pub fn repeat_components<E: Real, D: Dev<E>, T: Tape<E, D>>(
    x: Tensor<(Batch, Comp), E, D, T>,
    kappa: usize,
) -> Tensor<(Batch, Comp), E, D, T> {
    let (b, n) = *x.shape();
    x.broadcast_like::<_, Axis<1>>(&(b, kappa, n))
        .reshape_like(&(b, Comp(kappa * n.0)))
}

/// `keep` repeated κ times per row, in the layout of [`repeat_components`].
pub(crate) fn repeat_keep(keep: &[bool], b: usize, n: usize, kappa: usize) -> Vec<bool> {
    (0..b)
        .flat_map(|r| (0..kappa).flat_map(move |_| keep[r * n..(r + 1) * n].iter().copied()))
        .collect()
}

/// v1 eval: γ = max(α, 1e-8), 0 where dropped (padded or α ≤ 0); π = γ / Σγ.
///
/// # Shapes
/// `alpha: (Batch, Comp)`, `keep: Batch·Comp` → `(Batch, Comp)`
pub fn pi_v1_eval<E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<(Batch, Comp), E, D, T>,
    keep: &[bool],
) -> Tensor<(Batch, Comp), E, D, T> {
    let shape = *alpha.shape();
    let host = alpha.as_vec();
    check_len("keep", keep.len(), host.len());
    let kept = keep.iter().zip(&host).map(|(&k, &a)| k && a > E::zero());
    let kept = flags(alpha.device(), shape, kept);
    let gamma = zero_unless(kept, alpha.clamp(1e-8, f64::INFINITY));
    normalise_rows(gamma, Offset::IfEmpty)
}

/// v1 train Gammas with the noise supplied: a = max(α, 1e-8); where a > 0.63 the Gaussian
/// approximation γ = max(a + √a·ε, 1e-8), elsewhere the inverse-CDF approximation
/// γ = exp((ln u + ln a + lnΓ(a))/a); γ = 0 where dropped (padded or α ≤ 0). Gradients flow
/// explicitly through the selected formula. (The unselected inverse-CDF branch is evaluated at
/// min(a, 0.63), which changes no selected value but keeps it finite for huge α.)
///
/// # Shapes
/// `alpha: (Batch, Comp)`, `keep`, `eps` (ε ~ N(0, 1)), `u` (u ~ U(1e-8, 1 − 1e-8)):
/// `Batch·Comp` each → `(Batch, Comp)`
pub fn gamma_v1_approx<E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<(Batch, Comp), E, D, T>,
    keep: &[bool],
    eps: Vec<E>,
    u: Vec<E>,
) -> Tensor<(Batch, Comp), E, D, T> {
    let shape = *alpha.shape();
    let dev = alpha.device().clone();
    let host = alpha.as_vec();
    check_len("keep", keep.len(), host.len());
    check_len("eps", eps.len(), host.len());
    check_len("u", u.len(), host.len());
    let kept = flags(
        &dev,
        shape,
        keep.iter().zip(&host).map(|(&k, &a)| k && a > E::zero()),
    );
    let floor = c::<E>(1e-8);
    let large = flags(&dev, shape, host.iter().map(|&a| a.max(floor) > c(0.63)));
    let a = alpha.clamp(1e-8, f64::INFINITY);
    let eps = dev.tensor_from_vec(eps, shape);
    let gauss = (a.retaped::<T>().sqrt() * eps + a.retaped::<T>()).clamp(1e-8, f64::INFINITY);
    let small = a.clamp(1e-8, 0.63);
    let ln_u = dev.tensor_from_vec(u.into_iter().map(|u| u.ln()).collect(), shape);
    // (ln a + ln u) equals torch's (ln u + ln a) bit for bit.
    let inv_cdf =
        ((small.retaped::<T>().ln() + ln_u + lgamma(small.retaped::<T>())) * small.recip()).exp();
    zero_unless(kept, large.choose(gauss, inv_cdf))
}

/// Whether each Gamma of [`gamma_v1_approx`] is positive, by the same arithmetic in `E` (values
/// only): dropped components, and inverse-CDF draws that underflow, give 0.
fn gamma_v1_positive<E: Real>(alpha: &[E], keep: &[bool], u: &[E]) -> Vec<bool> {
    let floor = c::<E>(1e-8);
    alpha
        .iter()
        .zip(keep)
        .zip(u)
        .map(|((&alpha, &kept), &u)| {
            if !(kept && alpha > E::zero()) {
                return false;
            }
            let a = num_traits::clamp(alpha, floor, E::infinity());
            if a > c(0.63) {
                return true; // the Gaussian approximation is at least 1e-8
            }
            let small = num_traits::clamp(a, floor, c(0.63));
            let lg = c::<E>(lgamma_f64(small.to_f64().unwrap_or(f64::NAN)));
            (((small.ln() + u.ln()) + lg) * small.recip()).exp() > E::zero()
        })
        .collect()
}

/// v1 `reparameterize_dirichlet` in train mode: [`gamma_v1_approx`] normalised per row,
/// π = γ / Σγ, with π = 0 (not the official NaN) for dropped components and all-dropped rows.
///
/// # Shapes
/// `alpha: (Batch, Comp)`, `keep`, `eps`, `u`: `Batch·Comp` each → `(Batch, Comp)`
pub fn pi_v1_train<E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<(Batch, Comp), E, D, T>,
    keep: &[bool],
    eps: Vec<E>,
    u: Vec<E>,
) -> Tensor<(Batch, Comp), E, D, T> {
    normalise_rows(gamma_v1_approx(alpha, keep, eps, u), Offset::IfEmpty)
}

/// The v1 layer's train-mode π (used even for κ = 1): ρ = [`pi_v1_train`](α) over the Nl
/// components; σ = Dir(α/κ) with the [`gamma_v1_approx`] Gammas of the κ copies, normalised over
/// the copies of each component; π[k·Nl + i] = ρ_i·σ[k·Nl + i], so Σπ = 1 per row. π = 0 where
/// the component is dropped (the official NaN). Should all κ sub-Gammas of a kept component
/// underflow to 0, its π is 0 too (officially NaN), so the row's Σπ falls short by its ρ_i.
///
/// # Shapes
/// `alpha: (Batch, Comp = Nl)`, `keep`, `eps_rho`, `u_rho`: `Batch·Nl`; `eps_sub`, `u_sub`:
/// `Batch·κ·Nl` (row-major `(Batch, κ·Nl)`) → `(Batch, Comp = κ·Nl)`
///
/// # Panics
/// If κ = 0 or a mask or noise length does not match.
#[allow(clippy::too_many_arguments)]
pub fn pi_v1_train_kappa<E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<(Batch, Comp), E, D, T>,
    keep: &[bool],
    kappa: usize,
    eps_rho: Vec<E>,
    u_rho: Vec<E>,
    eps_sub: Vec<E>,
    u_sub: Vec<E>,
) -> Tensor<(Batch, Comp), E, D, T> {
    assert!(kappa >= 1, "kappa must be at least 1");
    let (b, n) = *alpha.shape();
    check_len("keep", keep.len(), b.0 * n.0);
    let rho = pi_v1_train(alpha.retaped::<T>(), keep, eps_rho, u_rho);
    if kappa == 1 {
        // A lone copy: σ = γ/γ is exactly 1 where its Gamma is positive (0 where it is not)
        // and carries no gradient, so only the sub-Gammas' signs are needed.
        check_len("eps_sub", eps_sub.len(), b.0 * n.0);
        check_len("u_sub", u_sub.len(), b.0 * n.0);
        let positive = gamma_v1_positive(&alpha.as_vec(), keep, &u_sub);
        let sigma = flags::<_, E, D>(alpha.device(), (b, n), positive);
        return zero_unless(sigma, carry_tape(alpha, rho));
    }
    let keep_rep = repeat_keep(keep, b.0, n.0, kappa);
    let alpha_rep = repeat_components(alpha, kappa) / c::<E>(kappa as f64);
    let gamma_sub = gamma_v1_approx(alpha_rep, &keep_rep, eps_sub, u_sub);
    repeat_components(rho, kappa) * normalise_copies(gamma_sub, kappa, Offset::IfEmpty)
}

/// HEAD eval: γ = α where α > 0.1 (strictly) and kept, else 0; π = γ / (Σγ + tiny).
///
/// # Shapes
/// `alpha: (Batch, Comp)`, `keep: Batch·Comp` → `(Batch, Comp)`
pub fn pi_head_eval<E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<(Batch, Comp), E, D, T>,
    keep: &[bool],
) -> Tensor<(Batch, Comp), E, D, T> {
    let shape = *alpha.shape();
    let host = alpha.as_vec();
    check_len("keep", keep.len(), host.len());
    let kept = keep.iter().zip(&host).map(|(&k, &a)| k && a > c(0.1));
    let kept = flags(alpha.device(), shape, kept);
    normalise_rows(zero_unless(kept, alpha), Offset::Tiny)
}

/// Carries `alpha`'s tape (the operations that made α) into `x`, whose values are kept.
fn carry_tape<E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<(Batch, Comp), E, D, T>,
    x: Tensor<(Batch, Comp), E, D, T>,
) -> Tensor<(Batch, Comp), E, D, T> {
    let (_, alpha_tape) = alpha.split_tape();
    let (x, tape) = x.split_tape();
    x.put_tape(tape.merge(alpha_tape))
}

/// HEAD train, given the Gammas γ ~ Gamma(α, 1) (from [`crate::gamma::gamma_rsample`] or
/// [`crate::gamma::gamma_from_samples`] on `alpha.retaped()`, which carry the gradient to α):
/// γ ← 0 where padded; π = γ / (Σγ + tiny). `alpha` only brings its tape, the history of α,
/// so that gradients reach whatever made α.
///
/// # Shapes
/// `alpha`, `gamma: (Batch, Comp)`, `keep: Batch·Comp` → `(Batch, Comp)`
///
/// # Panics
/// If the shapes or `keep` do not match.
pub fn pi_head_train<E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<(Batch, Comp), E, D, T>,
    keep: &[bool],
    gamma: Tensor<(Batch, Comp), E, D, T>,
) -> Tensor<(Batch, Comp), E, D, T> {
    assert_eq!(alpha.shape(), gamma.shape(), "alpha and gamma shapes");
    check_len("keep", keep.len(), gamma.shape().num_elements());
    let kept = flags(gamma.device(), *gamma.shape(), keep.iter().copied());
    normalise_rows(zero_unless(kept, carry_tape(alpha, gamma)), Offset::Tiny)
}

/// HEAD's κ-sample π (spec §A.3): ρ = [`pi_head_train`](γ_ρ) over the Nl components, with
/// γ_ρ ~ Gamma(α); σ = the sub-Gammas γ_sub ~ Gamma(α/κ) of the κ copies (make them with
/// `gamma_rsample(repeat_components(α, κ) / κ)`), masked and normalised over the copies of each
/// component with + tiny; π[k·Nl + i] = ρ_i·σ[k·Nl + i]. `alpha` only brings its tape.
///
/// # Shapes
/// `alpha`, `gamma_rho: (Batch, Comp = Nl)`, `keep: Batch·Nl`, `gamma_sub: (Batch, Comp = κ·Nl)`
/// → `(Batch, Comp = κ·Nl)`
///
/// # Panics
/// If κ = 0, or the shapes or `keep` do not match.
pub fn pi_head_train_kappa<E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<(Batch, Comp), E, D, T>,
    keep: &[bool],
    kappa: usize,
    gamma_rho: Tensor<(Batch, Comp), E, D, T>,
    gamma_sub: Tensor<(Batch, Comp), E, D, T>,
) -> Tensor<(Batch, Comp), E, D, T> {
    assert!(kappa >= 1, "kappa must be at least 1");
    let (b, n) = *gamma_rho.shape();
    assert_eq!(
        *gamma_sub.shape(),
        (b, Comp(kappa * n.0)),
        "gamma_sub shape"
    );
    let rho = pi_head_train(alpha, keep, gamma_rho);
    let keep_rep = repeat_keep(keep, b.0, n.0, kappa);
    let kept = flags(gamma_sub.device(), *gamma_sub.shape(), keep_rep);
    let sigma = normalise_copies(zero_unless(kept, gamma_sub), kappa, Offset::Tiny);
    repeat_components(rho, kappa) * sigma
}

#[cfg(test)]
mod tests;
