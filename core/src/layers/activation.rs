//! Element-wise activations, selectable from a spec.

use dfdx::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Traced};

/// An element-wise non-linearity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// max(x, 0)
    #[default]
    Relu,
    /// tanh(x)
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// GELU, tanh approximation
    Gelu,
    /// max(x, 0.01 x)
    LeakyRelu,
    /// x
    Identity,
}

impl Activation {
    /// # Shapes
    /// any `S` → `S`
    pub fn forward<S: Shape, D: Backend>(self, x: Traced<S, D>) -> Traced<S, D> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Gelu => x.fast_gelu(),
            Activation::LeakyRelu => dfdx::tensor_ops::leakyrelu(x, 0.01),
            Activation::Identity => x,
        }
    }
}
