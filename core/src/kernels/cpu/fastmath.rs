//! A branch-free `exp` that the compiler vectorises inside the kernels' loops (a call to libm's
//! `expf` keeps every loop around it scalar): Cody–Waite range reduction and Cephes' degree-6
//! polynomial, within 2 ulp of `f32::exp` over the normal range.

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

#[cfg(test)]
mod tests {
    use super::*;

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
