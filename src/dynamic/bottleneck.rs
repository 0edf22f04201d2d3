//! A loaded plugin as a [`Bottleneck`] on any device: its forward runs on host copies of the
//! states and parameters, and its VJP is a custom op on the host's tape (DESIGN.md's recipe:
//! split the inputs' tapes, make the outputs, register one backward op, put the tape on `z`).

use std::sync::Arc;

use rand::RngCore;
use serde_json::Value;
use vaezoo_core::axes::{Comp, Latent};
use vaezoo_core::custom_op::record_backward_failure;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamInit};
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates, KlTerm};
use vaezoo_core::registry::BuiltBottleneck;
use vaezoo_core::{Backend, Result};

use super::instance::{Inputs, Outputs, PluginInstance};
use super::library::PluginLibrary;

/// A bottleneck implemented by a plugin library.
pub struct LoadedBottleneck {
    instance: Arc<PluginInstance>,
    params: Vec<ParamId>,
}

/// Creates an instance of `library`'s bottleneck and declares its parameters on the host
/// (drawn from the host's generator, in the plugin's order).
pub fn build(
    library: &'static PluginLibrary,
    config: &Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let instance = PluginInstance::create(library, config, model_dim)?;
    let ids = instance
        .params
        .iter()
        .map(|p| match p.init {
            ParamInit::Uniform { low, high } => params.uniform_range(&p.name, &p.shape, low, high),
            ParamInit::Normal { mean, std } => {
                params.normal_with_mean(&p.name, &p.shape, mean, std)
            }
            ParamInit::Constant(c) => params.constant(&p.name, &p.shape, c),
            ParamInit::Given => unreachable!("the ABI has no init kind for given values"),
        })
        .collect();
    Ok(BuiltBottleneck {
        latent_dim: instance.latent_dim,
        shared: Default::default(),
        module: Box::new(LoadedBottleneck {
            instance: Arc::new(instance),
            params: ids,
        }),
    })
}

impl<D: Backend> Bottleneck<D> for LoadedBottleneck {
    /// # Shapes
    /// `states: (Batch, Seq, Model)` → latent `(Batch, Comp = Seq, Latent)`
    fn forward(&self, ctx: &mut Ctx<D>, input: EncoderStates<D>) -> Result<Mixture<D>> {
        let seed = ctx.rng.next_u64();
        let shape = *input.states.shape();
        let (batch, seq, model) = shape;
        // Contiguous, so that the gradient buffer is laid out in logical order.
        let (states, mut tape) = input.states.reshape_like(&shape).split_tape();
        let host_states = states.as_vec();
        let host_params: Vec<Vec<f32>> = self
            .params
            .iter()
            .map(|id| ctx.params.host(id.0).to_vec())
            .collect();
        let call = Call {
            mode: ctx.mode,
            seed,
            states: host_states,
            shape: [batch.0, seq.0, model.0],
            mask: input.mask.clone(),
            params: host_params,
        };
        let out = self.instance.forward(&call.inputs())?;
        let mut param_ghosts = Vec::with_capacity(self.params.len());
        for &id in &self.params {
            let n = ctx.params.host(id.0).len();
            let (p, p_tape) = ctx.params.get(id, (n,)).split_tape();
            tape = tape.merge(p_tape);
            param_ghosts.push(p.ghost());
        }
        let dev = ctx.dev().clone();
        let dims = (batch, Comp(seq.0), Latent(self.instance.latent_dim));
        let z = dev.tensor_from_vec(out.z, dims);
        let mean = dev.tensor_from_vec(out.mean, dims);
        let log_var = out.log_var.map(|v| dev.tensor_from_vec(v, dims));
        let kl = out.kl.map(|v| dev.tensor_from_vec(v, (batch,)));
        let ghosts = (
            z.ghost(),
            mean.ghost(),
            log_var.as_ref().map(|t| t.ghost()),
            kl.as_ref().map(|t| t.ghost()),
        );
        let states_ghost = states.ghost();
        let instance = self.instance.clone();
        tape.add_backward_op(move |grads| {
            // The gradient of the loss with respect to an output (zeros if the loss does not
            // use it). A macro: dfdx does not export the ghost tensor type.
            macro_rules! cotangent {
                ($ghost:expr) => {{
                    grads.try_alloc_for($ghost)?;
                    grads.get($ghost).as_vec()
                }};
            }
            let cotangents = Outputs {
                z: cotangent!(&ghosts.0),
                mean: cotangent!(&ghosts.1),
                log_var: match &ghosts.2 {
                    Some(g) => Some(cotangent!(g)),
                    None => None,
                },
                kl: match &ghosts.3 {
                    Some(g) => Some(cotangent!(g)),
                    None => None,
                },
            };
            match instance.vjp(&call.inputs(), &cotangents) {
                Ok((d_states, d_params)) => {
                    dev.accumulate(grads.get_or_alloc_mut(&states_ghost)?, &d_states)?;
                    for (ghost, d) in param_ghosts.iter().zip(&d_params) {
                        dev.accumulate(grads.get_or_alloc_mut(ghost)?, d)?;
                    }
                }
                // dfdx's backward cannot carry our error: the trainer picks it up.
                Err(e) => record_backward_failure(e),
            }
            Ok(())
        });
        let traced = |t: Tensor<_, f32, D>| t.put_tape(OwnedTape::default());
        let mut latent = Mixture::gaussian(
            z.put_tape(tape),
            traced(mean),
            log_var.map(traced),
            input.mask,
        );
        latent.kl = kl
            .map(|value| KlTerm {
                name: "kl".into(),
                value: value.put_tape(OwnedTape::default()),
                weight: 1.0,
            })
            .into_iter()
            .collect();
        Ok(latent)
    }
}

/// What one forward was called with, kept for its VJP.
struct Call {
    mode: vaezoo_core::plugin::Mode,
    seed: u64,
    states: Vec<f32>,
    shape: [usize; 3],
    mask: Option<Vec<bool>>,
    params: Vec<Vec<f32>>,
}

impl Call {
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            mode: self.mode,
            seed: self.seed,
            states: &self.states,
            shape: self.shape,
            mask: self.mask.as_deref(),
            params: &self.params,
        }
    }
}
