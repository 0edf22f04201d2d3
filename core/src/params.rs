//! Parameters owned by the host: named, initialised from the host RNG, stored flat on the
//! device, with a host mirror (for the optimiser and checkpoints) where the host cannot reach
//! the device's values (not on the CPU).
//!
//! Plugins declare parameters at build time through a [`ParamBuilder`] and keep the returned
//! [`ParamId`]s; at forward time they read typed, traced views with [`ParamStore::get`].
//! Gradients are matched to parameters by tensor id: a typed view is a reshape of the flat
//! tensor, which keeps its id.

use std::collections::BTreeMap;

use dfdx::prelude::*;

use crate::backend::{Backend, Traced};
use crate::error::{Error, Result};
use crate::rng::{normal_vec, uniform_vec, HostRng};
use crate::torch_layout::TorchView;

/// The index of a parameter in its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// A parameter's values on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostParam {
    /// Dotted name, e.g. `encoder.layers.0.weight`.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// How a parameter's initial values were chosen: what a plugin behind the C ABI reports, so
/// that the host draws the values from its own generator (see [`crate::abi`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamInit {
    /// Uniform in `[low, high)`.
    Uniform { low: f32, high: f32 },
    /// Normal with this mean and standard deviation.
    Normal { mean: f32, std: f32 },
    /// Every value equal to this.
    Constant(f32),
    /// Values given explicitly by the caller ([`ParamBuilder::declare`]).
    Given,
}

/// The most scalar parameters a model may declare, unless the environment variable
/// `VAEZOO_MAX_PARAMS` gives another number: one billion, 4 GB of f32 values (about 16 GB
/// with Adam's two moments and the gradients), or fewer where this process may use less
/// memory ([`memory_max_params`]).
pub const DEFAULT_MAX_PARAMS: usize = 1_000_000_000;

/// Bytes one scalar parameter takes in training: its value, its gradient and Adam's moments.
pub const TRAINING_BYTES_PER_PARAM: u64 = 16;

/// The most parameters whose training state fits in half the memory this process may use
/// ([`crate::process::memory_limit`]; the other half is for activations and everything
/// else), or `None` where that memory is not known.
pub fn memory_max_params() -> Option<usize> {
    let memory = crate::process::memory_limit()?;
    usize::try_from(memory / 2 / TRAINING_BYTES_PER_PARAM).ok()
}

/// `bytes` in gigabytes, for messages.
fn gigabytes(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// Declares parameters while plugins are built; `prefix` scopes the names of one component.
///
/// The values are counted against a limit ([`DEFAULT_MAX_PARAMS`], or fewer where memory is
/// short: [`memory_max_params`]): past it (or where a shape's size overflows) nothing more is
/// allocated, and [`Self::check_size`] reports the first parameter that did not fit, with the
/// memory its training would take, instead of an allocation that aborts the process.
pub struct ParamBuilder<'a> {
    params: Vec<HostParam>,
    inits: Vec<ParamInit>,
    prefix: String,
    rng: &'a mut HostRng,
    total: usize,
    limit: usize,
    too_large: Option<String>,
    torch_views: BTreeMap<String, TorchView>,
}

