//! Standard Gamma(α, 1) sampling and its implicit reparameterisation gradient, as torch's
//! `Gamma.rsample` does them (spec §C): the sampler (Marsaglia–Tsang with the α < 1 boost), the
//! three-regime approximation of dx/dα = −(∂F/∂α)(x; α) / f(x; α) that torch backpropagates
//! (`standard_gamma_grad_one`, transcribed exactly and evaluated in f64 as torch's CPU kernel
//! does), and the differentiable tensor ops built on them.

use dfdx::prelude::*;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use vaezoo_core::custom_op::with_host_derivative;
use vaezoo_core::rng::HostRng;

use crate::num::{c, tiny, Dev, Real};
use crate::special::digamma_f64;

/// One draw of Gamma(α, 1): for α < 1 the draw of Gamma(α + 1) is scaled by (1 − U)^{1/α};
/// then Marsaglia–Tsang with d = α − 1/3, c = 1/√(9d). α = 0 gives 0; a negative or NaN α
/// gives NaN (torch rejects such α before sampling).
pub fn sample_gamma(alpha: f64, rng: &mut impl Rng) -> f64 {
    if alpha.is_nan() || alpha < 0.0 {
        return f64::NAN;
    }
    if alpha == 0.0 {
        return 0.0;
    }
    let (mut alpha, mut scale) = (alpha, 1.0);
    if alpha < 1.0 {
        scale *= (1.0 - rng.gen::<f64>()).powf(1.0 / alpha);
        alpha += 1.0;
    }
    let d = alpha - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let (x, y) = loop {
            let x: f64 = StandardNormal.sample(rng);
            let y = 1.0 + c * x;
            if y > 0.0 {
                break (x, y);
            }
        };
        let v = y * y * y;
        let u = 1.0 - rng.gen::<f64>();
        let xx = x * x;
        if u < 1.0 - 0.0331 * xx * xx || u.ln() < 0.5 * xx + d * (1.0 - v + v.ln()) {
            return scale * d * v;
        }
    }
}

/// Which of torch's approximations [`standard_gamma_grad`] uses at (α, x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GammaGradRegime {
    /// x < 0.8: a 6-term series for the CDF and its α-derivative.
    SmallX,
    /// α > 8 and 0.9α ≤ x ≤ 1.1α: the saddle-point polynomial.
    SaddlePointCentre,
    /// α > 8 elsewhere: Rice's saddle-point expansion.
    SaddlePoint,
    /// x ≥ 0.8, α ≤ 8: a bivariate rational approximation in ln(x/α) and ln α.
    Rational,
}

impl GammaGradRegime {
    /// The regime at (α, x). torch compares with float literals (0.8f, 0.9f, 1.1f), whose f32
    /// values are used here too.
    pub fn of(alpha: f64, x: f64) -> Self {
        if x < f64::from(0.8f32) {
            Self::SmallX
        } else if alpha > 8.0 {
            if f64::from(0.9f32) * alpha <= x && x <= f64::from(1.1f32) * alpha {
                Self::SaddlePointCentre
            } else {
                Self::SaddlePoint
            }
        } else {
            Self::Rational
        }
    }
}

/// Coefficients of the rational regime: `COEF[k][j]` multiplies ln(x/α)^k in c_j.
const COEF: [[f64; 8]; 3] = [
    [
        0.16009398,
        -0.094634809,
        0.025146376,
        -0.0030648343,
        1.0,
        0.32668115,
        0.10406089,
        0.0014179084,
    ],
    [
        0.53487893,
        0.1298071,
        0.065735949,
        -0.0015649758,
        0.16639465,
        0.020070113,
        -0.0035938915,
        -0.00058392623,
    ],
    [
        0.040121004,
        -0.0065914022,
        -0.0026286047,
        -0.0013441777,
        0.017050642,
        -0.0021309326,
        0.00085092367,
        -1.5247877e-07,
    ],
];

