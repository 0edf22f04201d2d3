//! The latent handed from bottleneck to decoder. Every latent is a mixture: a vector VAE's is
//! one Gaussian component, a Transformer memory is a mixture of impulses, NVIB's a
//! Dirichlet-process sample.

use dfdx::prelude::*;

use crate::axes::{Batch, Comp, Latent};
use crate::backend::{Backend, Traced};
use crate::plugin::KlTerm;

/// A (batch of) mixture latent(s).
pub struct Mixture<D: Backend> {
    /// What the decoder reads: a posterior sample in training, the mean in evaluation.
    /// Shape `(Batch, Comp, Latent)`.
    pub z: Traced<(Batch, Comp, Latent), D>,
    /// Component means, `(Batch, Comp, Latent)`.
    pub mean: Traced<(Batch, Comp, Latent), D>,
    /// Component log-variances, `(Batch, Comp, Latent)`; `None` for a deterministic latent.
    pub log_var: Option<Traced<(Batch, Comp, Latent), D>>,
    /// Which components exist, row-major `Batch × Comp`; `None` when all do.
    pub mask: Option<Vec<bool>>,
    /// Mixture weights π, `(Batch, Comp)`, summing to one over existing components; `None`
    /// when uniform.
    pub weights: Option<Traced<(Batch, Comp), D>>,
    /// Dirichlet pseudo-counts α, `(Batch, Comp)`, for nonparametric latents (NVIB).
    pub alpha: Option<Traced<(Batch, Comp), D>>,
    /// Statistics the bottleneck reports (e.g. NVIB's `avg_prop_vec`), logged by the trainer.
    pub stats: Vec<(&'static str, f64)>,
    /// KL terms the bottleneck computed itself, against a prior of its own (e.g. a Laplace
    /// bottleneck's KL to a standard Laplace); the model adds them to the prior's terms.
    pub kl: Vec<KlTerm<D>>,
}

impl<D: Backend> Mixture<D> {
    /// A Gaussian latent (one or more components with uniform weights), as a vector VAE's.
    pub fn gaussian(
        z: Traced<(Batch, Comp, Latent), D>,
        mean: Traced<(Batch, Comp, Latent), D>,
        log_var: Option<Traced<(Batch, Comp, Latent), D>>,
        mask: Option<Vec<bool>>,
    ) -> Self {
        Self {
            z,
            mean,
            log_var,
            mask,
            weights: None,
            alpha: None,
            stats: Vec::new(),
            kl: Vec::new(),
        }
    }

    /// The operations recorded on this latent's tensors. Consumers read the latent through
    /// [`Reuse::reuse`](crate::backend::Reuse) handles, which carry no history, so whoever
    /// owns the latent merges this tape into the loss; otherwise no gradient reaches the
    /// encoder or the bottleneck.
    pub fn into_tape(self) -> OwnedTape<f32, D> {
        let (_, mut tape) = self.z.split_tape();
        tape = tape.merge(self.mean.split_tape().1);
        if let Some(log_var) = self.log_var {
            tape = tape.merge(log_var.split_tape().1);
        }
        if let Some(weights) = self.weights {
            tape = tape.merge(weights.split_tape().1);
        }
        if let Some(alpha) = self.alpha {
            tape = tape.merge(alpha.split_tape().1);
        }
        tape
    }

    /// Which components exist, row-major `Batch × Comp` (all of them when there is no mask).
    pub fn keep(&self) -> Vec<bool> {
        let (batch, comps, _) = self.dims();
        self.mask
            .clone()
            .unwrap_or_else(|| vec![true; batch.0 * comps.0])
    }

    /// The mixture weights π, or weights uniform over each row's existing components when the
    /// latent has none.
    ///
    /// # Shapes
    /// → `(Batch, Comp)`
    pub fn weights_or_uniform(&self) -> Traced<(Batch, Comp), D> {
        if let Some(w) = &self.weights {
            return w.retaped();
        }
        let (batch, comps, _) = self.dims();
        let keep = self.keep();
        let mut w = vec![0.0; batch.0 * comps.0];
        for (w, keep) in w.chunks_mut(comps.0).zip(keep.chunks(comps.0)) {
            let n = keep.iter().filter(|&&k| k).count().max(1) as f32;
            for (x, &k) in w.iter_mut().zip(keep) {
                *x = if k { 1.0 / n } else { 0.0 };
            }
        }
        self.z
            .device()
            .tensor_from_vec(w, (batch, comps))
            .put_tape(OwnedTape::default())
    }

    /// Whether this is a vector latent: one component, uniform weights and no mask (what
    /// straight-line interpolation, traversals, active units and IS-NLL work on).
    pub fn is_vector(&self) -> bool {
        self.dims().1 .0 == 1 && self.weights.is_none() && self.mask.is_none()
    }

    /// The log-variances a prior's KL needs; a deterministic latent is an error naming `prior`.
    pub fn log_var_for_kl(&self, prior: &str) -> crate::Result<&Traced<(Batch, Comp, Latent), D>> {
        self.log_var.as_ref().ok_or_else(|| crate::Error::Config {
            plugin: prior.into(),
            message: "the KL needs a posterior variance; this bottleneck is deterministic".into(),
        })
    }

    /// Checks that `other` has as many rows and the same width, so that the two can be
    /// interpolated (their numbers of components may differ).
    pub fn check_interpolable(&self, other: &Self) -> crate::Result<()> {
        let ((ba, _, la), (bb, _, lb)) = (self.dims(), other.dims());
        if ba != bb || la != lb {
            return Err(crate::Error::Shape(format!(
                "cannot interpolate latents of batch {} × width {} and batch {} × width {}",
                ba.0, la.0, bb.0, lb.0
            )));
        }
        Ok(())
    }

    /// The `(Batch, Comp, Latent)` sizes.
    pub fn dims(&self) -> (Batch, Comp, Latent) {
        *self.z.shape()
    }
}