impl<'a> ParamBuilder<'a> {
    /// An empty builder drawing initial values from `rng`, with the default limit:
    /// `VAEZOO_MAX_PARAMS` when set, else the smaller of [`DEFAULT_MAX_PARAMS`] and
    /// [`memory_max_params`].
    pub fn new(rng: &'a mut HostRng) -> Self {
        let limit = std::env::var("VAEZOO_MAX_PARAMS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                memory_max_params().map_or(DEFAULT_MAX_PARAMS, |m| m.min(DEFAULT_MAX_PARAMS))
            });
        Self {
            params: Vec::new(),
            inits: Vec::new(),
            prefix: String::new(),
            rng,
            total: 0,
            limit,
            too_large: None,
            torch_views: BTreeMap::new(),
        }
    }

    /// Sets the most scalar parameters the model may declare (see [`DEFAULT_MAX_PARAMS`]).
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// An error naming the first parameter past the size limit, if one was declared: then the
    /// declared parameters are not the model's, and must not be used.
    pub fn check_size(&self) -> Result<()> {
        match &self.too_large {
            Some(message) => Err(Error::TooLarge(message.clone())),
            None => Ok(()),
        }
    }

    /// The number of values of a parameter of `shape`, counted against the limit; `None`
    /// (allocate nothing) past it, the first such parameter recorded for [`Self::check_size`].
    fn reserve(&mut self, name: &str, shape: &[usize]) -> Option<usize> {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let total = n.and_then(|n| self.total.checked_add(n));
        match (n, total) {
            (Some(n), Some(total)) if total <= self.limit && self.too_large.is_none() => {
                self.total = total;
                Some(n)
            }
            _ => {
                if self.too_large.is_none() {
                    let size = n.map_or("more than 2^64".into(), |n| n.to_string());
                    let needed = total.map_or("more than 2^64 bytes".into(), |t| {
                        gigabytes(t as u64 * TRAINING_BYTES_PER_PARAM)
                    });
                    self.too_large = Some(format!(
                        "parameter `{}` of shape {shape:?} ({size} values) takes the model past \
                         {} parameters (training it would take {needed}: values, gradients and \
                         Adam's moments); check the sizes in the spec (VAEZOO_MAX_PARAMS sets \
                         another limit)",
                        self.full_name(name),
                        self.limit
                    ));
                }
                None
            }
        }
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Declares a parameter past the size limit: its name and shape, no values.
    fn declare_oversized(&mut self, name: &str, shape: &[usize], init: ParamInit) -> ParamId {
        self.params.push(HostParam {
            name: self.full_name(name),
            shape: shape.to_vec(),
            values: Vec::new(),
        });
        self.inits.push(init);
        ParamId(self.params.len() - 1)
    }

    /// Sets the name prefix (e.g. `"encoder"`) for the parameters declared next.
    pub fn set_prefix(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    /// Declares a parameter with the given values.
    pub fn declare(&mut self, name: &str, shape: &[usize], values: Vec<f32>) -> ParamId {
        if self.reserve(name, shape).is_none() {
            return self.declare_oversized(name, shape, ParamInit::Given);
        }
        self.declare_with(name, shape, values, ParamInit::Given)
    }

    fn declare_with(
        &mut self,
        name: &str,
        shape: &[usize],
        values: Vec<f32>,
        init: ParamInit,
    ) -> ParamId {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        self.params.push(HostParam {
            name: self.full_name(name),
            shape: shape.to_vec(),
            values,
        });
        self.inits.push(init);
        ParamId(self.params.len() - 1)
    }

    /// Declares a parameter drawn uniformly from `[-bound, bound)` (PyTorch's Linear init uses
    /// `bound = 1/sqrt(fan_in)` for weights and biases).
    pub fn uniform(&mut self, name: &str, shape: &[usize], bound: f32) -> ParamId {
        self.uniform_range(name, shape, -bound, bound)
    }

    /// Declares `name` at the top level of the model (outside the prefix), drawn uniformly
    /// from `[-bound, bound)`, or returns it when another component declared it already: one
    /// tensor that several components read (a token embedding shared by a text encoder and
    /// decoder). A second declaration with another shape is an error naming the parameter.
    pub fn shared_uniform(&mut self, name: &str, shape: &[usize], bound: f32) -> Result<ParamId> {
        if let Some(i) = self.params.iter().position(|p| p.name == name) {
            if self.params[i].shape != shape {
                return Err(Error::Shape(format!(
                    "shared parameter `{name}` declared with shape {:?} and {shape:?}",
                    self.params[i].shape
                )));
            }
            return Ok(ParamId(i));
        }
        let prefix = std::mem::take(&mut self.prefix);
        let id = self.uniform(name, shape, bound);
        self.prefix = prefix;
        Ok(id)
    }

    /// Declares a parameter of independent N(0, std²) entries.
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f32) -> ParamId {
        self.normal_with_mean(name, shape, 0.0, std)
    }

    /// Declares a parameter drawn uniformly from `[low, high)`.
    pub fn uniform_range(&mut self, name: &str, shape: &[usize], low: f32, high: f32) -> ParamId {
        let init = ParamInit::Uniform { low, high };
        let Some(n) = self.reserve(name, shape) else {
            return self.declare_oversized(name, shape, init);
        };
        let values = uniform_vec(self.rng, n, low, high);
        self.declare_with(name, shape, values, init)
    }

    /// Declares a parameter of independent N(mean, std²) entries.
    pub fn normal_with_mean(
        &mut self,
        name: &str,
        shape: &[usize],
        mean: f32,
        std: f32,
    ) -> ParamId {
        let init = ParamInit::Normal { mean, std };
        let Some(n) = self.reserve(name, shape) else {
            return self.declare_oversized(name, shape, init);
        };
        let values = normal_vec(self.rng, n).into_iter();
        let values = values.map(|x| mean + x * std).collect();
        self.declare_with(name, shape, values, init)
    }

    /// Declares a parameter filled with `value`.
    pub fn constant(&mut self, name: &str, shape: &[usize], value: f32) -> ParamId {
        let init = ParamInit::Constant(value);
        let Some(n) = self.reserve(name, shape) else {
            return self.declare_oversized(name, shape, init);
        };
        self.declare_with(name, shape, vec![value; n], init)
    }

    /// The parameters declared so far with how each was initialised, in declaration order.
    pub fn declarations(&self) -> impl Iterator<Item = (&HostParam, ParamInit)> {
        self.params.iter().zip(self.inits.iter().copied())
    }

    /// Records how parameter `id` maps onto PyTorch's layout (the default is
    /// [`TorchView::Same`]).
    pub fn set_torch_view(&mut self, id: ParamId, view: TorchView) {
        let name = self.params[id.0].name.clone();
        self.torch_views.insert(name, view);
    }

    /// The parameters whose PyTorch layout differs, by full name ([`Self::set_torch_view`]).
    pub fn torch_views(&self) -> BTreeMap<String, TorchView> {
        self.torch_views.clone()
    }

    /// The declared parameters, in declaration order.
    pub fn finish(self) -> Vec<HostParam> {
        self.params
    }
}

