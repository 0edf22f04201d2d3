//! Fused `gate ⊙ u + shift` with the gate and the shift side by side in each row of one
//! tensor: one pass forward, one backward, no slice of the packed rows copied out.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use super::{buffer, host_values, into_tensor};
use crate::kernels::generic::check_halves;
use crate::kernels::Tr;

/// See [`crate::kernels::Kernels::mul_add_halves`].
pub(crate) fn forward<R: Dim, C2: Dim, C: Dim>(
    x: Tr<(R, C2), f32, Cpu>,
    u: Tr<(R, C), f32, Cpu>,
) -> Tr<(R, C), f32, Cpu> {
    let shape = *u.shape();
    let (r, c) = (shape.0.size(), shape.1.size());
    check_halves(x.shape().1.size(), c);
    let (x, x_tape) = x.reshape_like(&(2 * r * c,)).split_tape();
    let (u, u_tape) = u.reshape_like(&(r * c,)).split_tape();
    let mut tape = x_tape.merge(u_tape);
    let (xs, us) = (host_values(&x), host_values(&u));
    let mut y = buffer(x.device(), r * c);
    if c > 0 {
        for ((y, x), u) in y
            .chunks_exact_mut(c)
            .zip(xs.chunks_exact(2 * c))
            .zip(us.chunks_exact(c))
        {
            let (gate, shift) = x.split_at(c);
            for (((y, g), s), u) in y.iter_mut().zip(gate).zip(shift).zip(u) {
                *y = g * u + s;
            }
        }
    }
    let out = into_tensor(x.device(), y, shape);
    let (out_ghost, x_ghost, u_ghost) = (out.ghost(), x.ghost(), u.ghost());
    tape.add_backward_op(move |grads| {
        if c == 0 {
            return Ok(());
        }
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        let gx = grads.get_or_alloc_mut(&x_ghost)?;
        for ((gx, g), u) in gx
            .chunks_exact_mut(2 * c)
            .zip(g.chunks_exact(c))
            .zip(us.chunks_exact(c))
        {
            let (d_gate, d_shift) = gx.split_at_mut(c);
            for ((d, g), u) in d_gate.iter_mut().zip(g).zip(u) {
                *d += g * u;
            }
            super::add_into(d_shift, g);
        }
        let gu = grads.get_or_alloc_mut(&u_ghost)?;
        for ((gu, g), x) in gu
            .chunks_exact_mut(c)
            .zip(g.chunks_exact(c))
            .zip(xs.chunks_exact(2 * c))
        {
            for ((d, g), gate) in gu.iter_mut().zip(g).zip(x) {
                *d += g * gate;
            }
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}
