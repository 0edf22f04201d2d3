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
use crate::special::lgamma;

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
/// dL/dγ_j = (g_j − Σ_{i ∈ group} g_i π_i) / D. dfdx's division would take −γ/D² for the
/// denominator, which overflows where D² underflows (tiny Gammas, in f32 especially) and turns
/// the exactly-zero gradient of a lone copy (κ = 1: σ = γ/γ) into ∞ − ∞.
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
                .zip(&group)
                .map(|(&g, &k)| (g - dot[k]) / denom[k])
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
fn repeat_keep(keep: &[bool], b: usize, n: usize, kappa: usize) -> Vec<bool> {
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
mod tests {
    use super::*;
    use crate::gamma::gamma_from_samples;
    use crate::gamma::tests::gamma_quantile;

    type Tr64 = Tensor<(Batch, Comp), f64, Cpu, OwnedTape<f64, Cpu>>;

    const B: usize = 2;
    const N: usize = 4;
    /// Both v1 branches, an α = 0 component, a padded one (the last).
    const ALPHA: [f64; 8] = [1.0, 0.3, 2.5, 0.05, 1.0, 0.0, 0.7, 1.3];
    const KEEP: [bool; 8] = [true, true, true, true, true, true, true, false];
    const EPS: [f64; 16] = [
        0.3, -0.2, 0.9, 1.1, -0.4, 0.2, -0.5, 0.6, 0.1, 0.8, -0.3, 0.4, 0.7, -0.1, 0.2, -0.6,
    ];
    const U: [f64; 16] = [
        0.3, 0.6, 0.45, 0.8, 0.5, 0.2, 0.9, 0.4, 0.7, 0.35, 0.55, 0.15, 0.65, 0.25, 0.85, 0.5,
    ];

    /// v1 with κ = 2 and the fixed noise.
    fn v1_kappa2(a: Tr64, keep: &[bool]) -> Tr64 {
        let (e, u) = (EPS.to_vec(), U.to_vec());
        pi_v1_train_kappa(a, keep, 2, e[8..].to_vec(), u[8..].to_vec(), e, u)
    }

    /// L = Σ w·π and dL/dα by backward.
    fn loss_and_grad(alpha: &[f64], f: &impl Fn(Tr64) -> Tr64) -> (f64, Vec<f64>, Vec<f64>) {
        let x = Cpu::default().tensor_from_vec(alpha.to_vec(), (Batch(B), Comp(N)));
        let pi = f(x.leaky_trace());
        let values = pi.as_vec();
        let w: Vec<f64> = (0..values.len())
            .map(|i| (i % 5) as f64 * 0.4 - 0.7)
            .collect();
        let w = x.device().tensor_from_vec(w, *pi.shape());
        let l = (pi * w).sum();
        let value = l.array();
        (value, l.backward().get(&x).as_vec(), values)
    }

    /// Backward against central differences for every α > 0 (a dropped α gets gradient 0).
    fn check_gradient(f: impl Fn(Tr64) -> Tr64, rel: f64) {
        let (_, grad, _) = loss_and_grad(&ALPHA, &f);
        for (j, &a) in ALPHA.iter().enumerate() {
            if a <= 0.0 || !KEEP[j] {
                assert_eq!(grad[j], 0.0, "dropped α[{j}]");
                continue;
            }
            let h = 1e-5 * a;
            let mut at = ALPHA;
            at[j] = a + h;
            let up = loss_and_grad(&at, &f).0;
            at[j] = a - h;
            let down = loss_and_grad(&at, &f).0;
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - grad[j]).abs() <= 1e-7 + rel * fd.abs(),
                "α[{j}]: backward {} vs finite differences {fd}",
                grad[j]
            );
        }
    }

    #[test]
    fn v1_train_gradients_match_finite_differences() {
        check_gradient(
            |a| pi_v1_train(a, &KEEP, EPS[..8].to_vec(), U[..8].to_vec()),
            1e-6,
        );
        check_gradient(
            |a| gamma_v1_approx(a, &KEEP, EPS[..8].to_vec(), U[..8].to_vec()),
            1e-6,
        );
        check_gradient(|a| v1_kappa2(a, &KEEP), 1e-6);
    }

    /// The samples at fixed u move with α as the quantile does, so finite differences see the
    /// exact implicit gradient; backward uses torch's approximation (≤ 2e-3 relative).
    #[test]
    fn head_train_gradients_through_the_gamma_samples_match_finite_differences() {
        let draw = |a: &Tr64, u: &[f64]| -> Vec<f64> {
            a.as_vec()
                .iter()
                .zip(u)
                .map(|(&a, &u)| gamma_quantile(a, u))
                .collect()
        };
        check_gradient(
            |a| {
                let x = draw(&a, &U);
                pi_head_train(a.retaped(), &KEEP, gamma_from_samples(a, x))
            },
            2e-3,
        );
        check_gradient(
            |a| {
                let rho = gamma_from_samples(a.retaped(), draw(&a, &U[..8]));
                let sub = repeat_components(a.retaped(), 2) / 2.0;
                let x = draw(&sub, &U);
                pi_head_train_kappa(a, &KEEP, 2, rho, gamma_from_samples(sub, x))
            },
            2e-3,
        );
    }

    /// π is finite, sums to 1 over each row's kept entries (0 for an all-dropped row), is 0 where
    /// dropped, and so is its gradient, which is finite everywhere.
    fn check_simplex(pi: &[f64], grad: &[f64], dropped: impl Fn(usize) -> bool) {
        let per_row = pi.len() / B;
        for (r, row) in pi.chunks(per_row).enumerate() {
            let kept = (0..per_row).any(|i| !dropped(r * per_row + i));
            let sum: f64 = row.iter().sum();
            assert!(
                (sum - f64::from(u8::from(kept))).abs() < 1e-12,
                "row {r}: Σπ = {sum}"
            );
        }
        for (i, &p) in pi.iter().enumerate() {
            assert!(p.is_finite() && (!dropped(i) || p == 0.0), "π[{i}] = {p}");
        }
        assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
    }

    #[test]
    fn pi_is_a_distribution_over_the_kept_components_even_for_an_all_dropped_row() {
        // Row 1: α = 0 (dropped in v1) then padding.
        let alpha = [1.0, 0.3, 0.0, 2.0, 0.0, 0.5, 0.7, 0.2];
        let keep = [true, true, true, false, true, false, false, false];
        let v1_dropped = |i: usize| !keep[i % 8] || alpha[i % 8] <= 0.0;
        let run = |f: &dyn Fn(Tr64) -> Tr64| {
            let (_, grad, pi) = loss_and_grad(&alpha, &f);
            (pi, grad)
        };
        let (pi, g) = run(&|a| pi_v1_eval(a, &keep));
        check_simplex(&pi, &g, v1_dropped);
        let (pi, g) = run(&|a| pi_v1_train(a, &keep, EPS[..8].to_vec(), U[..8].to_vec()));
        check_simplex(&pi, &g, v1_dropped);
        let (pi, g) = run(&|a| v1_kappa2(a, &keep));
        // Entry k·Nl + i of row r is component i: index r·2N + k·N + i.
        check_simplex(&pi, &g, |i| v1_dropped((i / (2 * N)) * N + i % N));
        // HEAD (where α > 0 always): row 1 is all padding.
        let head_keep = [true, true, false, false, false, false, false, false];
        let (pi, g) = run(&|a| pi_head_eval(a, &head_keep));
        check_simplex(&pi, &g, |i| !head_keep[i] || alpha[i] <= 0.1);
        let samples = vec![0.8, 0.1, 0.3, 1.5, 0.2, 0.3, 0.4, 0.2];
        let (pi, g) = run(&|a| {
            let gamma = gamma_from_samples(a.retaped(), samples.clone());
            pi_head_train(a, &head_keep, gamma)
        });
        check_simplex(&pi, &g, |i| !head_keep[i]);
    }

    /// In f32 an inverse-CDF Gamma can be subnormal (here ≈ 1e-40): σ = γ/γ must still give
    /// finite gradients (exactly 0 for the lone copy), not ∞ − ∞.
    #[test]
    fn subnormal_gammas_keep_the_gradient_finite_in_f32() {
        let dev = Cpu::default();
        let alpha: Tensor<(Batch, Comp), f32, _> =
            dev.tensor_from_vec(vec![1.0, 0.05], (Batch(1), Comp(2)));
        let (e, u) = (vec![0.1f32, 0.0], vec![0.5f32, 0.0103]);
        let pi = pi_v1_train_kappa(
            alpha.leaky_trace(),
            &[true; 2],
            1,
            e.clone(),
            u.clone(),
            e,
            u,
        );
        let w = dev.tensor_from_vec(vec![0.3f32, -0.8], (Batch(1), Comp(2)));
        let values = pi.as_vec();
        assert!(values[1] > 0.0 && values[1] < 1e-38, "{values:?}");
        let grad = (pi * w).sum().backward().get(&alpha).as_vec();
        assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
    }
}