struct DeviceParam<D: Backend> {
    name: String,
    shape: Vec<usize>,
    value: Tensor<(usize,), f32, D>,
    /// The host mirror, kept only where the host cannot read the device's values in place
    /// (not on the CPU, where the optimiser updates the tensor itself).
    mirror: Option<Vec<f32>>,
}

impl<D: Backend> DeviceParam<D> {
    fn len(&self) -> usize {
        self.value.shape().0
    }

    fn host(&self) -> &[f32] {
        match &self.mirror {
            Some(mirror) => mirror,
            None => D::values(&self.value).expect("a parameter without a mirror is host-readable"),
        }
    }

    /// The values to update: the device's in place, or the mirror (then [`Self::upload`]).
    fn values_mut(&mut self) -> &mut [f32] {
        match &mut self.mirror {
            Some(mirror) => mirror,
            None => {
                if D::values_mut(&mut self.value).is_none() {
                    // Shared with a live view: dfdx gives the tensor a storage of its own on
                    // write (same id; the view keeps the old values).
                    let current = self.value.as_vec();
                    self.value.copy_from(&current);
                }
                D::values_mut(&mut self.value).expect("an unshared parameter is host-writable")
            }
        }
    }

    /// Copies the mirror, if any, to the device after an update.
    fn upload(&mut self) {
        if let Some(mirror) = &self.mirror {
            self.value.copy_from(mirror);
        }
    }
}

/// The parameters of one model on one device.
pub struct ParamStore<D: Backend> {
    dev: D,
    params: Vec<DeviceParam<D>>,
}

impl<D: Backend> ParamStore<D> {
    /// Uploads host parameters to `dev`.
    pub fn new(dev: &D, params: Vec<HostParam>) -> Self {
        let params = params
            .into_iter()
            .map(|p| {
                let value = dev.tensor_from_vec(p.values.clone(), (p.values.len(),));
                let mirror = D::values(&value).is_none().then_some(p.values);
                DeviceParam {
                    value,
                    name: p.name,
                    shape: p.shape,
                    mirror,
                }
            })
            .collect();
        Self {
            dev: dev.clone(),
            params,
        }
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// How many parameter tensors there are.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The total number of scalar parameters.
    pub fn num_scalars(&self) -> usize {
        self.params.iter().map(DeviceParam::len).sum()
    }

    /// Name of parameter `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.params[i].name
    }

    /// Shape of parameter `i`.
    pub fn shape(&self, i: usize) -> &[usize] {
        &self.params[i].shape
    }

    /// Host values of parameter `i`.
    pub fn host(&self, i: usize) -> &[f32] {
        self.params[i].host()
    }

    /// A traced view of a parameter with a typed shape.
    ///
    /// # Panics
    /// If `shape` does not have the parameter's number of elements (a plugin bug).
    pub fn get<S: Shape>(&self, id: ParamId, shape: S) -> Traced<S, D> {
        let p = &self.params[id.0];
        assert_eq!(
            shape.num_elements(),
            p.len(),
            "parameter `{}` viewed with the wrong size",
            p.name
        );
        p.value
            .clone()
            .reshape_like(&shape)
            .put_tape(OwnedTape::default())
    }

