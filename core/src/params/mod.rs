//! Parameters owned by the host: named, initialised from the host RNG, stored flat on the
//! device, with a host mirror (for the optimiser and checkpoints) where the host cannot reach
//! the device's values (not on the CPU).
//!
//! Plugins declare parameters at build time through a [`ParamBuilder`] and keep the returned
//! [`ParamId`]s; at forward time they read typed, traced views with [`ParamStore::get`].
//! Gradients are matched to parameters by tensor id: a typed view is a reshape of the flat
//! tensor, which keeps its id.

use std::collections::BTreeMap;

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
pub fn gigabytes(bytes: u64) -> String {
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

mod store;

pub use store::ParamStore;

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
