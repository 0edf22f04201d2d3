//! The fused α-weighted Gaussian KL of a mixture latent against a diagonal prior: one pass over
//! μ and logσ² forward (saving exp(logσ² − logσ²_p)), one backward, nothing of the latent's size
//! in between.

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use rayon::prelude::*;

use super::cached_zeros;
use super::fastmath::exp;
use super::mixture::{for_each_row_pair, parallel, ROWS_PER_TASK};
use super::{buffer, host_values};
use crate::kernels::mixture::check_kl_inputs;
use crate::kernels::Tr;

/// See [`crate::kernels::MixtureKernels::kl_gaussian_mixture`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<B: Dim, C: Dim, P: Dim>(
    mu: Tr<(B, C, P), f32, Cpu>,
    log_var: Tr<(B, C, P), f32, Cpu>,
    alpha: Tr<(B, C), f32, Cpu>,
    keep: &[bool],
    prior_mu: &[f64],
    prior_var: &[f64],
    scale: f64,
) -> Tr<(B,), f32, Cpu> {
    let (b, c, p) = *mu.shape();
    let (bs, cs, ps) = (b.size(), c.size(), p.size());
    assert_eq!(*log_var.shape(), (b, c, p), "mu and log_var shapes");
    check_kl_inputs(bs * cs, ps, keep, prior_mu, prior_var);
    let n = bs * cs * ps;
    let (mu, mu_tape) = mu.reshape_like(&(n,)).split_tape();
    let (log_var, lv_tape) = log_var.reshape_like(&(n,)).split_tape();
    let (alpha, alpha_tape) = alpha.reshape_like(&(bs * cs,)).split_tape();
    let mut tape = mu_tape.merge(lv_tape).merge(alpha_tape);
    let dev = mu.device().clone();
    let (ms, ls) = (host_values(&mu), host_values(&log_var));
    let prior = Prior {
        mu: prior_mu.iter().map(|&v| v as f32).collect(),
        inv_var: prior_var.iter().map(|&v| (1.0 / v) as f32).collect(),
        log_var: prior_var.iter().map(|&v| v.ln() as f32).collect(),
    };
    let scale = scale as f32;

    // Per kept row: t = mean_p KL; per element: exp(logσ² − logσ²_p), for the backward pass.
    let mut t = vec![0.0f32; bs * cs];
    let mut ratio = buffer(&dev, n);
    let row_kl = |(row, (t, ratio)): (usize, (&mut f32, &mut [f32]))| {
        if keep[row] {
            let span = row * ps..(row + 1) * ps;
            *t = prior.row_kl(&ms[span.clone()], &ls[span], ratio) / ps as f32;
        }
    };
    if parallel(n) {
        t.par_iter_mut()
            .zip(ratio.par_chunks_mut(ps))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(row_kl);
    } else {
        t.iter_mut()
            .zip(ratio.chunks_mut(ps))
            .enumerate()
            .for_each(row_kl);
    }
    // E[π] = α / Σ_kept α per batch element.
    drop(ls);
    let alphas = alpha.as_vec();
    let mut pi: Vec<f32> = alphas
        .iter()
        .zip(keep)
        .map(|(&a, &k)| if k { a } else { 0.0 })
        .collect();
    let mut alpha0 = vec![0.0f32; bs];
    let mut value = cached_zeros(&dev, bs);
    for (i, row) in pi.chunks_mut(cs).enumerate() {
        alpha0[i] = row.iter().sum();
        let mut total = 0.0;
        for (p, &t) in row.iter_mut().zip(&t[i * cs..(i + 1) * cs]) {
            *p /= alpha0[i];
            total += *p * t;
        }
        value[i] = total * scale;
    }
    let out = dev.tensor_from_vec(value, (b,));

    let (mu_ghost, lv_ghost, alpha_ghost) = (mu.ghost(), log_var.ghost(), alpha.ghost());
    let out_ghost = out.ghost();
    let keep = keep.to_vec();
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        {
            let ga = grads.get_or_alloc_mut(&alpha_ghost)?;
            for i in 0..bs {
                let rows = i * cs..(i + 1) * cs;
                let mean: f32 = pi[rows.clone()]
                    .iter()
                    .zip(&t[rows.clone()])
                    .map(|(p, t)| p * t)
                    .sum();
                for row in rows.filter(|&row| keep[row]) {
                    ga[row] += g[i] * scale * (t[row] - mean) / alpha0[i];
                }
            }
        }
        let mut gm = take_grad!(grads, &mu_ghost);
        let mut gl = take_grad!(grads, &lv_ghost);
        let add = |(row, (dm, dl)): (usize, (&mut [f32], &mut [f32]))| {
            if keep[row] {
                let w = g[row / cs] * scale * pi[row] / ps as f32;
                let span = row * ps..(row + 1) * ps;
                prior.row_backward(w, &ms[span.clone()], &ratio[span], dm, dl);
            }
        };
        for_each_row_pair(&mut gm, &mut gl, ps, add);
        put_grad!(grads, &mu_ghost, gm);
        put_grad!(grads, &lv_ghost, gl);
        put_grad!(grads, &out_ghost, g);
        drop(ms);
        drop(ratio);
        Ok(())
    });
    out.put_tape(tape)
}

