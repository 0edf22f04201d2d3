//! Whole rows of row-major buffers moved between the full layout and a gathered one: the row
//! masks of the fused kernels compute only the rows that count (padding left out), gathered,
//! and put the results back. Large buffers are handled on rayon's pool, one row per call, so
//! the results do not depend on the number of threads.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{recycled, Buffer, PARALLEL_MIN_ELEMENTS};

/// The rows `rows` of `values` (rows of `width` values), gathered into a new buffer in the
/// order `rows` lists them.
pub(super) fn gather_rows(dev: &Cpu, values: &[f32], rows: &[usize], width: usize) -> Buffer {
    let mut out = recycled(dev, rows.len() * width);
    let copy = |(dst, &r): (&mut [f32], &usize)| {
        dst.copy_from_slice(&values[r * width..(r + 1) * width]);
    };
    if width == 0 {
        return out;
    }
    if out.len() >= PARALLEL_MIN_ELEMENTS {
        out.par_chunks_exact_mut(width).zip(rows).for_each(copy);
    } else {
        out.chunks_exact_mut(width).zip(rows).for_each(copy);
    }
    out
}

/// [`gather_rows`] in place: the rows `rows` (increasing) of `values` moved to its front in
/// that order, and the rest cut off.
pub(super) fn compact_rows(values: &mut Vec<f32>, rows: &[usize], width: usize) {
    for (i, &r) in rows.iter().enumerate() {
        debug_assert!(r >= i, "rows listed in increasing order");
        if r != i {
            values.copy_within(r * width..(r + 1) * width, i * width);
        }
    }
    values.truncate(rows.len() * width);
}

/// Where each of `total` rows comes from in a gathered buffer of the rows `rows` (increasing):
/// its index there, or `None` for a row left out.
fn row_sources(rows: &[usize], total: usize) -> Vec<Option<usize>> {
    let mut sources = vec![None; total];
    for (i, &r) in rows.iter().enumerate() {
        sources[r] = Some(i);
    }
    sources
}

/// The inverse of [`gather_rows`]: `total` rows of `width` values, row `rows[i]` holding row
/// `i` of `gathered` and the rows `rows` leaves out zero.
pub(super) fn scatter_rows(
    dev: &Cpu,
    gathered: &[f32],
    rows: &[usize],
    total: usize,
    width: usize,
) -> Buffer {
    let mut out = recycled(dev, total * width);
    let sources = row_sources(rows, total);
    let place = |(dst, src): (&mut [f32], &Option<usize>)| match *src {
        Some(i) => dst.copy_from_slice(&gathered[i * width..(i + 1) * width]),
        None => dst.fill(0.0),
    };
    if width == 0 {
        return out;
    }
    if out.len() >= PARALLEL_MIN_ELEMENTS {
        out.par_chunks_exact_mut(width)
            .zip(&sources)
            .for_each(place);
    } else {
        out.chunks_exact_mut(width).zip(&sources).for_each(place);
    }
    out
}

/// `dst[rows[i]] += gathered[i]` row by row (rows of `width` values, `rows` increasing): a
/// gradient of gathered rows added back into the full one.
pub(super) fn add_rows(dst: &mut [f32], gathered: &[f32], rows: &[usize], width: usize) {
    if width == 0 {
        return;
    }
    let sources = row_sources(rows, dst.len() / width);
    let add = |(dst, src): (&mut [f32], &Option<usize>)| {
        if let Some(i) = *src {
            for (d, s) in dst.iter_mut().zip(&gathered[i * width..(i + 1) * width]) {
                *d += *s;
            }
        }
    };
    if gathered.len() >= PARALLEL_MIN_ELEMENTS {
        dst.par_chunks_exact_mut(width).zip(&sources).for_each(add);
    } else {
        dst.chunks_exact_mut(width).zip(&sources).for_each(add);
    }
}

