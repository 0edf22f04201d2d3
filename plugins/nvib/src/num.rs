//! The float types and devices the NVIB maths is generic over: f32 inside models, f64 where the
//! official code computes in f64 and for the golden checks.

use dfdx::prelude::*;
use vaezoo_core::custom_op::HostGrad;
use vaezoo_core::kernels::Kernels;

/// A float element type (f32 or f64).
pub trait Real: Dtype + num_traits::Float + num_traits::FloatConst {}
impl<E: Dtype + num_traits::Float + num_traits::FloatConst> Real for E {}

/// A device computing in `E`, whose gradients custom ops can add into, with its fused kernels.
pub trait Dev<E: Real>: Device<E> + HostGrad<E> + Kernels<E> {}
impl<E: Real, D: Device<E> + HostGrad<E> + Kernels<E>> Dev<E> for D {}

/// A tensor recording its operations on a tape, in element type `E`.
pub type Tr<S, E, D> = Tensor<S, E, D, OwnedTape<E, D>>;

/// The constant `x` in `E`.
pub fn c<E: Real>(x: f64) -> E {
    E::from_f64(x).expect("every f64 constant converts to a float type")
}

/// The smallest positive normal number of `E` (torch's `finfo.tiny`).
pub fn tiny<E: Real>() -> E {
    E::min_positive_value()
}
