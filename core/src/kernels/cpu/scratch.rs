//! Host buffers the kernels keep for themselves (copies of their inputs, values saved for the
//! backward pass), taken from a small pool and given back after use. A fresh `Vec` of a few MB
//! is page-faulted in and zeroed by the kernel at every call; a pooled one is neither (its old
//! contents are left in place, so callers write every element they later read).

use std::sync::{Mutex, PoisonError};

use dfdx::prelude::*;

/// At most this many idle buffers are kept (a step of the NVIB layer uses about a dozen).
const KEEP: usize = 32;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `n` values whose contents are unspecified (stale values or zeros).
pub(crate) fn scratch(n: usize) -> Vec<f32> {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    // The buffer of exactly this length (no fill), else the smallest that holds it.
    let pick = pool.iter().position(|b| b.len() == n).or_else(|| {
        (0..pool.len())
            .filter(|&i| pool[i].capacity() >= n)
            .min_by_key(|&i| pool[i].capacity())
    });
    let mut buf = pick.map_or_else(Vec::new, |i| pool.swap_remove(i));
    drop(pool);
    buf.resize(n, 0.0);
    buf
}

/// The values of a contiguous tensor, in logical order, in a [`scratch`] buffer.
pub(crate) fn scratch_values<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut out = scratch(t.shape().num_elements());
    t.copy_into(&mut out);
    out
}

/// Returns a buffer to the pool (dropped when the pool is full).
pub(crate) fn give_back(buf: Vec<f32>) {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < KEEP && buf.capacity() > 0 {
        pool.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let mut a = scratch(1000);
        a.fill(3.0);
        let ptr = a.as_ptr();
        give_back(a);
        // Tests run in parallel and share the pool: another test may take it first.
        let b = scratch(1000);
        assert_eq!(b.len(), 1000);
        if b.as_ptr() == ptr {
            assert!(b.iter().all(|&v| v == 3.0), "contents are left in place");
        }
        give_back(b);
        assert_eq!(scratch(10).len(), 10);
        assert_eq!(scratch(5000).len(), 5000);
        let t = Cpu::default().tensor([1.0f32, 2.0, 3.0]);
        assert_eq!(scratch_values(&t), vec![1.0, 2.0, 3.0]);
    }
}
