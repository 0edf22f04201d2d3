//! Branch-free `exp` and `ln` that the compiler vectorises inside the kernels' loops (a call to
//! libm's `expf` or `logf` keeps every loop around it scalar): Cody–Waite range reduction and
//! Cephes' polynomials, within 2 ulp of `f32::exp` and `f32::ln` over the normal range.

/// log₂ e.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts, the first exact in a few bits (Cody–Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// Above this e^x overflows f32.
const OVERFLOW: f32 = 88.722_83;
/// Below this e^x is under 2⁻¹²⁵ and returned as 0 (no subnormal results).
const UNDERFLOW: f32 = -86.9;

/// e^x, within 2 ulp of `f32::exp` where that is at least 2⁻¹²⁵; 0 below, ∞ above 88.72, NaN
/// for NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Selects, not branches (NaN passes through), so that loops around this vectorise.
    let clamped = if x < UNDERFLOW { UNDERFLOW } else { x };
    let clamped = if clamped > OVERFLOW {
        OVERFLOW
    } else {
        clamped
    };
    let t = clamped * LOG2E + ROUND;
    let n = t - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let poly = p * (r * r) + r + 1.0;
    // 2^(n − 1) from the integer in t's low bits (n ≥ −125 here), times 2.
    let half_scale = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 126) as u32) << 23);
    let y = poly * half_scale * 2.0;
    let y = if x > OVERFLOW { f32::INFINITY } else { y };
    if x < UNDERFLOW {
        0.0
    } else {
        y
    }
}

/// √½: mantissas below it are doubled so that the polynomial's argument stays in [√½ − 1, √2 − 1).
const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// ln x for a positive normal `x` (the kernels call it on values ≥ 1), within 2 ulp of
/// `f32::ln`; other inputs give unspecified finite results.
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    // x = m·2^e with m in [½, 1), then m in [√½, √2) and f = m − 1.
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let (e, f) = if m < SQRT_HALF {
        ((e - 1) as f32, m + m - 1.0)
    } else {
        (e as f32, m - 1.0)
    };
    let z = f * f;
    // Cephes' minimax polynomial for (ln(1 + f) − f + f²/2) / f³, highest degree first.
    let p = [
        7.037_683_6e-2,
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ]
    .iter()
    .fold(0.0, |acc, &c| acc * f + c);
    let y = p * f * z + e * LN2_LO - 0.5 * z;
    f + y + e * LN2_HI
}

/// Independent partial results of a reduction ([`log_sum_exp`], the Bernoulli NLL's row sums):
/// enough for the compiler to keep a vector register of them (a single running max or sum is a
/// serial chain that does not vectorise).
pub(crate) const LANES: usize = 16;

/// ln Σ e^x over `row` (−∞ for an empty row or one of −∞ only), computed stably around the
/// row's maximum, in vectorisable passes over [`LANES`] partial maxima and sums.
pub(crate) fn log_sum_exp(row: &[f32]) -> f32 {
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut maxima = [f32::NEG_INFINITY; LANES];
    for chunk in chunks.clone() {
        for (m, &x) in maxima.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = maxima
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    if max == f32::NEG_INFINITY {
        return max;
    }
    let mut sums = [0.0f32; LANES];
    for chunk in chunks {
        for (s, &x) in sums.iter_mut().zip(chunk) {
            *s += exp(x - max);
        }
    }
    let sum = sums.iter().sum::<f32>() + tail.iter().map(|&x| exp(x - max)).sum::<f32>();
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f32;
        let mut check = |x: f32| {
            let (got, want) = (ln(x), x.ln());
            let ulp = (f32::from_bits(want.abs().to_bits() + 1) - want.abs()).max(f32::EPSILON);
            worst = worst.max((got - want).abs() / ulp);
        };
        // Dense over [1, 2] (where the kernels call it), then across the normal range.
        for i in 0..=2_000_000 {
            check(1.0 + i as f32 / 2_000_000.0);
        }
        for i in 0..=2_000_000 {
            check(2f32.powf(-125.0 + 250.0 * i as f32 / 2_000_000.0));
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f32;
        for i in 0..=2_000_000 {
            let x = -86.0 + 174.7 * i as f32 / 2_000_000.0;
            let (got, want) = (exp(x), x.exp());
            let ulp = f32::from_bits(want.to_bits() + 1) - want;
            worst = worst.max((got - want).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} ulp");
    }

    #[test]
    fn log_sum_exp_matches_the_direct_sum() {
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
        for n in [1, 5, 16, 17, 100, 8000] {
            let row: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 20.0).collect();
            let want = row.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln();
            let got = f64::from(log_sum_exp(&row));
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{n}: {got} vs {want}"
            );
        }
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 20]), f32::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[1000.0, f32::NEG_INFINITY]), 1000.0);
    }

    #[test]
    fn exp_handles_the_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(88.7).is_finite() && exp(88.7) > 3.0e38);
    }
}
