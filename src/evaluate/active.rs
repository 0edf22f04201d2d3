//! Active units (Burda et al., 2016): latent dimensions whose posterior mean varies over the
//! test set, Var_x E_q[z_j | x] > 0.01.

/// A dimension is active when the variance of its posterior mean exceeds this.
pub const ACTIVE_THRESHOLD: f64 = 0.01;

/// Per latent dimension, the variance over the rows of `means` (`n × latent`, row-major).
///
/// It is the unbiased (n − 1) variance, to match the reference exactly: it computes
/// `mu.var(0)`, and torch's `var` defaults to the unbiased estimator. With fewer than two rows
/// the variance is NaN (as torch's), and no dimension is active.
pub fn mean_variances(means: &[f32], latent: usize) -> Vec<f64> {
    let n = means.len() / latent.max(1);
    let mut sum = vec![0.0f64; latent];
    for row in means.chunks_exact(latent) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let mut sq = vec![0.0f64; latent];
    for row in means.chunks_exact(latent) {
        for ((s, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    sq.into_iter().map(|s| s / (n as f64 - 1.0)).collect()
}

/// How many of `variances` exceed [`ACTIVE_THRESHOLD`].
pub fn active_units(variances: &[f64]) -> usize {
    variances.iter().filter(|&&v| v > ACTIVE_THRESHOLD).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variances_are_unbiased_and_thresholded() {
        // Dimension 0: 0, 0.2, 0.1 → mean 0.1, Σ(dev²) = 0.02, unbiased 0.01 (not active);
        // dimension 1: 1, 3, 2 → variance 1 (active).
        let means = [0.0, 1.0, 0.2, 3.0, 0.1, 2.0];
        let v = mean_variances(&means, 2);
        assert!(
            (v[0] - 0.01).abs() < 1e-8 && (v[1] - 1.0).abs() < 1e-12,
            "{v:?}"
        );
        assert_eq!(active_units(&[0.0101, 0.0099, 1.0]), 2);
        assert_eq!(active_units(&mean_variances(&[1.0, 2.0], 2)), 0);
    }
}