    /// Replaces parameter `i` with `values` (device copy and host mirror).
    pub fn set(&mut self, i: usize, values: &[f32]) -> Result<()> {
        let p = &mut self.params[i];
        if values.len() != p.len() {
            return Err(Error::Shape(format!(
                "parameter `{}` has {} values, got {}",
                p.name,
                p.len(),
                values.len()
            )));
        }
        if let Some(mirror) = &mut p.mirror {
            mirror.copy_from_slice(values);
        }
        p.value.copy_from(values);
        Ok(())
    }

    /// Applies `f(i, values)` to every parameter's values on the host (the device's own on
    /// the CPU; elsewhere the mirror, then copied to the device).
    pub fn update_each(&mut self, mut f: impl FnMut(usize, &mut [f32])) {
        for (i, p) in self.params.iter_mut().enumerate() {
            f(i, p.values_mut());
            p.upload();
        }
    }

    /// Hands every parameter's values on the host to `f` at once (to update them in
    /// parallel): the device's own on the CPU; elsewhere the mirrors, then copied to the
    /// device.
    pub fn update_all(&mut self, f: impl FnOnce(&mut [&mut [f32]])) {
        let mut values: Vec<&mut [f32]> = self
            .params
            .iter_mut()
            .map(DeviceParam::values_mut)
            .collect();
        f(&mut values);
        self.params.iter_mut().for_each(DeviceParam::upload);
    }

    /// Hands every parameter's gradient over in `out[i]` (zeros where none reached it). A
    /// buffer of the right length in `out[i]` (the last step's) is swapped with the tape's,
    /// which then recycles it: no copy after the first step.
    pub fn gradients_into(&self, grads: &mut Gradients<f32, D>, out: &mut [Vec<f32>]) {
        for (p, g) in self.params.iter().zip(out.iter_mut()) {
            let slot = grads
                .get_or_alloc_mut(&p.value)
                .expect("allocating a gradient buffer");
            let n = p.len();
            match D::host_slot(slot) {
                Some(tape_buffer) if g.len() == n && tape_buffer.len() == n => {
                    std::mem::swap(tape_buffer, g)
                }
                _ => {
                    g.resize(n, 0.0);
                    grads.get(&p.value).copy_into(g);
                }
            }
        }
    }

    /// Host copies of every parameter, in order.
    pub fn to_host(&self) -> Vec<HostParam> {
        self.params
            .iter()
            .map(|p| HostParam {
                name: p.name.clone(),
                shape: p.shape.clone(),
                values: p.host().to_vec(),
            })
            .collect()
    }

    /// Loads values by name from `saved`, which must hold exactly these parameters.
    pub fn load_host(&mut self, saved: &[HostParam]) -> Result<()> {
        if saved.len() != self.params.len() {
            return Err(Error::Shape(format!(
                "expected {} parameters, found {}",
                self.params.len(),
                saved.len()
            )));
        }
        for i in 0..self.params.len() {
            let s = saved
                .iter()
                .find(|s| s.name == self.params[i].name)
                .ok_or_else(|| Error::Shape(format!("missing parameter `{}`", self.name(i))))?;
            if s.shape != self.params[i].shape {
                return Err(Error::Shape(format!(
                    "parameter `{}` has shape {:?}, saved {:?}",
                    s.name, self.params[i].shape, s.shape
                )));
            }
            self.set(i, &s.values)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    #[test]
    fn parameters_past_the_limit_are_refused_without_allocating_them() {
        let mut rng = seeded(0);
        let mut pb = ParamBuilder::new(&mut rng).with_limit(100);
        pb.set_prefix("enc");
        pb.uniform("a", &[10, 5], 0.1);
        assert!(pb.check_size().is_ok());
        pb.normal("b", &[10, 6], 1.0); // 110 in all
        pb.constant("c", &[usize::MAX, 2], 0.0); // overflows: not allocated either
        let e = pb.check_size().unwrap_err().to_string();
        assert!(e.contains("`enc.b` of shape [10, 6] (60 values)"), "{e}");
        assert!(e.contains("training it would take 0.0 GB"), "{e}");
        let sizes: Vec<usize> = pb.finish().iter().map(|p| p.values.len()).collect();
        assert_eq!(sizes, [50, 0, 0]);
    }
}
