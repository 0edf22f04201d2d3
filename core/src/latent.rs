//! The latent handed from bottleneck to decoder. Every latent is a mixture: a vector VAE's is
//! one Gaussian component, a Transformer memory is a mixture of impulses, NVIB's a
//! Dirichlet-process sample.

use dfdx::prelude::*;

use crate::axes::{Batch, Comp, Latent};
use crate::backend::{Backend, Traced};

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
}

impl<D: Backend> Mixture<D> {
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
        tape
    }

    /// The `(Batch, Comp, Latent)` sizes.
    pub fn dims(&self) -> (Batch, Comp, Latent) {
        *self.z.shape()
    }
}
