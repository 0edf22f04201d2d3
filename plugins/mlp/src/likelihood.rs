//! Observation models p(x | z) for the MLP decoder, as negative log-likelihoods in nats.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vaezoo_core::axes::{Batch, Feature};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::params::{ParamBuilder, ParamId, ParamStore};
use vaezoo_core::{Backend, Traced};

/// The likelihood of the observations given the decoder's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Likelihood {
    /// Bernoulli with the decoder output as logits; on grey levels in [0, 1] this is the
    /// binary cross-entropy, summed over features.
    Bernoulli,
    /// Gaussian with the decoder output as mean and one log-variance per feature.
    Gaussian {
        /// The log-variance (its initial value when learned).
        #[serde(default)]
        log_variance: f32,
        /// Learn the per-feature log-variance instead of fixing it.
        #[serde(default)]
        learn_variance: bool,
    },
}

/// A [`Likelihood`] with its parameters declared.
pub enum BuiltLikelihood {
    /// See [`Likelihood::Bernoulli`].
    Bernoulli,
    /// See [`Likelihood::Gaussian`]; `learned` is the per-feature log-variance parameter.
    Gaussian {
        log_variance: f32,
        learned: Option<ParamId>,
    },
}

impl BuiltLikelihood {
    /// Declares `log_variance` `(features,)` when the variance is learned.
    pub fn new(spec: &Likelihood, params: &mut ParamBuilder, features: usize) -> Self {
        match *spec {
            Likelihood::Bernoulli => BuiltLikelihood::Bernoulli,
            Likelihood::Gaussian {
                log_variance,
                learn_variance,
            } => BuiltLikelihood::Gaussian {
                log_variance,
                learned: learn_variance
                    .then(|| params.constant("log_variance", &[features], log_variance)),
            },
        }
    }

    /// −log p(x | output), summed over features.
    ///
    /// # Shapes
    /// `output: (Batch, Feature)`, `x: (Batch, Feature)` → `(Batch,)`
    pub fn nll<D: Backend>(
        &self,
        params: &ParamStore<D>,
        output: Traced<(Batch, Feature), D>,
        x: Tensor<(Batch, Feature), f32, D>,
    ) -> Traced<(Batch,), D> {
        let ln_2pi = (2.0 * std::f32::consts::PI).ln();
        match self {
            BuiltLikelihood::Bernoulli => D::bernoulli_nll(output, &x),
            BuiltLikelihood::Gaussian {
                log_variance,
                learned: None,
            } => {
                let features = x.shape().1 .0 as f32;
                let sq = (output - x).square() * (0.5 * (-log_variance).exp());
                sq.sum::<(Batch,), Axis<1>>() + 0.5 * (log_variance + ln_2pi) * features
            }
            BuiltLikelihood::Gaussian {
                learned: Some(id), ..
            } => {
                let shape = *output.shape();
                let lv = params.get(*id, (shape.1,)).broadcast_like(&shape);
                let sq = (output - x).square() * (lv.retaped::<OwnedTape<f32, D>>() * -1.0).exp();
                ((sq + lv + ln_2pi) * 0.5).sum::<(Batch,), Axis<1>>()
            }
        }
    }

    /// The mean of p(x | output) in data units.
    ///
    /// # Shapes
    /// `(Batch, Feature)` → `(Batch, Feature)`
    pub fn mean<D: Backend>(
        &self,
        output: Traced<(Batch, Feature), D>,
    ) -> Tensor<(Batch, Feature), f32, D> {
        let mean = match self {
            BuiltLikelihood::Bernoulli => output.sigmoid(),
            BuiltLikelihood::Gaussian { .. } => output,
        };
        mean.retaped()
    }
}
