//! Where a layer reads its weights from. Layers keep the [`ParamId`]s they declared and read
//! typed, traced views through [`Source`]: the host's f32 [`ParamStore`] inside a model, or a
//! [`Table`] of leaf tensors in any float type (the f64 golden checks, whose gradients are read
//! with [`Table::leaf`]).

use dfdx::prelude::*;
use vaezoo_core::params::{HostParam, ParamId, ParamStore};
use vaezoo_core::Backend;
use vaezoo_nvib::num::{Dev, Real, Tr};

/// Typed, traced views of parameters in element type `E` on device `D`.
pub trait Source<E: Real, D: Dev<E>> {
    /// Parameter `id` viewed as `shape` (the parameter's element count must match).
    fn get<S: Shape>(&self, id: ParamId, shape: S) -> Tr<S, E, D>;
    /// The device.
    fn device(&self) -> &D;
}

impl<D: Backend> Source<f32, D> for ParamStore<D> {
    fn get<S: Shape>(&self, id: ParamId, shape: S) -> Tr<S, f32, D> {
        ParamStore::get(self, id, shape)
    }
    fn device(&self) -> &D {
        ParamStore::device(self)
    }
}

/// Flat leaf tensors indexed by [`ParamId`], in any float type.
pub struct Table<E: Real, D: Dev<E>> {
    dev: D,
    leaves: Vec<Tensor<(usize,), E, D>>,
}

impl<E: Real, D: Dev<E>> Table<E, D> {
    /// One leaf per declared parameter, in declaration order, its values from `values`
    /// (called with each declaration; it must return the parameter's element count).
    pub fn new(
        dev: &D,
        declared: &[HostParam],
        mut values: impl FnMut(&HostParam) -> Result<Vec<E>, String>,
    ) -> Result<Self, String> {
        let leaves = declared
            .iter()
            .map(|p| {
                let v = values(p)?;
                if v.len() != p.values.len() {
                    return Err(format!(
                        "{}: {} values, want {}",
                        p.name,
                        v.len(),
                        p.values.len()
                    ));
                }
                let n = v.len();
                Ok(dev.tensor_from_vec(v, (n,)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            dev: dev.clone(),
            leaves,
        })
    }

    /// The flat leaf of parameter `id` (to read its gradient).
    pub fn leaf(&self, id: ParamId) -> &Tensor<(usize,), E, D> {
        &self.leaves[id.0]
    }
}

impl<E: Real, D: Dev<E>> Source<E, D> for Table<E, D> {
    fn get<S: Shape>(&self, id: ParamId, shape: S) -> Tr<S, E, D> {
        self.leaves[id.0].leaky_trace().reshape_like(&shape)
    }
    fn device(&self) -> &D {
        &self.dev
    }
}
