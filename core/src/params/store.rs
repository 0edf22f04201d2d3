//! The parameters of a built model on its device ([`ParamStore`]): one flat tensor each, read
//! by plugins as typed, traced views, with a host mirror where the host cannot read the
//! device's values in place.

use dfdx::prelude::*;

use super::{HostParam, ParamId};
use crate::backend::{Backend, Traced};
use crate::error::{Error, Result};

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
