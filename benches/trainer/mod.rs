//! A training run as `vaezoo train` starts it, stepped by the trainer's own step
//! ([`vaezoo::train::StepState::step`]), for the training benchmarks.

use vaezoo::device::cpu;
use vaezoo::model::Model;
use vaezoo::train::{empty_cache_between_steps, StepState};
use vaezoo::Result;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::optim::Adam;
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Observation, Progress};
use vaezoo_core::registry::DataDims;
use vaezoo_core::rng::{seeded, HostRng};
use vaezoo_core::spec::Spec;

/// A spec's model with its weights, Adam and generator, on the CPU.
pub struct Job {
    /// The spec it was built from.
    pub spec: Spec,
    /// The built plugins.
    pub model: Model,
    /// The weights.
    pub params: ParamStore<Cpu>,
    /// The generator of initialisation and training noise (dropout, sampling).
    pub rng: HostRng,
    adam: Adam,
    grads: Vec<Vec<f32>>,
    step: u64,
}

impl Job {
    /// As `vaezoo train` starts a run: the spec's plugins built through the registry for data
    /// of sizes `dims` and initialised from the spec's seed, Adam with the spec's settings, on
    /// the CPU with dfdx's buffer cache on.
    pub fn new(spec: Spec, dims: DataDims) -> Result<Self> {
        let mut rng = seeded(spec.training.seed);
        let (model, init) = Model::build(vaezoo::registry()?, &spec, dims, &mut rng)?;
        let params = ParamStore::new(&cpu(), init);
        let adam = Adam::new(spec.training.optimizer.clone(), &params);
        let grads = vec![Vec::new(); params.len()];
        Ok(Self {
            spec,
            model,
            params,
            rng,
            adam,
            grads,
            step: 0,
        })
    }

    /// One step of the trainer's loop, of `total_steps`: for data whose batch shapes vary
    /// (`shapes_vary`: text), the buffer cache emptied before every step; the
    /// batch `obs(device)`; the losses in training mode, the objective, backward, the
    /// gradients read out, clipped to the spec's global norm (if any), and Adam. Returns the
    /// loss.
    pub fn step(
        &mut self,
        shapes_vary: bool,
        total_steps: u64,
        obs: impl FnOnce(&Cpu) -> Result<Observation<Cpu>>,
    ) -> Result<f32> {
        empty_cache_between_steps(self.params.device(), shapes_vary);
        let obs = obs(self.params.device())?;
        let progress = Progress {
            step: self.step,
            total_steps,
            epochs: self.spec.training.epochs,
        };
        let mut state = StepState {
            model: &self.model,
            params: &mut self.params,
            adam: &mut self.adam,
            rng: &mut self.rng,
            grads: &mut self.grads,
        };
        let outcome = state.step(&self.spec.training, &obs, progress)?;
        self.step += 1;
        Ok(outcome.objective.value)
    }
}
