//! The CPU fast path: fused f32 kernels recorded on dfdx's tape with hand-written backward
//! passes. Each kernel reads its inputs in place ([`host_values`]), computes on host slices
//! and hands its output back as a new tensor.
//!
//! Every buffer of a kernel comes from dfdx's allocation cache ([`buffer`]) and returns to it:
//! a dropped tensor's storage goes into the cache (when it is enabled, as in training), so
//! outputs allocated elsewhere would grow it by their size at every step, and fresh
//! allocations fault their pages in every time.

use dfdx::prelude::*;
use dfdx::tensor::Storage;
use rayon::prelude::*;

/// A `Vec<f32>` (through `Deref`) from dfdx's cache, to which it returns when dropped.
pub(crate) type Buffer = <Cpu as Storage<f32>>::Vec;

/// A zeroed buffer of `len` values from `dev`'s cache, for a kernel that adds into it.
///
/// # Panics
/// When out of memory, as dfdx's own ops.
pub(crate) fn buffer(dev: &Cpu, len: usize) -> Buffer {
    dev.try_alloc_len(len).expect("out of memory")
}

/// A buffer of `len` values from `dev`'s cache for a kernel that writes every one of them
/// before it reads any: it holds the values of whatever last used it (never uninitialised
/// memory), which saves the zero fill of [`buffer`].
///
/// # Panics
/// When out of memory, as dfdx's own ops.
pub(crate) fn recycled(dev: &Cpu, len: usize) -> Buffer {
    #[allow(unused_mut)]
    let mut values = dev.try_alloc_recycled(len).expect("out of memory");
    // The kernel tests see NaN wherever a kernel leaves a value of such a buffer unwritten.
    #[cfg(test)]
    values.fill(f32::NAN);
    values
}

/// The values of a tensor in logical order, read in place: a contiguous tensor (every input
/// the kernels flatten with `reshape_like`) shares its storage, any other is copied once.
/// A kernel's own buffer of values (rows gathered from an input) converts into one too.
pub(super) enum HostValues {
    /// A contiguous tensor sharing the input's storage.
    Shared(Tensor<(usize,), f32, Cpu>),
    /// Values the kernel computed.
    Owned(Buffer),
}

impl std::ops::Deref for HostValues {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            Self::Shared(t) => t
                .contiguous_values()
                .expect("a reshaped tensor holds its values in order"),
            Self::Owned(values) => values,
        }
    }
}

/// The values of `t`, borrowed from its storage (see [`HostValues`]); they stay alive, and
/// unchanged, as long as the result does.
pub(super) fn host_values<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> HostValues {
    let n = t.shape().num_elements();
    HostValues::Shared(t.retaped::<NoneTape>().reshape_like(&(n,)))
}

/// A copy of the values of `t` in logical order, for a kernel that changes them in place.
pub(super) fn host_copy<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Buffer {
    buffer_of(t.device(), &host_values(t))
}

/// A tensor of `shape` owning `values` (a buffer of [`buffer`]), without a copy.
pub(super) fn into_tensor<S: Shape>(dev: &Cpu, values: Buffer, shape: S) -> Tensor<S, f32, Cpu> {
    dev.tensor_from_vec(into_vec(values), shape)
}

/// A zeroed vector of `n` values from dfdx's allocation cache, for an output tensor (see
/// [`into_tensor`]): dfdx files a dropped tensor's buffer in its cache, so outputs taken from
/// elsewhere would grow it at every step.
pub(super) fn cached_zeros(dev: &Cpu, n: usize) -> Vec<f32> {
    into_vec(buffer(dev, n))
}

/// The vector inside a cached buffer, which leaves the cache with it.
fn into_vec(mut values: Buffer) -> Vec<f32> {
    let data = std::mem::take(&mut *values);
    // The emptied shell owns no memory; dropped, it would file an empty allocation in the
    // cache at every call.
    std::mem::forget(values);
    data
}

/// Takes the gradient buffer of a ghost tensor out of the gradients (allocated as zeros if
/// absent), to be read while other gradients are written, and handed back with [`put_grad`].
/// (Macros: dfdx does not export the trait that names ghost tensors.)
macro_rules! take_grad {
    ($grads:expr, $ghost:expr) => {
        std::mem::take(&mut **$grads.get_or_alloc_mut($ghost)?)
    };
}