/// dx/dα for x ~ Gamma(α, 1), torch's approximation (`_standard_gamma_grad`) transcribed
/// operation by operation; 0 where the small-x series gives NaN (as torch).
pub fn standard_gamma_grad(alpha: f64, x: f64) -> f64 {
    match GammaGradRegime::of(alpha, x) {
        GammaGradRegime::SmallX => {
            let (mut numer, mut denom) = (1.0, alpha);
            let mut series1 = numer / denom;
            let mut series2 = numer / (denom * denom);
            for i in 1..=5 {
                numer *= -x / f64::from(i);
                denom += 1.0;
                series1 += numer / denom;
                series2 += numer / (denom * denom);
            }
            let pow_x_alpha = x.powf(alpha);
            let gamma_pdf = x.powf(alpha - 1.0) * (-x).exp();
            let gamma_cdf = pow_x_alpha * series1;
            let gamma_cdf_alpha = (x.ln() - digamma_f64(alpha)) * gamma_cdf - pow_x_alpha * series2;
            let result = -gamma_cdf_alpha / gamma_pdf;
            if result.is_nan() {
                0.0
            } else {
                result
            }
        }
        GammaGradRegime::SaddlePointCentre => {
            let numer_1 = 1.0 + 24.0 * alpha * (1.0 + 12.0 * alpha);
            let numer_2 = 1440.0 * (alpha * alpha) + 6.0 * x * (53.0 - 120.0 * x)
                - 65.0 * x * x / alpha
                + alpha * (107.0 + 3600.0 * x);
            let denom = 1244160.0 * (alpha * alpha) * (alpha * alpha);
            numer_1 * numer_2 / denom
        }
        GammaGradRegime::SaddlePoint => {
            let denom = (8.0 * alpha).sqrt();
            let term2 = denom / (alpha - x);
            let term3 = (x - alpha - alpha * (x / alpha).ln()).powf(-1.5);
            let term23 = if x < alpha {
                term2 - term3
            } else {
                term2 + term3
            };
            let term1 = (x / alpha).ln() * term23
                - (2.0 / alpha).sqrt() * (alpha + x) / ((alpha - x) * (alpha - x));
            let stirling = 1.0 + 1.0 / (12.0 * alpha) * (1.0 + 1.0 / (24.0 * alpha));
            let numer = x * term1;
            -stirling * numer / denom
        }
        GammaGradRegime::Rational => {
            let u = (x / alpha).ln();
            let v = alpha.ln();
            let cv: [f64; 8] =
                std::array::from_fn(|j| COEF[0][j] + u * (COEF[1][j] + u * COEF[2][j]));
            let p = cv[0] + v * (cv[1] + v * (cv[2] + v * cv[3]));
            let q = cv[4] + v * (cv[5] + v * (cv[6] + v * cv[7]));
            (p / q).exp()
        }
    }
}

/// Gamma(α, 1) samples as a differentiable function of α: the given raw `samples` (one per
/// element of `alpha`, logical order) clamped to ≥ the float type's tiny as torch's `rsample`
/// does; the backward multiplies by dx/dα = [`standard_gamma_grad`](α, raw sample).
///
/// # Shapes
/// `alpha: S`, `samples`: one per element of `alpha` → `S`
///
/// # Panics
/// If `samples` does not have one entry per element of `alpha`.
pub fn gamma_from_samples<S: Shape, E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<S, E, D, T>,
    samples: Vec<E>,
) -> Tensor<S, E, D, T> {
    let alphas = alpha.as_vec();
    assert_eq!(samples.len(), alphas.len(), "one Gamma sample per alpha");
    let (values, derivatives) = samples
        .iter()
        .zip(&alphas)
        .map(|(&x, &a)| {
            let (a64, x64) = (
                a.to_f64().unwrap_or(f64::NAN),
                x.to_f64().unwrap_or(f64::NAN),
            );
            (x.max(tiny()), c::<E>(standard_gamma_grad(a64, x64)))
        })
        .unzip();
    with_host_derivative(alpha, values, derivatives)
}

