//! A lookup table of learned rows, one per class: `E[c]`.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use crate::axes::{Batch, Class};
use crate::backend::{Backend, Traced};
use crate::error::{Error, Result};
use crate::params::{ParamBuilder, ParamId, ParamStore};

/// A `(Class, O)` table; row `c` is the vector of class `c`.
#[derive(Clone, Debug)]
pub struct Embedding<O: Dim> {
    table: ParamId,
    classes: Class,
    out_dim: O,
}

impl<O: Dim> Embedding<O> {
    /// Declares `name` (`classes × out_dim`) filled with `init`'s values for each row.
    pub fn new(
        params: &mut ParamBuilder,
        name: &str,
        classes: usize,
        out_dim: O,
        init: Init,
    ) -> Self {
        let shape = [classes, out_dim.size()];
        let table = match init {
            Init::Constant(value) => params.constant(name, &shape, value),
            Init::Normal => params.normal(name, &shape, 1.0),
        };
        Self {
            table,
            classes: Class(classes),
            out_dim,
        }
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes.0
    }

    /// The size of each row.
    pub fn out_size(&self) -> usize {
        self.out_dim.size()
    }

    /// The rows of `labels`; a label outside the table is an error naming `owner`.
    ///
    /// # Shapes
    /// `labels: [Batch]` → `(Batch, O)`
    pub fn forward<D: Backend>(
        &self,
        params: &ParamStore<D>,
        labels: &[usize],
        owner: &str,
    ) -> Result<Traced<(Batch, O), D>> {
        check_labels(labels, self.classes.0, owner)?;
        let table = params.get(self.table, (self.classes, self.out_dim));
        let idx = params
            .device()
            .tensor_from_vec(labels.to_vec(), (Batch(labels.len()),));
        Ok(table.gather(idx))
    }
}

/// Every label must be one of `classes`; the error names `owner`, the plugin reading them.
pub fn check_labels(labels: &[usize], classes: usize, owner: &str) -> Result<()> {
    match labels.iter().find(|&&l| l >= classes) {
        Some(&bad) => Err(Error::Config {
            plugin: owner.to_string(),
            message: format!(
                "label {bad} is out of range: the model was built for {classes} classes"
            ),
        }),
        None => Ok(()),
    }
}

/// How an [`Embedding`] table starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every entry equal (e.g. 0 for a prior that starts at N(0, I)).
    Constant(f32),
    /// Standard-normal entries (as PyTorch's `nn.Embedding`).
    Normal,
}