/// The gradient buffer of a ghost tensor for a kernel that writes every one of its values,
/// and whether to add to them: `true` where another op's gradient is there already, `false`
/// for a new buffer from the cache, whose stale values the kernel must all write over (which
/// saves the zero fill and the read of a zeroed buffer).
macro_rules! grad_to_write {
    ($grads:expr, $ghost:expr) => {{
        let (values, add) = $grads.try_get_or_alloc_with($ghost, |dev, len| {
            Ok($crate::kernels::cpu::recycled(dev, len))
        })?;
        (&mut **values, add)
    }};
}

/// Returns a buffer taken with [`take_grad`].
macro_rules! put_grad {
    ($grads:expr, $ghost:expr, $values:expr) => {
        **$grads.get_or_alloc_mut($ghost)? = $values
    };
}

/// Below this many values a row-wise pass stays on the calling thread: waking rayon's pool
/// costs more than it saves.
pub(super) const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Runs `f(row_index, row, slot)` over the rows of `data` (`cols` values each) with one
/// `slot` per row, on rayon's pool when `data` is large. Each row is handled by one call, so
/// the results do not depend on the number of threads.
pub(super) fn for_each_row<T: Send>(
    data: &mut [f32],
    cols: usize,
    slots: &mut [T],
    f: impl Fn(usize, &mut [f32], &mut T) + Sync + Send,
) {
    if cols == 0 {
        return;
    }
    if data.len() >= PARALLEL_MIN_ELEMENTS {
        data.par_chunks_exact_mut(cols)
            .zip(slots.par_iter_mut())
            .enumerate()
            .for_each(|(i, (row, slot))| f(i, row, slot));
    } else {
        data.chunks_exact_mut(cols)
            .zip(slots.iter_mut())
            .enumerate()
            .for_each(|(i, (row, slot))| f(i, row, slot));
    }
}

/// Runs `f(range, chunk)` over the chunks of `data` (`range`: the chunk's place in `data`, for
/// slicing other arrays alike), on rayon's pool when `data` is large. Chunks have a fixed
/// length, so the results do not depend on the number of threads.
pub(super) fn for_each_chunk(
    data: &mut [f32],
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + Send,
) {
    const CHUNK: usize = 1 << 14;
    let run = |(i, d): (usize, &mut [f32])| f(i * CHUNK..i * CHUNK + d.len(), d);
    if data.len() >= PARALLEL_MIN_ELEMENTS {
        data.par_chunks_mut(CHUNK).enumerate().for_each(run);
    } else {
        data.chunks_mut(CHUNK).enumerate().for_each(run);
    }
}

/// Runs `f` over matching chunks of `data` and `other` (`other` may be empty: then `f` gets
/// empty slices), as [`for_each_chunk`].
pub(super) fn zip_chunks(
    data: &mut [f32],
    other: &[f32],
    f: impl Fn(&mut [f32], &[f32]) + Sync + Send,
) {
    for_each_chunk(data, |range, d| {
        let start = range.start.min(other.len());
        f(d, &other[start..range.end.min(other.len())])
    });
}

/// A buffer from dfdx's cache holding a copy of `values` (a new allocation, written once by
/// the copy, when the cache has none of that length).
///
/// # Panics
/// When out of memory, as dfdx's own ops.
pub(super) fn buffer_of(dev: &Cpu, values: &[f32]) -> Buffer {
    dev.try_alloc_copy(values).expect("out of memory")
}

/// `dst += src` where `add`, else `dst = src` (a buffer from [`grad_to_write`]); the two have
/// the same length.
pub(crate) fn write_or_add(dst: &mut [f32], src: &[f32], add: bool) {
    assert_eq!(dst.len(), src.len(), "one value per value");
    match add {
        true => add_into(dst, src),
        false => zip_chunks(dst, src, |d, s| d.copy_from_slice(s)),
    }
}

/// `dst[i] += src[i]` (as many values as the shorter of the two has).
pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    let n = dst.len().min(src.len());
    zip_chunks(&mut dst[..n], &src[..n], |d, s| {
        for (d, s) in d.iter_mut().zip(s) {
            *d += *s;
        }
    });
}

pub(crate) mod attention;
pub(crate) mod bernoulli;
pub(crate) mod denoising_keys;
pub(crate) mod embedding;
mod fastmath;
pub(crate) mod kl_gaussian;
pub(crate) mod layer_norm;
pub(crate) mod linear;
pub(crate) mod linear_nll;
pub(crate) mod mixture;
pub(crate) mod nll;
mod rows;
pub(crate) mod sq_norm;

use rows::{add_rows, compact_rows, fill_rows, gather_rows, row_plan, scatter_rows, zero_rows};
