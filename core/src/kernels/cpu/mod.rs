//! The CPU fast path: fused f32 kernels recorded on dfdx's tape with hand-written backward
//! passes. Each kernel copies its inputs out of dfdx once, computes on host slices and hands
//! its output back as a new tensor.

use dfdx::prelude::*;
use dfdx::tensor::Storage;

/// The values of a contiguous tensor, in logical order.
pub(super) fn host_values<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut out = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut out);
    out
}

/// A zeroed buffer of `n` values from dfdx's allocation cache (fresh when it holds none of that
/// size). Output tensors are made from these: dfdx puts a tensor's buffer into its cache when
/// the tensor is dropped, so a fresh `Vec` behind every output would make the cache (on, as in
/// training) grow by that much at every step, while this one is taken out and put back.
pub(super) fn cached_zeros(dev: &Cpu, n: usize) -> Vec<f32> {
    let mut shell = dev.try_alloc_len(n).expect("a host allocation");
    let buf = std::mem::take(&mut *shell);
    // Dropped, the emptied shell would add a zero-length entry to the cache.
    std::mem::forget(shell);
    buf
}

/// Takes the gradient buffer of a ghost tensor out of the gradients (allocated as zeros if
/// absent), to be read while other gradients are written, and handed back with [`put_grad`].
/// (Macros: dfdx does not export the trait that names ghost tensors.)
macro_rules! take_grad {
    ($grads:expr, $ghost:expr) => {
        std::mem::take(&mut **$grads.get_or_alloc_mut($ghost)?)
    };
}

/// Returns a buffer taken with [`take_grad`].
macro_rules! put_grad {
    ($grads:expr, $ghost:expr, $values:expr) => {
        **$grads.get_or_alloc_mut($ghost)? = $values
    };
}

/// `dst[i] += src[i]`.
pub(super) fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

mod fastmath;
pub(crate) mod kl_gaussian;
pub(crate) mod layer_norm;
pub(crate) mod linear;
pub(crate) mod mixture;
pub(crate) mod nll;
mod scratch;
