//! How the CPU kernels get their buffers: inputs read in place, outputs recycled from dfdx's
//! cache, and gradients written over new buffers or added to those another op filled.

use dfdx::prelude::*;

use super::{read_out, residual_norm_store, rows_store, same_as_generic, K, N};
use crate::gradcheck::GradCheck;
use crate::kernels::{cpu, generic, Weight};
use crate::layers::Activation;
use crate::params::{ParamId, ParamStore};

/// Two additions of vaezoo's dfdx (vendor/dfdx/PATCHES.md) that the kernels rest on.
#[test]
fn cpu_values_are_read_in_place_and_cached_buffers_come_back_unfilled() {
    let dev = Cpu::default();
    dev.enable_cache();
    let values = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let t = dev.tensor_from_vec(values.to_vec(), (2usize, 3usize));
    assert_eq!(t.contiguous_values(), Some(&values[..]));
    // Strides out of logical order, or a broadcast: no in-place view.
    let transposed = t.clone().permute::<_, Axes2<1, 0>>();
    assert_eq!(transposed.contiguous_values(), None);
    let row = dev.tensor_from_vec(values[..3].to_vec(), (3usize,));
    let broadcast = row.broadcast_like::<_, Axis<0>>(&(2usize, 3usize));
    assert_eq!(broadcast.contiguous_values(), None);
    // The last owner's values, where `try_alloc_len` would have zero-filled them; then, with
    // nothing of that size left in the cache, zeros.
    drop((t, transposed));
    let recycled = dev.try_alloc_recycled::<f32>(6).unwrap();
    assert_eq!(&recycled[..], &values[..]);
    assert_eq!(
        &dev.try_alloc_recycled::<f32>(6).unwrap()[..],
        &[0.0; 6][..]
    );
}

/// `try_alloc_copy` (another addition of vaezoo's dfdx) copies into a cached buffer of the
/// same length or into a new allocation, small (on the calling thread) or large (on the pool).
#[test]
fn copies_land_in_cached_and_new_buffers_alike() {
    let dev = Cpu::default();
    dev.enable_cache();
    for len in [7, 100_003] {
        let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
        let fresh = dev.try_alloc_copy(&values).unwrap();
        assert_eq!(&fresh[..], &values[..], "new allocation of {len}");
        let address = fresh.as_ptr();
        drop(fresh);
        let shifted: Vec<f32> = values.iter().map(|v| v + 1.0).collect();
        let cached = dev.try_alloc_copy(&shifted).unwrap();
        assert_eq!(cached.as_ptr(), address, "the cached buffer of {len}");
        assert_eq!(&cached[..], &shifted[..], "cached buffer of {len}");
    }
}

/// Inputs that reach the loss through two fast ops get the sum of both gradients: the first
/// op to reach each one writes over a new buffer, the second adds to it (x, w and b through a
/// linear over kept rows and a dense one; x as both terms of a residual LayerNorm).
#[test]
fn gradients_of_inputs_used_twice_add_up() {
    let keep: Vec<bool> = (0..8).map(|i| i % 3 != 1).collect();
    let p = rows_store(keep.len(), N);
    for out_in in [false, true] {
        let loss = |p: &ParamStore<Cpu>, fast: bool| {
            let (m, n) = (keep.len(), N);
            let x = || p.get(ParamId(0), (m, K));
            let w = || match out_in {
                true => Weight::OutIn(p.get(ParamId(1), (n, K))),
                false => Weight::InOut(p.get(ParamId(1), (K, n))),
            };
            let b = || Some(p.get(ParamId(2), (n,)));
            let act = Activation::Tanh;
            let (y1, y2) = if fast {
                let kept = cpu::linear::forward_rows(x(), w(), b(), act, Some(&keep), None);
                (kept, cpu::linear::forward(x(), w(), b(), act))
            } else {
                let kept = generic::linear_rows(x(), w(), b(), act, &keep, None);
                (kept, generic::linear(x(), w(), b(), act))
            };
            read_out(p, y1 + y2, 3)
        };
        same_as_generic(&p, |p| loss(p, true), |p| loss(p, false));
    }
    // dfdx's own add refuses a tensor added to itself: finite differences are the reference.
    let mut p = residual_norm_store(6, 5);
    GradCheck::default()
        .run(&mut p, |p| {
            let x = || p.get(ParamId(0), (6, 5));
            let (g, b) = (p.get(ParamId(2), (5,)), p.get(ParamId(3), (5,)));
            let y = cpu::layer_norm::forward_residual(x(), Some((x(), None)), g, b, 1e-5);
            read_out(p, y, 4)
        })
        .unwrap();
}
