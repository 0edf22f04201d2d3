//! The importance-sampled negative log-likelihood, as the PyTorch reference computes it
//! (`/shared/reference/vae_family.py`): for each example, K samples z_k = μ + σ ε_k of the
//! Gaussian posterior q(z | x) and
//!
//! ```text
//! log w_k = log p(x | z_k) + log p(z_k) − log q(z_k | x)
//! IS-NLL  = −(logsumexp_k log w_k − log K)
//! ```
//!
//! For a conditional model the labels reach the decoder and the prior, so this is
//! −log p(x | c). The K × B rows of a batch are decoded in chunks of at most `chunk_rows`
//! rows (a chunk may split one example's K samples), and the log-sum-exp runs in f64.

use indicatif::ProgressBar;
use vaezoo_core::axes::{Batch, Comp, Feature, Latent};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::plugin::{Ctx, Observation};
use vaezoo_core::rng::normal_vec;
use vaezoo_core::Backend;

use crate::model::Model;
use crate::Result;

/// Rows per decoder call in `vaezoo eval`: bounds memory (about 50 MB per 784-feature tensor)
/// while keeping the matrix products large.
pub const CHUNK_ROWS: usize = 16_384;

/// A batch of examples on the host: features, labels and their Gaussian posterior.
pub struct PosteriorBatch<'a> {
    /// `rows × features` values in [0, 1], row-major.
    pub x: &'a [f32],
    /// One label per example, when the data has them.
    pub labels: Option<&'a [usize]>,
    /// Posterior means, `rows × latent`.
    pub mean: &'a [f32],
    /// Posterior log-variances, `rows × latent`.
    pub log_var: &'a [f32],
    /// The latent size.
    pub latent: usize,
}

impl PosteriorBatch<'_> {
    /// Examples in the batch.
    pub fn len(&self) -> usize {
        self.mean.len() / self.latent.max(1)
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }
}

/// log w for `k` posterior samples of every example of `batch`, example-major (`B × K`,
/// sample j of example i at `i * k + j`), or `None` when the prior has no density.
///
/// The noise ε is drawn from `ctx.rng` in the same order: `B × K × latent` standard normals,
/// row-major. `progress` advances by one per example whose last sample is done.
pub fn log_weights<D: Backend>(
    model: &Model,
    ctx: &mut Ctx<D>,
    batch: &PosteriorBatch,
    k: usize,
    chunk_rows: usize,
    progress: &ProgressBar,
) -> Result<Option<Vec<f64>>> {
    let (n, l) = (batch.len(), batch.latent);
    let features = batch.x.len() / n.max(1);
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let rows = n * k;
    let mut out = Vec::with_capacity(rows);
    let chunk_rows = chunk_rows.max(1);
    for start in (0..rows).step_by(chunk_rows) {
        let end = (start + chunk_rows).min(rows);
        let m = end - start;
        let eps = normal_vec(ctx.rng, m * l);
        let mut z = Vec::with_capacity(m * l);
        let mut x = Vec::with_capacity(m * features);
        let mut labels = batch.labels.map(|_| Vec::with_capacity(m));
        let mut log_q = Vec::with_capacity(m);
        for (row, eps) in (start..end).zip(eps.chunks_exact(l)) {
            let i = row / k;
            let (mu, lv) = (
                &batch.mean[i * l..(i + 1) * l],
                &batch.log_var[i * l..(i + 1) * l],
            );
            let mut lq = 0.0;
            for ((&mu, &lv), &e) in mu.iter().zip(lv).zip(eps) {
                z.push(mu + (0.5 * lv).exp() * e);
                // (z − μ)² / σ² is ε² exactly.
                lq -= 0.5 * (ln_2pi + f64::from(lv) + f64::from(e) * f64::from(e));
            }
            log_q.push(lq);
            x.extend_from_slice(&batch.x[i * features..(i + 1) * features]);
            if let (Some(out), Some(all)) = (labels.as_mut(), batch.labels) {
                out.push(all[i]);
            }
        }
        let dev = ctx.dev().clone();
        let z = dev.tensor_from_vec(z, (Batch(m), Comp(1), Latent(l)));
        let Some(log_p) = model.prior_log_density(ctx, &z, labels.as_deref()) else {
            return Ok(None);
        };
        let log_p = log_p?.as_vec();
        let obs = Observation {
            x: dev.tensor_from_vec(x, (Batch(m), Feature(features))),
            labels,
            tokens: None,
        };
        let latent = Model::point_latent(z.reshape_like(&(Batch(m), Latent(l))));
        let nll = model.decode_nll(ctx, &latent, &obs)?.as_vec();
        for ((nll, log_p), log_q) in nll.into_iter().zip(log_p).zip(log_q) {
            out.push(-f64::from(nll) + f64::from(log_p) - log_q);
        }
        progress.set_position(progress.position() + (end / k - start / k) as u64);
    }
    Ok(Some(out))
}

/// −(logsumexp(log w) − log K) for one example's K log-weights, in f64.
pub fn neg_log_mean_exp(log_w: &[f64]) -> f64 {
    let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return -max;
    }
    let sum: f64 = log_w.iter().map(|w| (w - max).exp()).sum();
    -(max + sum.ln() - (log_w.len() as f64).ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neg_log_mean_exp_is_stable_and_exact() {
        assert!((neg_log_mean_exp(&[-3.0]) - 3.0).abs() < 1e-12);
        // Two equal weights: the mean is the weight.
        assert!((neg_log_mean_exp(&[-1000.0, -1000.0]) - 1000.0).abs() < 1e-9);
        // log((e^0 + e^-1) / 2), computed directly.
        let want = -((1.0 + (-1.0f64).exp()) / 2.0).ln();
        assert!((neg_log_mean_exp(&[0.0, -1.0]) - want).abs() < 1e-12);
    }
}
