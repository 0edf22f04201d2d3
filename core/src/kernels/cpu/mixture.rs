//! Fused mixture-latent rows: [`assemble_rows`] copies source rows, the prior row and zeros into
//! a latent in one pass; [`gaussian_rows`] assembles μ and logσ² and draws z = μ + ε·exp(½ logσ²)
//! in the same pass, saving ε·σ for a backward pass that adds every output's gradient into the
//! source rows at once (one pass over the outputs, no intermediate tensor).

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use rayon::prelude::*;

use super::cached_zeros;
use super::fastmath::exp;
use super::{buffer, host_values};
use crate::kernels::mixture::{check_rows, Eps, GaussianRows, Row};
use crate::kernels::Tr;
use crate::rng::fill_noise;

/// Element counts from which a pass runs on rayon's pool (waking it costs 20–30 µs).
pub(super) const PARALLEL_MIN: usize = 1 << 17;

/// Rows per rayon task.
pub(super) const ROWS_PER_TASK: usize = 32;

/// Whether a pass over `elements` values is worth rayon's pool.
pub(super) fn parallel(elements: usize) -> bool {
    elements >= PARALLEL_MIN && rayon::current_num_threads() > 1
}

/// Runs `f((row, (a_row, b_row)))` over the matching `width`-value rows of `a` and `b` (the
/// gradients of μ and logσ² in a backward pass), on rayon's pool when they are large.
pub(super) fn for_each_row_pair(
    a: &mut [f32],
    b: &mut [f32],
    width: usize,
    f: impl Fn((usize, (&mut [f32], &mut [f32]))) + Sync + Send,
) {
    if parallel(a.len()) {
        a.par_chunks_mut(width)
            .zip(b.par_chunks_mut(width))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(f);
    } else {
        a.chunks_mut(width)
            .zip(b.chunks_mut(width))
            .enumerate()
            .for_each(f);
    }
}

