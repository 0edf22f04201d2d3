//! Element-wise activations, selectable from a spec.

use dfdx::prelude::*;
use num_traits::Float;
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
        self.apply(x)
    }

    /// The activation as dfdx ops, in any float type and with any tape.
    ///
    /// # Shapes
    /// any `S` → `S`
    pub fn apply<S: Shape, E: Dtype + Float, D: Device<E>, T: Tape<E, D>>(
        self,
        x: Tensor<S, E, D, T>,
    ) -> Tensor<S, E, D, T> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Gelu => x.fast_gelu(),
            Activation::LeakyRelu => dfdx::tensor_ops::leakyrelu(x, E::from(LEAKY_SLOPE).unwrap()),
            Activation::Identity => x,
        }
    }

    /// Whether the derivative can be computed from the output alone (so a fused kernel
    /// need not keep the pre-activation).
    pub(crate) fn derivative_from_output(self) -> bool {
        !matches!(self, Activation::Gelu)
    }

    /// Whether the derivative depends on the output's sign alone, so an output scaled by
    /// positive factors (dropout's survivors) still gives it.
    pub(crate) fn derivative_from_sign(self) -> bool {
        matches!(self, Activation::Relu | Activation::LeakyRelu)
    }

    /// The activation of one value (the CPU kernels' scalar form of [`Self::apply`]).
    #[inline]
    pub(crate) fn scalar(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Gelu => {
                let inner = std::f32::consts::FRAC_2_PI.sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            Activation::LeakyRelu => {
                if x > 0.0 {
                    x
                } else {
                    LEAKY_SLOPE as f32 * x
                }
            }
            Activation::Identity => x,
        }
    }

    /// d output / d input at pre-activation `x` with output `y` (`x` is only read by GELU).
    #[inline]
    pub(crate) fn scalar_derivative(self, x: f32, y: f32) -> f32 {
        match self {
            Activation::Relu => f32::from(u8::from(y > 0.0)),
            Activation::Tanh => 1.0 - y * y,
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Gelu => {
                let beta = std::f32::consts::FRAC_2_PI.sqrt();
                let kappa = 0.044715;
                let t = (beta * (x + kappa * x * x * x)).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * beta * (1.0 + 3.0 * kappa * x * x)
            }
            Activation::LeakyRelu => {
                if y > 0.0 {
                    1.0
                } else {
                    LEAKY_SLOPE as f32
                }
            }
            Activation::Identity => 1.0,
        }
    }
}

/// The negative slope of [`Activation::LeakyRelu`].
const LEAKY_SLOPE: f64 = 0.01;
