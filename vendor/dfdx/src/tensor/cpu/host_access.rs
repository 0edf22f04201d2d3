//! vaezoo's additions to dfdx 0.13 (see PATCHES.md): borrowed access to a CPU tensor's values,
//! and buffers from the allocation cache that are not zero-filled, for kernels that read their
//! inputs in place and overwrite every value of their outputs, and for an optimiser that
//! updates parameters in place.

use super::{CachableVec, Cpu, CpuError};
use crate::shapes::{Shape, Unit};
use crate::tensor::Tensor;

impl<S: Shape, E: Unit, T> Tensor<S, E, Cpu, T> {
    /// The tensor's values in logical (row-major) order, borrowed, when its storage holds them
    /// in that order (no broadcast or permuted strides); `None` otherwise.
    pub fn contiguous_values(&self) -> Option<&[E]> {
        let values: &[E] = &self.data.data;
        (self.strides == self.shape.strides() && values.len() == self.shape.num_elements())
            .then_some(values)
    }

    /// The tensor's values in logical order, mutably, when its storage holds them in that order
    /// and no other tensor shares it; `None` otherwise.
    pub fn contiguous_values_mut(&mut self) -> Option<&mut [E]> {
        let contiguous = self.strides == self.shape.strides();
        let numel = self.shape.num_elements();
        let values: &mut [E] = &mut std::sync::Arc::get_mut(&mut self.data)?.data;
        (contiguous && values.len() == numel).then_some(values)
    }
}

impl Cpu {
    /// A buffer of `len` values for a caller that overwrites every one of them: taken from the
    /// allocation cache, it holds the values it held last (never uninitialised memory) instead
    /// of being zero-filled; a new allocation is zeros.
    pub fn try_alloc_recycled<E: Unit>(&self, len: usize) -> Result<CachableVec<E>, CpuError> {
        let data = match self.cached_vec(len) {
            Some(data) => data,
            None => super::allocate::filled_vec(len, Default::default())?,
        };
        Ok(CachableVec {
            data,
            cache: self.cache.clone(),
        })
    }

    /// A buffer holding a copy of `values`: from the allocation cache when it has one of that
    /// length, else a new allocation that the copy writes once (no zero fill first).
    pub fn try_alloc_copy<E: Unit>(&self, values: &[E]) -> Result<CachableVec<E>, CpuError> {
        let len = values.len();
        let data = match self.cached_vec(len) {
            Some(mut data) => {
                super::allocate::copy_values(&mut data, values);
                data
            }
            None => super::allocate::copied_vec(values)?,
        };
        Ok(CachableVec {
            data,
            cache: self.cache.clone(),
        })
    }

    /// An allocation of `len` values from the cache, holding the values it held last; `None`
    /// when the cache has none of that length.
    fn cached_vec<E: Unit>(&self, len: usize) -> Option<Vec<E>> {
        let allocation = self.cache.try_pop::<E>(len)?;
        // SAFETY: the cache hands out only allocations it received from a dropped
        // `CachableVec<E'>` of `len` initialised values of a type with `E`'s size and
        // alignment, allocated by the global allocator with capacity `len` (`shrink_to_fit`
        // before insertion), as `try_alloc_elem` relies on; every dtype is a plain number, for
        // which any initialised bytes are a valid value.
        Some(unsafe { Vec::from_raw_parts(allocation.0 as *mut E, len, len) })
    }
}
