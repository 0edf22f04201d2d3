//! The plugin side of `forward` and `vjp`: host buffers in, the plugin's own dfdx forward (and
//! backward), host buffers out. The host validates what comes back (shapes, finiteness), so
//! this layer only marshals; it never writes past a buffer.

use std::ffi::CString;

use dfdx::prelude::*;

use super::sdk::{ExportBottleneck, Failure, Instance};
use super::{
    capability, dtype, mode, status, Cotangents, ForwardInputs, ForwardOutputs, InputGradients,
    TensorView,
};
use crate::axes::{Batch, Comp, Latent, Model, Seq};
use crate::backend::Traced;
use crate::latent::Mixture;
use crate::params::{HostParam, ParamStore};
use crate::plugin::{Ctx, EncoderStates, Mode};
use crate::rng::seeded;

/// A parameter as the plugin declared it, kept for `describe_param` and to check the views.
pub(super) struct Declared {
    pub name: CString,
    pub shape: Vec<usize>,
    pub init: u32,
    pub a: f32,
    pub b: f32,
}

fn shape_error(message: String) -> Failure {
    Failure::new(status::ERR_SHAPE, message)
}

/// The shape of a view (checking its dtype).
fn shape_of(view: &TensorView, what: &str) -> Result<Vec<usize>, Failure> {
    if view.dtype != dtype::F32 {
        return Err(shape_error(format!(
            "{what}: dtype {} is not f32",
            view.dtype
        )));
    }
    if view.rank > 0 && view.shape.is_null() {
        return Err(Failure::new(
            status::ERR_ARGUMENT,
            format!("{what}: null shape"),
        ));
    }
    Ok((0..view.rank)
        .map(|i| unsafe { *view.shape.add(i) })
        .collect())
}

/// The elements of an input view of exactly `expected` shape.
fn read<'a>(view: &'a TensorView, expected: &[usize], what: &str) -> Result<&'a [f32], Failure> {
    let shape = shape_of(view, what)?;
    if shape != expected {
        return Err(shape_error(format!(
            "{what} has shape {shape:?}, expected {expected:?}"
        )));
    }
    let n = expected.iter().product();
    if view.data.is_null() {
        return Err(Failure::new(
            status::ERR_ARGUMENT,
            format!("{what}: null data"),
        ));
    }
    Ok(unsafe { std::slice::from_raw_parts(view.data, n) })
}

/// Copies `values` into an output view of exactly `expected` shape.
fn write(view: &TensorView, expected: &[usize], values: &[f32], what: &str) -> Result<(), Failure> {
    let shape = shape_of(view, what)?;
    if shape != expected || view.data.is_null() {
        return Err(shape_error(format!(
            "{what}: the host's buffer has shape {shape:?}, the plugin produced {expected:?}"
        )));
    }
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), view.data, values.len()) };
    Ok(())
}

/// The inputs as the plugin's own tensors: parameters, states (traced) and mask.
struct Inputs {
    params: ParamStore<Cpu>,
    states: Tensor<(Batch, Seq, Model), f32, Cpu>,
    mask: Option<Vec<bool>>,
}

fn inputs<T>(instance: &Instance<T>, inputs: &ForwardInputs) -> Result<Inputs, Failure> {
    let dev = Cpu::default();
    let shape = shape_of(&inputs.states, "states")?;
    let [b, s, m] = shape[..] else {
        return Err(shape_error(format!(
            "states have shape {shape:?}, expected (B, S, M)"
        )));
    };
    if m != instance.model_dim {
        return Err(shape_error(format!(
            "states have width {m}, the instance was created for {}",
            instance.model_dim
        )));
    }
    let states = read(&inputs.states, &[b, s, m], "states")?.to_vec();
    let states = dev.tensor_from_vec(states, (Batch(b), Seq(s), Model(m)));
    if inputs.num_params != instance.params.len()
        || (inputs.num_params > 0 && inputs.params.is_null())
    {
        return Err(shape_error(format!(
            "{} parameters passed, {} declared",
            inputs.num_params,
            instance.params.len()
        )));
    }
    let mut host = Vec::with_capacity(instance.params.len());
    for (i, p) in instance.params.iter().enumerate() {
        let name = p.name.to_string_lossy().into_owned();
        let values = read(unsafe { &*inputs.params.add(i) }, &p.shape, &name)?.to_vec();
        host.push(HostParam {
            name,
            shape: p.shape.clone(),
            values,
        });
    }
    let mask = (!inputs.mask.is_null()).then(|| {
        let bytes = unsafe { std::slice::from_raw_parts(inputs.mask, b * s) };
        bytes.iter().map(|&k| k != 0).collect()
    });
    Ok(Inputs {
        params: ParamStore::new(&dev, host),
        states,
        mask,
    })
}

/// The plugin's forward on the plugin's own tensors; `states` is traced so the VJP can
/// read its gradient.
fn mixture<T: ExportBottleneck>(
    instance: &Instance<T>,
    mode_code: u32,
    seed: u64,
    inputs: &Inputs,
) -> Result<Mixture<Cpu>, Failure> {
    let mode = match mode_code {
        mode::TRAIN => Mode::Train,
        mode::EVAL => Mode::Eval,
        other => {
            return Err(Failure::new(
                status::ERR_ARGUMENT,
                format!("unknown mode {other}"),
            ))
        }
    };
    let mut rng = seeded(seed);
    let mut ctx = Ctx {
        params: &inputs.params,
        mode,
        rng: &mut rng,
    };
    let states = EncoderStates {
        states: inputs.states.clone().put_tape(OwnedTape::default()),
        mask: inputs.mask.clone(),
    };
    let latent = instance.module.forward(&mut ctx, states)?;
    if latent.weights.is_some() || latent.alpha.is_some() {
        return Err(shape_error(
            "ABI version 1 carries z, mean, log_var and kl; this latent has mixture weights".into(),
        ));
    }
    Ok(latent)
}