/// `(a(), b())`, side by side on rayon's pool when `elements` are worth it (each of the
/// fills this is used for is one memory-bound pass).
fn join<A: Send, B: Send>(
    elements: usize,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if parallel(elements) {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

/// For each source row, the output rows that read it: `rows[start[r]..start[r + 1]]`.
struct Readers {
    start: Vec<usize>,
    rows: Vec<usize>,
}

impl Readers {
    fn new(sources: usize, rows: &[Row]) -> Self {
        let mut start = vec![0; sources + 1];
        for row in rows {
            if let Row::Source(r) = *row {
                start[r + 1] += 1;
            }
        }
        for r in 0..sources {
            start[r + 1] += start[r];
        }
        let mut next = start.clone();
        let mut readers = vec![0; start[sources]];
        for (i, row) in rows.iter().enumerate() {
            if let Row::Source(r) = *row {
                readers[next[r]] = i;
                next[r] += 1;
            }
        }
        Self {
            start,
            rows: readers,
        }
    }

    fn of(&self, r: usize) -> &[usize] {
        &self.rows[self.start[r]..self.start[r + 1]]
    }
}

/// See [`crate::kernels::MixtureKernels::assemble_rows`].
pub(crate) fn assemble_rows<R: Dim, P: Dim>(
    src: Tr<(R, P), f32, Cpu>,
    prior: &[f32],
    rows: &[Row],
) -> Tr<(usize, P), f32, Cpu> {
    let (r, p) = *src.shape();
    let (rs, ps) = (r.size(), p.size());
    check_rows(rs, ps, prior, rows);
    // Flat and contiguous: the gradient buffer is then in logical order.
    let (src, mut tape) = src.reshape_like(&(rs * ps,)).split_tape();
    let dev = src.device().clone();
    let size = rows.len() * ps;
    let (values, mut out) = (host_values(&src), cached_zeros(&dev, size));
    let fill = |(k, block): (usize, &mut [f32])| {
        for (o, dst) in block.chunks_exact_mut(ps).enumerate() {
            match rows[k * ROWS_PER_TASK + o] {
                Row::Source(r) => dst.copy_from_slice(&values[r * ps..(r + 1) * ps]),
                Row::Prior => dst.copy_from_slice(prior),
                Row::Zero => {}
            }
        }
    };
    let block = ROWS_PER_TASK * ps;
    if parallel(out.len()) {
        out.par_chunks_mut(block).enumerate().for_each(fill);
    } else {
        out.chunks_mut(block).enumerate().for_each(fill);
    }
    drop(values);
    let out = dev.tensor_from_vec(out, (rows.len(), p));

    let (src_ghost, out_ghost) = (src.ghost(), out.ghost());
    let readers = Readers::new(rs, rows);
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        let mut gs = take_grad!(grads, &src_ghost);
        let add = |(k, block): (usize, &mut [f32])| {
            for (i, dst) in block.chunks_exact_mut(ps).enumerate() {
                for &o in readers.of(k * ROWS_PER_TASK + i) {
                    super::add_into(dst, &g[o * ps..(o + 1) * ps]);
                }
            }
        };
        if parallel(g.len()) {
            gs.par_chunks_mut(block).enumerate().for_each(add);
        } else {
            gs.chunks_mut(block).enumerate().for_each(add);
        }
        put_grad!(grads, &src_ghost, gs);
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}

/// See [`crate::kernels::MixtureKernels::gaussian_rows`]. The history of both sources and the
/// backward pass ride on `z`; `mu` and `log_var` carry empty tapes.
pub(crate) fn gaussian_rows<R: Dim, P: Dim>(
    mu: Tr<(R, P), f32, Cpu>,
    log_var: Tr<(R, P), f32, Cpu>,
    prior: (&[f32], &[f32]),
    rows: &[Row],
    eps: Eps<f32>,
) -> GaussianRows<P, f32, Cpu> {
    let (r, p) = *mu.shape();
    let (rs, ps, n) = (r.size(), p.size(), rows.len());
    assert_eq!(*log_var.shape(), (r, p), "mu and log_var shapes");
    check_rows(rs, ps, prior.0, rows);
    check_rows(rs, ps, prior.1, rows);
    let mut drawn = None;
    let eps: &[f32] = match eps {
        Eps::Given(eps) => eps,
        Eps::Draw(rng) => {
            let d = drawn.insert(buffer(mu.device(), n * ps));
            fill_noise(rng, d);
            &d[..]
        }
    };
    assert_eq!(eps.len(), n * ps, "one ε per output element");
    let (mu, mu_tape) = mu.reshape_like(&(rs * ps,)).split_tape();
    let (log_var, lv_tape) = log_var.reshape_like(&(rs * ps,)).split_tape();
    let mut tape = mu_tape.merge(lv_tape);
    let dev = mu.device().clone();
    // The inputs read in place, and three zeroed outputs side by side.
    let (ms, ls) = (host_values(&mu), host_values(&log_var));
    let zeros = || cached_zeros(&dev, n * ps);
    let (mut z, (mut mu_out, mut lv_out)) = join(n * ps, zeros, || join(n * ps, zeros, zeros));
    // ε·exp(½ logσ²), what the backward pass needs for d z / d logσ².
    let mut noise = buffer(&dev, n * ps);
    let fill = |(k, (((z, m), l), s)): Chunk4| {
        for (i, (((z, m), l), s)) in z
            .chunks_exact_mut(ps)
            .zip(m.chunks_exact_mut(ps))
            .zip(l.chunks_exact_mut(ps))
            .zip(s.chunks_exact_mut(ps))
            .enumerate()
        {
            let o = k * ROWS_PER_TASK + i;
            let (src_m, src_l) = match rows[o] {
                Row::Source(r) => (&ms[r * ps..(r + 1) * ps], &ls[r * ps..(r + 1) * ps]),
                Row::Prior => prior,
                Row::Zero => continue,
            };
            m.copy_from_slice(src_m);
            l.copy_from_slice(src_l);
            let e = &eps[o * ps..(o + 1) * ps];
            for ((s, &l), &e) in s.iter_mut().zip(src_l).zip(e) {
                *s = exp(l * 0.5) * e;
            }
            for ((z, &m), &s) in z.iter_mut().zip(src_m).zip(&*s) {
                *z = m + s;
            }
        }
    };
    let block = ROWS_PER_TASK * ps;
    if parallel(n * ps) {
        z.par_chunks_mut(block)
            .zip(mu_out.par_chunks_mut(block))
            .zip(lv_out.par_chunks_mut(block))
            .zip(noise.par_chunks_mut(block))
            .enumerate()
            .for_each(fill);
    } else {
        z.chunks_mut(block)
            .zip(mu_out.chunks_mut(block))
            .zip(lv_out.chunks_mut(block))
            .zip(noise.chunks_mut(block))
            .enumerate()
            .for_each(fill);
    }
    drop(ms);
    drop(ls);
    drop(drawn);
    let z = dev.tensor_from_vec(z, (n, p));
    let mu_out = dev.tensor_from_vec(mu_out, (n, p));
    let lv_out = dev.tensor_from_vec(lv_out, (n, p));

    let (mu_ghost, lv_ghost) = (mu.ghost(), log_var.ghost());
    let (z_ghost, mo_ghost, lo_ghost) = (z.ghost(), mu_out.ghost(), lv_out.ghost());
    let readers = Readers::new(rs, rows);
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&z_ghost)?;
        let gz = take_grad!(grads, &z_ghost);
        let gm = take_grad!(grads, &mo_ghost);
        let gl = take_grad!(grads, &lo_ghost);
        let mut gms = take_grad!(grads, &mu_ghost);
        let mut gls = take_grad!(grads, &lv_ghost);
        let add = |(k, (dm, dl)): (usize, (&mut [f32], &mut [f32]))| {
            for (i, (dm, dl)) in dm
                .chunks_exact_mut(ps)
                .zip(dl.chunks_exact_mut(ps))
                .enumerate()
            {
                for &o in readers.of(k * ROWS_PER_TASK + i) {
                    let span = o * ps..(o + 1) * ps;
                    let (gz, gm) = (&gz[span.clone()], &gm[span.clone()]);
                    let (gl, s) = (&gl[span.clone()], &noise[span]);
                    for ((dm, &gm), &gz) in dm.iter_mut().zip(gm).zip(gz) {
                        *dm += gm + gz;
                    }
                    for ((dl, &gl), (&gz, &s)) in dl.iter_mut().zip(gl).zip(gz.iter().zip(s)) {
                        *dl += gl + 0.5 * (gz * s);
                    }
                }
            }
        };
        if parallel(gz.len()) {
            gms.par_chunks_mut(block)
                .zip(gls.par_chunks_mut(block))
                .enumerate()
                .for_each(add);
        } else {
            gms.chunks_mut(block)
                .zip(gls.chunks_mut(block))
                .enumerate()
                .for_each(add);
        }
        put_grad!(grads, &mu_ghost, gms);
        put_grad!(grads, &lv_ghost, gls);
        put_grad!(grads, &z_ghost, gz);
        put_grad!(grads, &mo_ghost, gm);
        put_grad!(grads, &lo_ghost, gl);
        drop(noise);
        Ok(())
    });
    GaussianRows {
        z: z.put_tape(tape),
        mu: mu_out.put_tape(OwnedTape::default()),
        log_var: lv_out.put_tape(OwnedTape::default()),
    }
}

/// A block index and four mutable row blocks (z, μ, logσ², ε·σ).
type Chunk4<'a> = (
    usize,
    (
        ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]),
        &'a mut [f32],
    ),
);
