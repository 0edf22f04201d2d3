//! The per-component terms of evaluation-time denoising attention in one pass over μ and
//! logσ² (keys, gate, shift and the logit terms together, saving 1/V), and one backward pass
//! that adds all three outputs' gradients into μ and logσ².

use std::ops::Add;

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use rayon::prelude::*;

use super::fastmath::{exp, ln, LANES};
use super::mixture::{for_each_row_pair, parallel, ROWS_PER_TASK};
use super::{host_values, into_tensor, recycled};
use crate::kernels::denoising_keys::DenoisingKeys;
use crate::kernels::Tr;

/// See [`crate::kernels::MixtureKernels::denoising_keys`]. The history of both inputs and the
/// backward pass ride on `keys`; `values` and `terms` carry empty tapes.
pub(crate) fn forward<B: Dim, C: Dim, P: Dim + Add<Output = P>>(
    mu: Tr<(B, C, P), f32, Cpu>,
    log_var: Tr<(B, C, P), f32, Cpu>,
    s: f64,
    log_det_weight: f64,
) -> DenoisingKeys<B, C, P, f32, Cpu> {
    let (b, c, p) = *mu.shape();
    assert_eq!(*log_var.shape(), (b, c, p), "mu and log_var shapes");
    let (rows, ps) = (b.size() * c.size(), p.size());
    let n = rows * ps;
    let (mu, mu_tape) = mu.reshape_like(&(n,)).split_tape();
    let (log_var, lv_tape) = log_var.reshape_like(&(n,)).split_tape();
    let mut tape = mu_tape.merge(lv_tape);
    let dev = mu.device().clone();
    let (ms, ls) = (host_values(&mu), host_values(&log_var));
    let (s, w) = (s as f32, log_det_weight as f32);
    // Every value of the four buffers is written below.
    let (mut keys, mut values) = (recycled(&dev, n), recycled(&dev, 2 * n));
    let (mut terms, mut inv_v) = (recycled(&dev, rows), recycled(&dev, n));
    let row = |(r, (((key, value), term), inv_v)): Row| {
        let span = r * ps..(r + 1) * ps;
        let (m, l) = (&ms[span.clone()], &ls[span]);
        let (gate, shift) = value.split_at_mut(ps);
        // One elementwise pass, then the two sums over LANES partial sums: both vectorise
        // (exp and ln included).
        let outputs = key.iter_mut().zip(gate.iter_mut()).zip(shift.iter_mut());
        for (((key, gate), shift), ((&m, &l), inv_v)) in
            outputs.zip(m.iter().zip(l).zip(&mut *inv_v))
        {
            let var = exp(l);
            let inv = 1.0 / (var + s);
            (*key, *gate, *shift, *inv_v) = (m * inv, var * inv, s * (m * inv), inv);
        }
        let (half_mahalanobis, log_det) = row_sums(m, key, inv_v);
        *term = -(0.5 * half_mahalanobis + w * log_det);
    };
    if parallel(n) {
        keys.par_chunks_mut(ps)
            .zip(values.par_chunks_mut(2 * ps))
            .zip(terms.par_iter_mut())
            .zip(inv_v.par_chunks_mut(ps))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(row);
    } else {
        keys.chunks_mut(ps)
            .zip(values.chunks_mut(2 * ps))
            .zip(terms.iter_mut())
            .zip(inv_v.chunks_mut(ps))
            .enumerate()
            .for_each(row);
    }
    let keys = into_tensor(&dev, keys, (b, c, p));
    let values = into_tensor(&dev, values, (b, c, p + p));
    let terms = into_tensor(&dev, terms, (b, c));

    let (mu_ghost, lv_ghost) = (mu.ghost(), log_var.ghost());
    let (k_ghost, v_ghost, t_ghost) = (keys.ghost(), values.ghost(), terms.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&k_ghost)?;
        grads.try_alloc_for(&v_ghost)?;
        grads.try_alloc_for(&t_ghost)?;
        let gk = take_grad!(grads, &k_ghost);
        let gv = take_grad!(grads, &v_ghost);
        let gt = take_grad!(grads, &t_ghost);
        let mut gm = take_grad!(grads, &mu_ghost);
        let mut gl = take_grad!(grads, &lv_ghost);
        let add = |(r, (dm, dl)): (usize, (&mut [f32], &mut [f32]))| {
            let span = r * ps..(r + 1) * ps;
            let (m, l, inv_v) = (&ms[span.clone()], &ls[span.clone()], &inv_v[span.clone()]);
            let gk = &gk[span];
            let (g_gate, g_shift) = gv[2 * r * ps..2 * (r + 1) * ps].split_at(ps);
            let g_term = gt[r];
            for j in 0..ps {
                let (inv, k) = (inv_v[j], m[j] * inv_v[j]);
                // The shift is s·key: its gradient joins the key's.
                let g_key = gk[j] + s * g_shift[j];
                dm[j] += g_key * inv - g_term * k;
                // d/dV of the key, the gate var/V = 1 − s/V and the term; dV/dlogσ² = var.
                let g_big_v =
                    -g_key * k * inv + g_gate[j] * s * inv * inv + g_term * (0.5 * k * k - w * inv);
                dl[j] += g_big_v * exp(l[j]);
            }
        };
        for_each_row_pair(&mut gm, &mut gl, ps, add);
        put_grad!(grads, &mu_ghost, gm);
        put_grad!(grads, &lv_ghost, gl);
        put_grad!(grads, &k_ghost, gk);
        put_grad!(grads, &v_ghost, gv);
        put_grad!(grads, &t_ghost, gt);
        drop((ms, ls, inv_v));
        Ok(())
    });
    DenoisingKeys {
        keys: keys.put_tape(tape),
        values: values.put_tape(OwnedTape::default()),
        terms: terms.put_tape(OwnedTape::default()),
    }
}

/// Σ_p μ²/V and Σ_p ln V of one row from μ, the keys μ/V and 1/V, over [`LANES`] partial
/// sums. ln V is taken as −ln(1/V); a V above 2¹²⁶ (a variance no trained model reaches)
/// counts as ∞, and NaN passes through as in the generic op.
fn row_sums(m: &[f32], key: &[f32], inv_v: &[f32]) -> (f32, f32) {
    let log_v = |inv: f32| {
        if inv >= f32::MIN_POSITIVE {
            -ln(inv)
        } else if inv >= 0.0 {
            f32::INFINITY
        } else {
            f32::NAN
        }
    };
    let (mut mahalanobis, mut log_det) = ([0.0f32; LANES], [0.0f32; LANES]);
    let blocks = m.chunks_exact(LANES).zip(key.chunks_exact(LANES));
    for ((m, k), inv) in blocks.zip(inv_v.chunks_exact(LANES)) {
        for (((sum, &m), &k), (log_sum, &inv)) in mahalanobis
            .iter_mut()
            .zip(m)
            .zip(k)
            .zip(log_det.iter_mut().zip(inv))
        {
            *sum += m * k;
            *log_sum += log_v(inv);
        }
    }
    let whole = m.len() / LANES * LANES;
    let tail = (whole..m.len()).fold((0.0f32, 0.0f32), |(a, b), j| {
        (a + m[j] * key[j], b + log_v(inv_v[j]))
    });
    (
        mahalanobis.iter().sum::<f32>() + tail.0,
        log_det.iter().sum::<f32>() + tail.1,
    )
}

/// A row index with its key, value, term and 1/V slots.
type Row<'a> = (
    usize,
    (((&'a mut [f32], &'a mut [f32]), &'a mut f32), &'a mut [f32]),
);
