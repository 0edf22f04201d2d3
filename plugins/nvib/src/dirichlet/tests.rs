//! Unit tests of `dirichlet`: values, finite-difference gradients, dropped components.

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

/// With κ = 2 a component's copies can be subnormal Gammas, or one subnormal and one that
/// underflows to 0 (a small α/κ draws (u·Γ(a + 1))^{1/a}): the copies' normaliser D is then
/// subnormal and (g − Σgπ)/D overflows. That must not reach α as ∞ · 0 or ∞ (then NaN after
/// clipping), as it did in an official-scale NVAE run with κ = 2 after about 200 steps.
#[test]
fn subnormal_copies_keep_the_gradient_finite_in_f32() {
    let dev = Cpu::default();
    let alpha: Tensor<(Batch, Comp), f32, _> =
        dev.tensor_from_vec(vec![1.0, 0.1], (Batch(1), Comp(2)));
    let w = dev.tensor_from_vec(vec![0.3f32, -0.8, 0.5, 0.9], (Batch(1), Comp(4)));
    // Copy k of component i at k·2 + i; component 1's copies: u = 0.0062 gives γ ≈ 4e-45,
    // 0.0061 about 3e-45, 1e-6 an underflow to 0.
    for (u1, u3, zero_copy) in [(0.0062f32, 1e-6f32, true), (0.0062, 0.0061, false)] {
        let (e_rho, u_rho) = (vec![0.1f32, 0.0], vec![0.5f32, 0.5]);
        let (e_sub, u_sub) = (vec![0.1f32, 0.0, 0.2, 0.0], vec![0.5f32, u1, 0.6, u3]);
        let pi = pi_v1_train_kappa(
            alpha.leaky_trace(),
            &[true; 2],
            2,
            e_rho,
            u_rho,
            e_sub,
            u_sub,
        );
        let values = pi.as_vec();
        assert!(
            values[1] > 0.0 && (values[3] == 0.0) == zero_copy,
            "{values:?}"
        );
        let grad = (pi * w.clone()).sum().backward().get(&alpha).as_vec();
        assert!(grad.iter().all(|g| g.is_finite()), "u {u1}, {u3}: {grad:?}");
    }
}

/// κ = 1 skips the sub-Dirichlet (σ = γ/γ); values and gradients are those of the general
/// composition, in f64 and in f32, with a sub-Gamma that underflows to 0 (tiny α, tiny u).
#[test]
fn kappa_one_equals_the_general_composition() {
    fn both<E: Real>(alpha: &[E], u_sub: &[E]) -> [(Vec<E>, Vec<E>); 2]
    where
        Cpu: Dev<E>,
    {
        let dev = Cpu::default();
        let x = dev.tensor_from_vec(alpha.to_vec(), (Batch(B), Comp(N)));
        let noise = |v: &[f64]| v.iter().map(|&x| c::<E>(x)).collect::<Vec<E>>();
        let (e, u) = (noise(&EPS[..8]), noise(&U[..8]));
        let w: Vec<E> = (0..B * N).map(|i| c((i % 3) as f64 - 0.8)).collect();
        let run = |general: bool| {
            let a = x.leaky_trace();
            let pi = if general {
                let rho = pi_v1_train(a.retaped(), &KEEP, e.clone(), u.clone());
                let sub = gamma_v1_approx(a, &KEEP, e.clone(), u_sub.to_vec());
                rho * normalise_copies(sub, 1, Offset::IfEmpty)
            } else {
                pi_v1_train_kappa(a, &KEEP, 1, e.clone(), u.clone(), e.clone(), u_sub.to_vec())
            };
            let values = pi.as_vec();
            let l = (pi * dev.tensor_from_vec(w.clone(), (Batch(B), Comp(N)))).sum();
            (values, l.backward().get(&x).as_vec())
        };
        [run(true), run(false)]
    }
    let mut u_sub = U[8..].to_vec();
    u_sub[3] = 1e-30; // α = 0.05: exp((ln u + ln a + lnΓ(a))/a) underflows
    let [general, short] = both::<f64>(&ALPHA, &u_sub);
    assert_eq!(general, short);
    let (alpha32, u32): (Vec<f32>, Vec<f32>) = (
        ALPHA.iter().map(|&a| a as f32).collect(),
        u_sub.iter().map(|&u| (u as f32).max(1e-30)).collect(),
    );
    let [general, short] = both::<f32>(&alpha32, &u32);
    assert_eq!(general, short);
    assert_eq!(short.0[3], 0.0, "the underflowed component");
}
