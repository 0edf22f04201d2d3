//! Conditioning an MLP on a class label: the label's one-hot vector or learned embedding is
//! appended to the MLP's input (as a conditional VAE's q(z | x, c) and p(x | z, c)).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::Batch;
use vaezoo_core::backend::lift;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::dfdx::shapes::Dim;
use vaezoo_core::layers::{check_labels, Embedding, Init};
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::{Backend, Error, Result, Traced};

/// How the class label joins the input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The one-hot vector of the label (as many entries as classes).
    OneHot,
    /// A learned vector per class (standard-normal initialisation, as PyTorch's
    /// `nn.Embedding`).
    Embedding {
        /// Its size.
        #[schemars(range(min = 1))]
        dim: usize,
    },
}

/// A built [`Condition`] for an input axis `A`.
pub struct BuiltCondition<A: Dim> {
    classes: usize,
    embedding: Option<Embedding<A>>,
    owner: &'static str,
}

impl<A: Dim + std::ops::Add<Output = A>> BuiltCondition<A> {
    /// Declares `condition` (`classes × dim`) for an embedding; `owner` names the plugin in
    /// errors. Unlabelled data (0 classes) is an error.
    pub fn new(
        cfg: &Condition,
        params: &mut ParamBuilder,
        classes: usize,
        owner: &'static str,
    ) -> Result<Self> {
        if classes == 0 {
            return Err(Error::Config {
                plugin: owner.into(),
                message: "`condition` needs labelled data, and this data has no classes".into(),
            });
        }
        let embedding = match cfg {
            Condition::OneHot => None,
            Condition::Embedding { dim } => Some(Embedding::new(
                params,
                "condition",
                classes,
                A::from_size(*dim).expect("runtime axes take any size"),
                Init::Normal,
            )),
        };
        Ok(Self {
            classes,
            embedding,
            owner,
        })
    }

    /// How many entries the condition adds to the input.
    pub fn width(&self) -> usize {
        match &self.embedding {
            Some(e) => e.out_size(),
            None => self.classes,
        }
    }

    /// `[x; c]`: the input with the labels' vectors appended.
    ///
    /// # Shapes
    /// `x: (Batch, A)`, `labels: [Batch]` → `(Batch, A + width)`
    pub fn append<D: Backend>(
        &self,
        params: &ParamStore<D>,
        x: Traced<(Batch, A), D>,
        labels: Option<&[usize]>,
    ) -> Result<Traced<(Batch, A), D>> {
        let labels = labels.ok_or_else(|| Error::Config {
            plugin: self.owner.into(),
            message: "this model is conditional: it needs a class label per example \
                      (e.g. `vaezoo sample RUN --class C`)"
                .into(),
        })?;
        let (batch, _) = *x.shape();
        if labels.len() != batch.0 {
            return Err(Error::Shape(format!(
                "{}: {} labels for a batch of {}",
                self.owner,
                labels.len(),
                batch.0
            )));
        }
        let c = match &self.embedding {
            Some(e) => e.forward(params, labels, self.owner)?,
            None => lift(self.one_hot(params.device(), labels)?),
        };
        Ok((x, c).concat_along(Axis::<1>))
    }

    /// # Shapes
    /// `labels: [Batch]` → `(Batch, A = classes)`
    fn one_hot<D: Backend>(&self, dev: &D, labels: &[usize]) -> Result<Tensor<(Batch, A), f32, D>> {
        check_labels(labels, self.classes, self.owner)?;
        let mut v = vec![0.0; labels.len() * self.classes];
        for (row, &l) in labels.iter().enumerate() {
            v[row * self.classes + l] = 1.0;
        }
        let classes = A::from_size(self.classes).expect("runtime axes take any size");
        Ok(dev.tensor_from_vec(v, (Batch(labels.len()), classes)))
    }
}