/// The declared optional outputs: `(log_var, kl)`; KL terms are summed with their weights.
type Extras = (
    Option<Traced<(Batch, Comp, Latent), Cpu>>,
    Option<Traced<(Batch,), Cpu>>,
);

fn extras<T: ExportBottleneck>(latent: &mut Mixture<Cpu>) -> Result<Extras, Failure> {
    let log_var = if T::CAPABILITIES & capability::HAS_VARIANCE != 0 {
        let lv = latent.log_var.take();
        Some(lv.ok_or_else(|| shape_error("declares HAS_VARIANCE but returned no log_var".into()))?)
    } else {
        None
    };
    let kl = if T::CAPABILITIES & capability::PROVIDES_KL != 0 {
        let mut terms = std::mem::take(&mut latent.kl).into_iter();
        let first = terms
            .next()
            .ok_or_else(|| shape_error("declares PROVIDES_KL but returned no KL term".into()))?;
        let weighted = |t: crate::plugin::KlTerm<Cpu>| t.value * t.weight;
        Some(terms.fold(weighted(first), |sum, t| sum + weighted(t)))
    } else {
        None
    };
    Ok((log_var, kl))
}

pub(super) fn run_forward<T: ExportBottleneck>(
    instance: &Instance<T>,
    mode: u32,
    seed: u64,
    raw: &ForwardInputs,
    outputs: &mut ForwardOutputs,
) -> Result<(), Failure> {
    let inputs = inputs(instance, raw)?;
    let mut latent = mixture(instance, mode, seed, &inputs)?;
    let (b, c, l) = latent.dims();
    outputs.produced = [b.0, c.0, l.0];
    let expected = shape_of(&outputs.z, "z")?;
    if expected != [b.0, c.0, l.0] {
        // The host sees `produced` and reports the mismatch.
        return Ok(());
    }
    let (log_var, kl) = extras::<T>(&mut latent)?;
    write(&outputs.z, &expected, &latent.z.as_vec(), "z")?;
    write(&outputs.mean, &expected, &latent.mean.as_vec(), "mean")?;
    if let Some(log_var) = log_var {
        write(&outputs.log_var, &expected, &log_var.as_vec(), "log_var")?;
    }
    if let Some(kl) = kl {
        write(&outputs.kl, &[b.0], &kl.as_vec(), "kl")?;
    }
    Ok(())
}

pub(super) fn run_vjp<T: ExportBottleneck>(
    instance: &Instance<T>,
    mode: u32,
    seed: u64,
    raw: &ForwardInputs,
    cotangents: &Cotangents,
    grads: &InputGradients,
) -> Result<(), Failure> {
    let inputs = inputs(instance, raw)?;
    let mut latent = mixture(instance, mode, seed, &inputs)?;
    let dims = latent.dims();
    let (b, c, l) = dims;
    let shape = [b.0, c.0, l.0];
    let dev = Cpu::default();
    let cot = |view: &TensorView, what| -> Result<_, Failure> {
        Ok(dev.tensor_from_vec(read(view, &shape, what)?.to_vec(), dims))
    };
    let (log_var, kl) = extras::<T>(&mut latent)?;
    let mut loss = (latent.z * cot(&cotangents.z, "d z")?).sum::<(), _>()
        + (latent.mean * cot(&cotangents.mean, "d mean")?).sum::<(), _>();
    if let Some(log_var) = log_var {
        loss = loss + (log_var * cot(&cotangents.log_var, "d log_var")?).sum::<(), _>();
    }
    if let Some(kl) = kl {
        let d_kl = read(&cotangents.kl, &[b.0], "d kl")?.to_vec();
        loss = loss + (kl * dev.tensor_from_vec(d_kl, (b,))).sum::<(), _>();
    }
    let mut tape_grads = loss.backward();
    let states_shape = inputs.states.shape().concrete().to_vec();
    tape_grads
        .try_alloc_for(&inputs.states)
        .map_err(|e| Failure::new(status::ERR_OTHER, e.to_string()))?;
    write(
        &grads.states,
        &states_shape,
        &tape_grads.get(&inputs.states).as_vec(),
        "d states",
    )?;
    let mut param_grads = vec![Vec::new(); instance.params.len()];
    inputs
        .params
        .gradients_into(&mut tape_grads, &mut param_grads);
    if grads.num_params != instance.params.len() || (grads.num_params > 0 && grads.params.is_null())
    {
        return Err(shape_error(format!(
            "{} parameter gradients asked for, {} declared",
            grads.num_params,
            instance.params.len()
        )));
    }
    for (i, (p, g)) in instance.params.iter().zip(&param_grads).enumerate() {
        let name = format!("d {}", p.name.to_string_lossy());
        write(unsafe { &*grads.params.add(i) }, &p.shape, g, &name)?;
    }
    Ok(())
}