/// `Gamma(α, 1).rsample()`: one [`sample_gamma`] draw per element (in f64, then cast to `E`),
/// differentiable through [`gamma_from_samples`].
///
/// # Shapes
/// `alpha: S` → `S`
pub fn gamma_rsample<S: Shape, E: Real, D: Dev<E>, T: Tape<E, D>>(
    alpha: Tensor<S, E, D, T>,
    rng: &mut HostRng,
) -> Tensor<S, E, D, T> {
    let samples = alpha
        .as_vec()
        .into_iter()
        .map(|a| c(sample_gamma(a.to_f64().unwrap_or(f64::NAN), rng)))
        .collect();
    gamma_from_samples(alpha, samples)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::special::lgamma_f64;

    /// P(α, x), the regularised lower incomplete gamma function: its power series
    /// x^α e^{−x} Σₙ xⁿ/Γ(α+n+1), summed in log space (independent of the code under test).
    pub(crate) fn reg_lower_gamma(alpha: f64, x: f64) -> f64 {
        let (mut sum, mut n) = (0.0, 0.0);
        loop {
            let term = ((alpha + n) * x.ln() - x - lgamma_f64(alpha + n + 1.0)).exp();
            sum += term;
            n += 1.0;
            if n > x && term <= 1e-18 * sum {
                return sum;
            }
        }
    }

    /// The Gamma(α, 1) quantile at u, by bisection on ln x (so that dx/dα at fixed u, the
    /// implicit reparameterisation gradient, can be taken by finite differences).
    pub(crate) fn gamma_quantile(alpha: f64, u: f64) -> f64 {
        let (mut lo, mut hi) = (-700.0_f64, 7.0_f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if reg_lower_gamma(alpha, mid.exp()) < u {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (0.5 * (lo + hi)).exp()
    }

    /// The exact implicit gradient −(∂P/∂α)/p, with ∂P/∂α by a 5-point central difference.
    fn exact_grad(alpha: f64, x: f64) -> f64 {
        let h = 1e-3 * alpha;
        let p = |a: f64| reg_lower_gamma(a, x);
        let dp = (p(alpha - 2.0 * h) - 8.0 * p(alpha - h) + 8.0 * p(alpha + h)
            - p(alpha + 2.0 * h))
            / (12.0 * h);
        let pdf = ((alpha - 1.0) * x.ln() - x - lgamma_f64(alpha)).exp();
        -dp / pdf
    }

    #[test]
    fn torch_approximation_is_within_the_exact_tolerance_in_every_regime() {
        let grid = [
            (0.5, 0.3),
            (0.5, 1.2),
            (1.0, 2.0),
            (2.0, 0.7),
            (3.0, 5.0),
            (6.0, 4.0),
            (12.0, 12.5),
            (12.0, 6.0),
            (30.0, 40.0),
            (0.05, 1e-6),
            (0.3, 0.05),
            (2.5, 1.0),
            (5.0, 7.0),
            (9.0, 4.0),
            (20.0, 15.0),
            (50.0, 55.0),
        ];
        let mut seen = Vec::new();
        for (a, x) in grid {
            seen.push(GammaGradRegime::of(a, x));
            let (got, want) = (standard_gamma_grad(a, x), exact_grad(a, x));
            assert!(
                (got - want).abs() <= 2e-3 * want.abs(),
                "α = {a}, x = {x}: {got} vs exact {want}"
            );
        }
        for r in [
            GammaGradRegime::SmallX,
            GammaGradRegime::SaddlePointCentre,
            GammaGradRegime::SaddlePoint,
            GammaGradRegime::Rational,
        ] {
            assert!(seen.contains(&r), "{r:?} not covered");
        }
    }

    #[test]
    fn the_small_x_series_returns_zero_instead_of_nan() {
        assert_eq!(standard_gamma_grad(0.5, 0.0), 0.0);
    }

    #[test]
    fn samples_have_the_gamma_mean_and_variance() {
        let mut rng = vaezoo_core::rng::seeded(7);
        let n = 20_000;
        for alpha in [0.3, 1.0, 5.0] {
            let xs: Vec<f64> = (0..n).map(|_| sample_gamma(alpha, &mut rng)).collect();
            assert!(xs.iter().all(|&x| x >= 0.0 && x.is_finite()));
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            // Var(x) = α; the sample variance's variance ≈ (μ₄ − σ⁴)/n = (2α² + 6α)/n.
            let se_mean = (alpha / n as f64).sqrt();
            let se_var = ((2.0 * alpha * alpha + 6.0 * alpha) / n as f64).sqrt();
            assert!(
                (mean - alpha).abs() < 5.0 * se_mean,
                "α = {alpha}: mean {mean}"
            );
            assert!((var - alpha).abs() < 5.0 * se_var, "α = {alpha}: var {var}");
        }
        assert_eq!(sample_gamma(0.0, &mut rng), 0.0);
        assert!(sample_gamma(-1.0, &mut rng).is_nan());
    }

    #[test]
    fn rsample_clamps_the_value_and_backpropagates_the_implicit_gradient() {
        let dev = Cpu::default();
        let alpha: Tensor<Rank1<3>, f64, _> = dev.tensor([0.05, 1.5, 9.0]);
        let raw = vec![0.0, 0.8, 10.0];
        let x = gamma_from_samples(alpha.leaky_trace(), raw.clone());
        assert_eq!(x.as_vec(), vec![f64::MIN_POSITIVE, 0.8, 10.0]);
        let g = (x * 2.0).sum().backward();
        let want: Vec<f64> = [0.05, 1.5, 9.0]
            .iter()
            .zip(&raw)
            .map(|(&a, &x)| 2.0 * standard_gamma_grad(a, x))
            .collect();
        assert_eq!(g.get(&alpha).as_vec(), want);

        let mut rng = vaezoo_core::rng::seeded(3);
        let a32: Tensor<Rank1<2>, f32, _> = dev.tensor([0.5, 4.0]);
        let x = gamma_rsample(a32.leaky_trace(), &mut rng);
        assert!(x.as_vec().iter().all(|&v| v > 0.0));
        let g = x.sum().backward();
        assert!(g.get(&a32).as_vec().iter().all(|&d| d > 0.0));
    }
}
