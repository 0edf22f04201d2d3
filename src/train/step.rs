//! One optimiser step, as `vaezoo train` runs it and the benchmarks time it: the losses in
//! training mode, the objective, backward, the gradients read out and clipped, and Adam.

use vaezoo_core::custom_op::take_backward_failure;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::optim::{clip_global_norm, global_norm, Adam};
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Observation, Progress};
use vaezoo_core::rng::HostRng;
use vaezoo_core::spec::TrainingSpec;
use vaezoo_core::Backend;

use crate::model::{Model, Objective};
use crate::Result;

/// Empties the device's buffer cache before a step when batch shapes vary (text).
///
/// dfdx reuses a cached buffer only for a tensor of the same size, which another batch shape
/// rarely asks for: the cache would mostly hold memory, while glibc keeps freed memory for reuse
/// anyway (see `device::cpu`). Emptied before every step instead of every 4th, the peak RSS of
/// `nvae_text_train` (2 threads) fell from 1.8 to 0.92-0.97 GB at the same step time, and
/// `nvae_text_train_wiki` took 605-647 instead of 749-869 ms a step.
pub fn empty_cache_between_steps<D: Backend>(dev: &D, shapes_vary: bool) {
    if shapes_vary {
        dev.empty_cache();
    }
}

/// What one optimiser step changes: the model's weights, Adam, the generator, and the gradient
/// buffers it reuses from step to step (one per parameter).
pub struct StepState<'a, D: Backend> {
    /// The built plugins.
    pub model: &'a Model,
    /// The weights.
    pub params: &'a mut ParamStore<D>,
    /// The optimiser.
    pub adam: &'a mut Adam,
    /// The generator of training noise (dropout, sampling).
    pub rng: &'a mut HostRng,
    /// The gradients, one buffer per parameter (empty at first).
    pub grads: &'a mut [Vec<f32>],
}

/// One step's objective (its `loss` now a tape-less handle: the backward pass used the taped
/// one) and the gradients' global norm before clipping.
pub struct StepOutcome<D: Backend> {
    /// The objective at this step.
    pub objective: Objective<D>,
    /// The gradients' global norm before clipping.
    pub grad_norm: f32,
}

impl<D: Backend> StepState<'_, D> {
    /// One step of the trainer on the batch `obs` (the benchmarks time exactly this): the
    /// losses in training mode, the objective at `progress`, backward, the gradients read out,
    /// clipped to `training`'s global norm (if any), and Adam; on the CPU with rayon's
    /// workers awake throughout ([`crate::device::with_pool_awake`]).
    pub fn step(
        &mut self,
        training: &TrainingSpec,
        obs: &Observation<D>,
        progress: Progress,
    ) -> Result<StepOutcome<D>> {
        crate::device::with_pool_awake::<D, _>(|| self.step_inner(training, obs, progress))
    }

    fn step_inner(
        &mut self,
        training: &TrainingSpec,
        obs: &Observation<D>,
        progress: Progress,
    ) -> Result<StepOutcome<D>> {
        let mut ctx = Ctx {
            params: self.params,
            mode: Mode::Train,
            rng: self.rng,
        };
        let losses = self.model.losses(&mut ctx, obs)?;
        let mut objective = self.model.objective(losses, training, progress)?;
        let untaped = objective.loss.retaped();
        let loss = std::mem::replace(&mut objective.loss, untaped);
        let mut g = loss.backward();
        if let Some(e) = take_backward_failure() {
            return Err(e.into());
        }
        self.params.gradients_into(&mut g, self.grads);
        drop(g);
        let grad_norm = match training.grad_clip_norm {
            Some(max) => clip_global_norm(self.grads, max),
            None => global_norm(self.grads),
        };
        self.adam.step(self.params, self.grads);
        Ok(StepOutcome {
            objective,
            grad_norm,
        })
    }
}