/// The prior's per-dimension constants.
struct Prior {
    mu: Vec<f32>,
    inv_var: Vec<f32>,
    log_var: Vec<f32>,
}

/// Lanes of the partial sums, so that a row's sum vectorises.
const LANES: usize = 8;

impl Prior {
    /// Σ_p [σ²/σ²_p + (μ − μ_p)²/σ²_p − 1 − ln(σ²/σ²_p)] of one row, writing σ²/σ²_p to
    /// `ratio`.
    fn row_kl(&self, mu: &[f32], log_var: &[f32], ratio: &mut [f32]) -> f32 {
        let whole = ratio.len() / LANES * LANES;
        let mut lanes = [0.0f32; LANES];
        for c in (0..whole).step_by(LANES) {
            let block = c..c + LANES;
            let m = lanes_of(&mu[block.clone()]);
            let l = lanes_of(&log_var[block.clone()]);
            let pm = lanes_of(&self.mu[block.clone()]);
            let iv = lanes_of(&self.inv_var[block.clone()]);
            let plv = lanes_of(&self.log_var[block.clone()]);
            let out: &mut [f32; LANES] = (&mut ratio[block]).try_into().expect("a whole block");
            for k in 0..LANES {
                let r = l[k] - plv[k];
                let d = m[k] - pm[k];
                out[k] = exp(r);
                lanes[k] += out[k] + d * d * iv[k] - r - 1.0;
            }
        }
        let mut sum: f32 = lanes.iter().sum();
        for j in whole..ratio.len() {
            let r = log_var[j] - self.log_var[j];
            let d = mu[j] - self.mu[j];
            ratio[j] = exp(r);
            sum += ratio[j] + d * d * self.inv_var[j] - r - 1.0;
        }
        sum
    }

    /// Adds `w` times the derivatives of [`row_kl`](Self::row_kl) to the row's gradients.
    fn row_backward(&self, w: f32, mu: &[f32], ratio: &[f32], dm: &mut [f32], dl: &mut [f32]) {
        let w2 = 2.0 * w;
        for ((dm, &m), (&pm, &iv)) in dm.iter_mut().zip(mu).zip(self.mu.iter().zip(&self.inv_var)) {
            *dm += w2 * (m - pm) * iv;
        }
        for (dl, &r) in dl.iter_mut().zip(ratio) {
            *dl += w * (r - 1.0);
        }
    }
}

/// A block of [`LANES`] values as an array (the loops over it unroll and vectorise).
fn lanes_of(block: &[f32]) -> &[f32; LANES] {
    block.try_into().expect("a whole block")
}
