//! Special functions dfdx lacks, on the host in f64 and as differentiable tensor ops:
//! `lgamma` (derivative digamma), `digamma` (derivative trigamma), `trigamma`.
//!
//! The tensor ops compute in f64 whatever the tensor's float type, as the official code does
//! for the Dirichlet KL, and record a hand-written backward on the tape.

use dfdx::prelude::*;
use vaezoo_core::custom_op::map_with_derivative;

use crate::num::{c, Dev, Real};

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error ≲ 1e-15), reflected for x < 0.5.
pub fn lgamma_f64(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x)Γ(1−x) = π / sin(πx)
        let s = (std::f64::consts::PI * x).sin().abs();
        return std::f64::consts::PI.ln() - s.ln() - lgamma_f64(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    let t = x + G + 0.5;
    for (i, &k) in COEF.iter().enumerate().skip(1) {
        a += k / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// ψ(x) = d/dx ln Γ(x): the recurrence up to x ≥ 10, then the asymptotic series (as torch).
pub fn digamma_f64(mut x: f64) -> f64 {
    if x == 0.0 {
        return f64::NEG_INFINITY.copysign(-x.signum());
    }
    if x < 0.0 {
        if x == x.floor() {
            return f64::NAN;
        }
        // ψ(1−x) − ψ(x) = π cot(πx)
        return digamma_f64(1.0 - x) - std::f64::consts::PI / (std::f64::consts::PI * x).tan();
    }
    let mut result = 0.0;
    while x < 10.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    let x2 = 1.0 / (x * x);
    // Bernoulli-number series: 1/12, 1/120, 1/252, 1/240, 1/132, 691/32760, 1/12
    let series = x2
        * (1.0 / 12.0
            - x2 * (1.0 / 120.0
                - x2 * (1.0 / 252.0
                    - x2 * (1.0 / 240.0
                        - x2 * (1.0 / 132.0 - x2 * (691.0 / 32760.0 - x2 / 12.0))))));
    result + x.ln() - 0.5 / x - series
}

/// ψ′(x), the derivative of digamma, for x > 0: recurrence to x ≥ 10, then the asymptotic series.
pub fn trigamma_f64(mut x: f64) -> f64 {
    if x <= 0.0 && x == x.floor() {
        return f64::NAN;
    }
    if x < 0.0 {
        // ψ′(1−x) + ψ′(x) = π² / sin²(πx)
        let s = (std::f64::consts::PI * x).sin();
        return std::f64::consts::PI.powi(2) / (s * s) - trigamma_f64(1.0 - x);
    }
    let mut result = 0.0;
    while x < 10.0 {
        result += 1.0 / (x * x);
        x += 1.0;
    }
    let x2 = 1.0 / (x * x);
    // 1/x + 1/(2x²) + Σ B₂ₖ / x^{2k+1}: 1/6, −1/30, 1/42, −1/30, 5/66, −691/2730, 7/6
    let series = 1.0 / x
        + x2 / 2.0
        + x2 / x
            * (1.0 / 6.0
                - x2 * (1.0 / 30.0
                    - x2 * (1.0 / 42.0
                        - x2 * (1.0 / 30.0
                            - x2 * (5.0 / 66.0 - x2 * (691.0 / 2730.0 - x2 * 7.0 / 6.0))))));
    result + series
}

/// ln Γ(x), element-wise, differentiable (d/dx = ψ(x)).
///
/// # Shapes
/// `S` → `S`
pub fn lgamma<S: Shape, E: Real, D: Dev<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    map_with_derivative(x, |v: E| {
        let v = v.to_f64().unwrap_or(f64::NAN);
        (c(lgamma_f64(v)), c(digamma_f64(v)))
    })
}

/// ψ(x), element-wise, differentiable (d/dx = ψ′(x)).
///
/// # Shapes
/// `S` → `S`
pub fn digamma<S: Shape, E: Real, D: Dev<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    map_with_derivative(x, |v: E| {
        let v = v.to_f64().unwrap_or(f64::NAN);
        (c(digamma_f64(v)), c(trigamma_f64(v)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lgamma_matches_known_values() {
        let cases = [
            (1.0, 0.0),
            (2.0, 0.0),
            (0.5, 0.5 * std::f64::consts::PI.ln()),
            (10.0, 362_880f64.ln()),
            (1e-3, 6.907_178_885_383_853),
            (30.5, 72.953_471_184_169_4),
            (-0.5, (2.0 * std::f64::consts::PI.sqrt()).ln()),
        ];
        for (x, want) in cases {
            let got = lgamma_f64(x);
            assert!(
                (got - want).abs() <= 1e-13 * want.abs().max(1.0),
                "lgamma({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn digamma_and_trigamma_match_known_values() {
        let euler = 0.577_215_664_901_532_9;
        for (x, want) in [
            (1.0, -euler),
            (0.5, -euler - 2.0 * 2f64.ln()),
            (10.0, 2.251_752_589_066_721),
            (1e-3, -1_000.575_571_931_81),
        ] {
            let got = digamma_f64(x);
            assert!(
                (got - want).abs() <= 1e-13 * want.abs().max(1.0),
                "digamma({x}) = {got}, want {want}"
            );
        }
        let pi2 = std::f64::consts::PI.powi(2);
        for (x, want) in [
            (1.0, pi2 / 6.0),
            (0.5, pi2 / 2.0),
            (10.0, 0.105_166_335_681_685_4),
            (0.1, 101.433_299_150_792_8),
        ] {
            let got = trigamma_f64(x);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "trigamma({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn derivatives_agree_with_finite_differences_of_the_host_functions() {
        for x in [0.05, 0.3, 0.9, 1.7, 4.2, 11.0, 55.0] {
            let h = 1e-5 * x;
            let fd = (lgamma_f64(x + h) - lgamma_f64(x - h)) / (2.0 * h);
            assert!(
                (fd - digamma_f64(x)).abs() <= 1e-7 * digamma_f64(x).abs().max(1.0),
                "ψ({x})"
            );
            let fd = (digamma_f64(x + h) - digamma_f64(x - h)) / (2.0 * h);
            assert!(
                (fd - trigamma_f64(x)).abs() <= 1e-6 * trigamma_f64(x).abs().max(1.0),
                "ψ′({x})"
            );
        }
    }

    #[test]
    fn tensor_ops_record_their_derivatives() {
        let dev = Cpu::default();
        let x: Tensor<Rank1<3>, f64, _> = dev.tensor([0.4, 1.3, 7.0]);
        let g = lgamma(x.leaky_trace()).sum().backward();
        let want: Vec<f64> = [0.4, 1.3, 7.0].iter().map(|&v| digamma_f64(v)).collect();
        assert_eq!(g.get(&x).as_vec(), want);
        let g = digamma(x.leaky_trace()).sum().backward();
        let want: Vec<f64> = [0.4, 1.3, 7.0].iter().map(|&v| trigamma_f64(v)).collect();
        assert_eq!(g.get(&x).as_vec(), want);
    }
}
