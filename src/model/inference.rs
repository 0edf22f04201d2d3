//! What evaluation and the latent tools ask of a model beside its training losses: the
//! posterior of a batch, the decoder's likelihood and mean for given latents, and the prior's
//! density. Every call goes through the plugin traits, so any plugin that implements them
//! (e.g. a conditional prior's `log_density`) is evaluated the same way.

use vaezoo_core::axes::{Batch, Comp, Feature, Latent};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::plugin::{Ctx, Observation};
use vaezoo_core::Backend;

use super::Model;
use crate::Result;

impl Model {
    /// The posterior latent of a batch: encoder then bottleneck (in `Mode::Eval` its `z` is
    /// the posterior mean).
    ///
    /// # Shapes
    /// `obs.x: (Batch, Feature)` → `(Batch, Comp, Latent)`
    pub fn posterior<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        obs: &Observation<D>,
    ) -> Result<Mixture<D>> {
        let states = D::encoder(&*self.encoder).forward(ctx, obs)?;
        Ok(D::bottleneck(&*self.bottleneck).forward(ctx, states)?)
    }

    /// −log p(x | z) per example, for the latents `latent.z` (and `obs.labels` for a
    /// conditional decoder), without gradient history.
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)`, `obs.x: (Batch, Feature)` → `(Batch,)`
    pub fn decode_nll<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        obs: &Observation<D>,
    ) -> Result<Tensor<(Batch,), f32, D>> {
        let nll = D::decoder(&*self.decoder).nll(ctx, latent, obs)?;
        Ok(nll.split_tape().0)
    }

    /// The mean of p(x | z) for the latents `latent.z`, given `labels` (one per row) for a
    /// conditional decoder.
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)` → `(Batch, Feature)`
    pub fn decode_mean<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
    ) -> Result<Tensor<(Batch, Feature), f32, D>> {
        Ok(D::decoder(&*self.decoder).mean(ctx, latent, labels)?)
    }

    /// log p(z) per example (given `labels` for a conditional prior), or `None` when the prior
    /// has no density (e.g. `none`).
    ///
    /// # Shapes
    /// `z: (Batch, Comp, Latent)` → `(Batch,)`
    pub fn prior_log_density<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        z: &Tensor<(Batch, Comp, Latent), f32, D>,
        labels: Option<&[usize]>,
    ) -> Option<Result<Tensor<(Batch,), f32, D>>> {
        D::prior(&*self.prior)
            .log_density(ctx, z, labels)
            .map(|r| r.map_err(Into::into))
    }

    /// Whether any of its plugins reads the class labels (a conditional model: every number
    /// it gives is conditional on the class).
    pub fn is_conditional<D: Backend>(&self) -> bool {
        D::encoder(&*self.encoder).reads_labels()
            || D::prior(&*self.prior).reads_labels()
            || D::decoder(&*self.decoder).reads_labels()
    }

    /// A vector latent (one component, no variance) holding `z`, as the decoder reads it.
    ///
    /// # Shapes
    /// `z: (Batch, Latent)` → `(Batch, Comp = 1, Latent)`
    pub fn point_latent<D: Backend>(z: Tensor<(Batch, Latent), f32, D>) -> Mixture<D> {
        let (batch, latent) = *z.shape();
        let z = z.reshape_like(&(batch, Comp(1), latent));
        let traced = z.put_tape(OwnedTape::default());
        Mixture::gaussian(traced.retaped(), traced, None, None)
    }

    /// Greedy token decoding of `latent` from `bos` for `steps` tokens per row, given `labels`
    /// for a conditional decoder (sequence decoders only).
    ///
    /// # Shapes
    /// `latent.z: (Batch, Comp, Latent)` → Batch × steps ids
    pub fn greedy<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        latent: &Mixture<D>,
        labels: Option<&[usize]>,
        bos: usize,
        steps: usize,
    ) -> Result<Vec<Vec<usize>>> {
        Ok(D::decoder(&*self.decoder).greedy(ctx, latent, labels, bos, steps)?)
    }

    /// `n` latents drawn from the prior with `comps` components each (the prior may mask some),
    /// given `labels` (one per row) for a conditional prior.
    ///
    /// # Shapes
    /// → `(n, comps, Latent)`
    pub fn prior_sample<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        n: usize,
        comps: usize,
        labels: Option<&[usize]>,
    ) -> Result<Mixture<D>> {
        let latent = Latent(self.latent_dim);
        Ok(D::prior(&*self.prior).sample(ctx, Batch(n), Comp(comps), latent, labels)?)
    }
}