/// Every row of `values` (rows as wide as `row`) set to `row`.
pub(super) fn fill_rows(values: &mut [f32], row: &[f32]) {
    if row.is_empty() {
        return;
    }
    if values.len() >= PARALLEL_MIN_ELEMENTS {
        values
            .par_chunks_exact_mut(row.len())
            .for_each(|dst| dst.copy_from_slice(row));
    } else {
        values
            .chunks_exact_mut(row.len())
            .for_each(|dst| dst.copy_from_slice(row));
    }
}

/// How a kernel with a row mask (`keep`: one flag per row of `x`, rows of `width` values)
/// treats the rows it leaves out: `(gathered, zeroed)`. When few rows are left out (at most
/// one in [`DENSE_LEFT_OUT`]) and their inputs are finite, every row is computed in place and
/// the left-out ones are zeroed afterwards (`(None, left_out)`): a copy of every row costs more
/// than the products of so few. Otherwise the kept rows are gathered (`(Some(kept), [])`).
/// `(None, [])`: no mask.
///
/// A left-out row that is not finite (padding whose values nobody defined) forces the gather:
/// zero times infinity would carry NaN into the weight gradient.
pub(super) fn row_plan(
    keep: Option<&[bool]>,
    x: &[f32],
    width: usize,
) -> (Option<Vec<usize>>, Vec<usize>) {
    let Some(keep) = keep else {
        return (None, Vec::new());
    };
    let total = keep.len();
    let left_out: Vec<usize> = (0..total).filter(|&r| !keep[r]).collect();
    let finite = |r: &usize| x[r * width..(r + 1) * width].iter().all(|v| v.is_finite());
    if left_out.len() * DENSE_LEFT_OUT <= total && left_out.iter().all(finite) {
        (None, left_out)
    } else {
        (Some((0..total).filter(|&r| keep[r]).collect()), Vec::new())
    }
}

/// [`row_plan`] computes every row in place when at most one row in this many is left out.
const DENSE_LEFT_OUT: usize = 8;

/// Zeroes the rows `rows` of `values` (rows of `width` values).
pub(super) fn zero_rows(values: &mut [f32], rows: &[usize], width: usize) {
    for &r in rows {
        values[r * width..(r + 1) * width].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of `total` that `keep` keeps, increasing.
    fn kept(total: usize, keep: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..total).filter(|&r| keep(r)).collect()
    }

    /// Each helper against a plain loop, below and above the size that goes parallel, on a
    /// pool of 2 threads.
    #[test]
    fn row_moves_match_plain_loops() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let dev = Cpu::default();
            for (total, width) in [(7, 3), (600, 300)] {
                let values: Vec<f32> = (0..total * width).map(|i| i as f32 * 0.5 - 3.0).collect();
                let rows = kept(total, |r| r % 3 != 1);
                let gathered = gather_rows(&dev, &values, &rows, width);
                let expected: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| values[r * width..(r + 1) * width].to_vec())
                    .collect();
                assert_eq!(&gathered[..], &expected[..]);
                let mut compacted = values.clone();
                compact_rows(&mut compacted, &rows, width);
                assert_eq!(compacted, expected);

                let scattered = scatter_rows(&dev, &gathered, &rows, total, width);
                for r in 0..total {
                    let row = &scattered[r * width..(r + 1) * width];
                    match rows.contains(&r) {
                        true => assert_eq!(row, &values[r * width..(r + 1) * width]),
                        false => assert!(row.iter().all(|&v| v == 0.0)),
                    }
                }

                let mut sums = values.clone();
                add_rows(&mut sums, &gathered, &rows, width);
                for (i, (&s, &v)) in sums.iter().zip(&values).enumerate() {
                    let doubled = rows.contains(&(i / width));
                    assert_eq!(s, if doubled { 2.0 * v } else { v });
                }

                let row: Vec<f32> = (0..width).map(|j| j as f32).collect();
                let mut filled = vec![f32::NAN; total * width];
                fill_rows(&mut filled, &row);
                assert!(filled.chunks_exact(width).all(|r| r == &row[..]));
            }
        });
    }
}
