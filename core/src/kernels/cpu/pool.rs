//! Host buffers reused from step to step: a kernel takes a [`Buffer`] of the length it needs,
//! and the buffer goes back to the pool when dropped (after the backward pass that read it),
//! so large activations are not faulted in from fresh pages at every step.
//!
//! A taken buffer holds whatever values its last user left: every kernel overwrites what it
//! reads. The pool keeps at most [`MAX_POOLED`] buffers, dropping the smallest beyond that.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// How many idle buffers the pool keeps.
const MAX_POOLED: usize = 64;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A host buffer of `f32` that returns to the pool when dropped.
pub(crate) struct Buffer(Vec<f32>);

impl Buffer {
    /// A buffer of `len` values with unspecified contents: the smallest pooled buffer that
    /// fits, or a new one.
    pub fn take(len: usize) -> Self {
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        };
        let mut v = reused.unwrap_or_else(|| Vec::with_capacity(len));
        // Values already written stay (the caller overwrites them); only new ones are zeroed.
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        Self(v)
    }

    /// A buffer holding a copy of `values`.
    pub fn copy_of(values: &[f32]) -> Self {
        let mut b = Self::take(values.len());
        b.copy_from_slice(values);
        b
    }

    /// The values as a plain vector, leaving the pool for good (to become a tensor).
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.0)
    }
}

impl Deref for Buffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Buffer {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.push(v);
        if pool.len() > MAX_POOLED {
            let smallest = (0..pool.len()).min_by_key(|&i| pool[i].capacity());
            if let Some(i) = smallest {
                pool.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_the_asked_length() {
        let mut b = Buffer::take(1000);
        assert_eq!(b.len(), 1000);
        b.fill(1.0);
        drop(b);
        // Shorter or longer than a pooled buffer: always the length asked for.
        assert_eq!(Buffer::take(800).len(), 800);
        assert_eq!(Buffer::take(1200).len(), 1200);
        assert_eq!(Buffer::copy_of(&[1.0, 2.0])[..], [1.0, 2.0]);
        assert_eq!(Buffer::take(3).into_vec().len(), 3);
    }
}
