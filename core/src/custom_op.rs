//! Custom element-wise ops whose values and derivatives are computed on the host, recorded on
//! dfdx's tape with a hand-written backward (the recipe of DESIGN.md: split the tape, make the
//! output, register the backward op after the output exists, put the tape back).
//!
//! Special functions dfdx lacks (lgamma, digamma, Gamma sampling with implicit gradients) are
//! built on [`with_host_derivative`].

use std::sync::Mutex;

use dfdx::prelude::*;
use dfdx::tensor::Storage;

use crate::error::Error;

/// The first error a backward op met since the last [`take_backward_failure`].
static BACKWARD_FAILURE: Mutex<Option<Error>> = Mutex::new(None);

/// Records an error met inside a backward op (dfdx's backward can only carry the device's
/// error type), to be picked up with [`take_backward_failure`] after `backward()`. The op
/// itself must then leave the gradients untouched.
pub fn record_backward_failure(error: Error) {
    let mut slot = BACKWARD_FAILURE.lock().unwrap_or_else(|p| p.into_inner());
    slot.get_or_insert(error);
}

/// The error a backward op recorded since the last call, if any; callers that run
/// `backward()` check it before using the gradients.
pub fn take_backward_failure() -> Option<Error> {
    let mut slot = BACKWARD_FAILURE.lock().unwrap_or_else(|p| p.into_inner());
    slot.take()
}

/// Devices whose gradient buffers the host can add into.
pub trait HostGrad<E: Dtype>: Storage<E> {
    /// `grad[i] += host[i]` for every element.
    fn accumulate(&self, grad: &mut Self::Vec, host: &[E]) -> Result<(), Self::Err>;

    /// The gradient buffer as a host vector, where the device keeps it on the host (the CPU):
    /// it can then be swapped with another of the same length instead of copied.
    fn host_slot(grad: &mut Self::Vec) -> Option<&mut Vec<E>>;

    /// A tensor's values as a host slice, where the device keeps them on the host in logical
    /// order (the CPU, see dfdx's `contiguous_values`).
    fn values<S: Shape>(t: &Tensor<S, E, Self>) -> Option<&[E]>;

    /// [`Self::values`] to write in place, where besides no other tensor shares them.
    fn values_mut<S: Shape>(t: &mut Tensor<S, E, Self>) -> Option<&mut [E]>;
}

impl<E: Dtype> HostGrad<E> for Cpu {
    fn accumulate(&self, grad: &mut Self::Vec, host: &[E]) -> Result<(), Self::Err> {
        for (g, h) in grad.iter_mut().zip(host) {
            *g += *h;
        }
        Ok(())
    }

    fn host_slot(grad: &mut Self::Vec) -> Option<&mut Vec<E>> {
        Some(&mut **grad)
    }

    fn values<S: Shape>(t: &Tensor<S, E, Self>) -> Option<&[E]> {
        t.contiguous_values()
    }

    fn values_mut<S: Shape>(t: &mut Tensor<S, E, Self>) -> Option<&mut [E]> {
        t.contiguous_values_mut()
    }
}

#[cfg(feature = "cuda")]
impl<E: Dtype + cudarc::driver::DeviceRepr> HostGrad<E> for Cuda {
    fn accumulate(&self, grad: &mut Self::Vec, host: &[E]) -> Result<(), Self::Err> {
        let dev = grad.device();
        let mut current = dev.dtoh_sync_copy(&**grad)?;
        for (g, h) in current.iter_mut().zip(host) {
            *g += *h;
        }
        dev.htod_sync_copy_into(&current, &mut **grad)?;
        Ok(())
    }

    fn host_slot(_grad: &mut Self::Vec) -> Option<&mut Vec<E>> {
        None
    }

    fn values<S: Shape>(_t: &Tensor<S, E, Self>) -> Option<&[E]> {
        None
    }

    fn values_mut<S: Shape>(_t: &mut Tensor<S, E, Self>) -> Option<&mut [E]> {
        None
    }
}

/// An element-wise op whose `values` and `derivatives` (d value / d x, element by element, in
/// `x`'s logical order) were computed on the host: the output holds `values`, and the backward
/// pass adds `grad_out ⊙ derivatives` to the gradient of `x`.
///
/// # Shapes
/// `x: S` → `S`
///
/// # Panics
/// If `values` or `derivatives` do not have one entry per element of `x`.
pub fn with_host_derivative<S, E, D, T>(
    x: Tensor<S, E, D, T>,
    values: Vec<E>,
    derivatives: Vec<E>,
) -> Tensor<S, E, D, T>
where
    S: Shape,
    E: Dtype,
    D: Device<E> + HostGrad<E>,
    T: Tape<E, D>,
{
    let shape = *x.shape();
    assert_eq!(values.len(), shape.num_elements(), "one value per element");
    assert_eq!(
        derivatives.len(),
        shape.num_elements(),
        "one derivative per element"
    );
    // A contiguous input, so that its gradient buffer is laid out in logical order.
    let x = x.reshape_like(&shape);
    let (x, mut tape) = x.split_tape();
    let out = x.device().tensor_from_vec(values, shape);
    if T::OWNS_TAPE {
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        let dev = x.device().clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&out_ghost)?;
            let grad_out = grads.get(&out_ghost).as_vec();
            let grad_x: Vec<E> = grad_out
                .iter()
                .zip(&derivatives)
                .map(|(&g, &d)| g * d)
                .collect();
            dev.accumulate(grads.get_or_alloc_mut(&x_ghost)?, &grad_x)
        });
    }
    out.put_tape(tape)
}

/// `f` applied element-wise on the host, where `f(x) = (value, derivative)`.
///
/// # Shapes
/// `x: S` → `S`
pub fn map_with_derivative<S, E, D, T>(
    x: Tensor<S, E, D, T>,
    f: impl Fn(E) -> (E, E),
) -> Tensor<S, E, D, T>
where
    S: Shape,
    E: Dtype,
    D: Device<E> + HostGrad<E>,
    T: Tape<E, D>,
{
    let (values, derivatives) = x.as_vec().into_iter().map(f).unzip();
    with_host_derivative(x, values, derivatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_gradients_come_from_the_host_functions() {
        let dev = Cpu::default();
        let x: Tensor<Rank1<3>, f64, _> = dev.tensor([0.5, 1.0, 2.0]);
        let y = map_with_derivative(x.leaky_trace(), |v: f64| (v.sin(), v.cos()));
        assert_eq!(y.as_vec(), vec![0.5f64.sin(), 1.0f64.sin(), 2.0f64.sin()]);
        let g = (y * 2.0).sum().backward();
        let expected: Vec<f64> = [0.5f64, 1.0, 2.0].iter().map(|v| 2.0 * v.cos()).collect();
        assert_eq!(g.get(&x).as_vec(), expected);
    }

    #[test]
    fn a_broadcast_input_sums_its_gradient() {
        let dev = Cpu::default();
        let x: Tensor<Rank1<2>, f64, _> = dev.tensor([1.0, 3.0]);
        let wide = x.leaky_trace().broadcast::<Rank2<3, 2>, _>();
        let y = map_with_derivative(wide, |v: f64| (v * v, 2.0 * v));
        let g = y.sum().backward();
        assert_eq!(g.get(&x).as_vec(), vec![3.0 * 2.0, 3.0 * 6.0]);
    }
}
