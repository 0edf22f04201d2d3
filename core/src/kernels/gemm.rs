//! One safe entry to the `gemm` crate for the CPU kernels: strided views, accumulate or
//! overwrite, and the choice between one thread and rayon's pool by the size of the product.

use gemm::Parallelism;
use rayon::prelude::*;

/// Products with fewer multiply-adds run on the calling thread: waking rayon's pool costs
/// more than it saves below this (about a million multiply-adds on the machines we measured).
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// A product split into blocks of rows gets at least this many rows per block; one with fewer
/// rows is left to the `gemm` crate's own split.
const MIN_ROWS_PER_PART: usize = 16;

/// A product split into blocks of columns gets a multiple of this many columns per block (one
/// AVX-512 register of f32), and at least this many.
const COLS_PER_PART_MULTIPLE: usize = 16;

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// A matrix whose rows are `rs` elements apart (a block of columns of a wider row-major
    /// matrix, from the slice's first element), or its transpose.
    pub fn strided(data: &'a [f32], rs: usize, transposed: bool) -> Self {
        if transposed {
            Self {
                data,
                rs: 1,
                cs: rs,
            }
        } else {
            Self { data, rs, cs: 1 }
        }
    }

    /// Whether the view runs down a row-major matrix's columns (a transpose, as
    /// [`Self::transposed`] makes it).
    fn is_transposed(&self) -> bool {
        self.rs == 1 && self.cs != 1
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "{what}: view out of bounds");
        }
    }
}

/// How many threads a product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    /// Rayon's pool for products of at least [`PARALLEL_MIN_MACS`], the calling thread below.
    BySize,
    /// The calling thread only: for the many small products of a kernel that is parallel
    /// over them already.
    One,
}

/// `dst (+)= scale · lhs (m × k) · rhs (k × n)`: added to `dst` when `accumulate`, written
/// over it otherwise (its old values are then never read). `dst.0`'s rows are `dst.1` elements
/// apart (a block of columns of a wider row-major matrix when the slice starts at its first
/// column). Runs on the threads `threads` allows.
pub(crate) fn matmul_into(
    (m, k, n): (usize, usize, usize),
    (dst, dst_rs): (&mut [f32], usize),
    accumulate: bool,
    lhs: View,
    rhs: View,
    scale: f32,
    threads: Threads,
) {
    if m > 0 && n > 0 {
        assert!(
            (m - 1) * dst_rs + n <= dst.len() && n <= dst_rs,
            "matmul: destination too small"
        );
    }
    lhs.check(m, k, "matmul lhs");
    rhs.check(k, n, "matmul rhs");
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(feature = "gemm-profile")]
    let _timer = super::gemm_profile::Timer::start(
        (m, k, n),
        (lhs.is_transposed(), rhs.is_transposed()),
        accumulate,
    );
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_rs)
                .take(m)
                .for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let parts = match threads {
        Threads::BySize if m * n * k >= PARALLEL_MIN_MACS => rayon::current_num_threads(),
        _ => 1,
    };
    // Each block of a split is one single-threaded product, which packs all of the operand
    // the blocks share: blocks of rows all pack `rhs` (k × n), blocks of columns all pack
    // `lhs` (m × k). So the split goes along the longer side of the destination. Measured on
    // this machine class (2 threads, 128 × 512 × 256 with `rhs` a transposed weight): rows
    // 214-230 µs, columns 156-170, one thread 297, the crate's own split 294-320.
    let by_columns = parts > 1 && n > m && n >= parts * COLS_PER_PART_MULTIPLE;
    let by_rows = parts > 1 && !by_columns && m >= parts * MIN_ROWS_PER_PART;
    if by_columns || by_rows {
        let (len, per_block) = match by_columns {
            true => (
                n,
                n.div_ceil(parts).next_multiple_of(COLS_PER_PART_MULTIPLE),
            ),
            false => (m, m.div_ceil(parts)),
        };
        let dst = SharedDst(dst.as_mut_ptr());
        (0..len.div_ceil(per_block)).into_par_iter().for_each(|p| {
            let first = p * per_block;
            let count = per_block.min(len - first);
            let (dims, offset, lhs, rhs) = match by_columns {
                true => {
                    let rhs = View {
                        data: &rhs.data[first * rhs.cs..],
                        ..rhs
                    };
                    ((m, k, count), first, lhs, rhs)
                }
                false => {
                    let lhs = View {
                        data: &lhs.data[first * lhs.rs..],
                        ..lhs
                    };
                    ((count, k, n), first * dst_rs, lhs, rhs)
                }
            };
            // SAFETY: the blocks (of columns or of rows) are disjoint, and `dst` (checked
            // above to hold every element of the m × n destination) outlives the loop.
            unsafe {
                gemm_raw(
                    dims,
                    (dst.at(offset), dst_rs),
                    accumulate,
                    lhs,
                    rhs,
                    scale,
                    1,
                )
            };
        });
    } else {
        // SAFETY: checked above.
        unsafe {
            gemm_raw(
                (m, k, n),
                (dst.as_mut_ptr(), dst_rs),
                accumulate,
                lhs,
                rhs,
                scale,
                parts,
            )
        };
    }
}

/// The destination of a product split into blocks, shared by the blocks' threads.
#[derive(Clone, Copy)]
struct SharedDst(*mut f32);

// SAFETY: the blocks write disjoint elements (see `matmul_into`).
unsafe impl Send for SharedDst {}
unsafe impl Sync for SharedDst {}

impl SharedDst {
    /// The destination from its element `offset` on (a block's first).
    ///
    /// # Safety
    /// `offset` is within the destination.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// A product whose left operand is a transposed view runs as a sum of products over blocks of
/// this many of its inner dimension when that is at least twice as long: the weight gradients
/// `Xᵀ · dY`, whose inner dimension is a batch's rows. Measured on this machine class (one
/// thread, inputs out of cache, `gemm` 0.19): 3072 × 256 → 256 at 126-141 GFLOP/s in one call,
/// 142 in blocks of 128; 3072 × 1024 → 256 at 123-136, 144-148; 2000 × 256 → 2000 at 144-149,
/// 149-151.
const TRANSPOSED_K_BLOCK: usize = 128;

/// [`matmul_into`] after its checks, on `threads` threads of rayon's pool (1: the calling
/// thread).
///
/// # Safety
/// `dst` is valid for writes (and reads when `accumulate`) of the m × n elements
/// `dst[i * dst_rs + j]`, `n <= dst_rs`, no other thread touches them during the call, and
/// the views hold every element the product reads.
unsafe fn gemm_raw(
    (m, k, n): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    accumulate: bool,
    lhs: View,
    rhs: View,
    scale: f32,
    threads: usize,
) {
    let parallelism = match threads {
        1 => Parallelism::None,
        t => Parallelism::Rayon(t),
    };
    let block = match lhs.is_transposed() && k >= 2 * TRANSPOSED_K_BLOCK {
        true => TRANSPOSED_K_BLOCK,
        false => k,
    };
    for first in (0..k).step_by(block) {
        // Columns first.. of lhs, rows first.. of rhs; every block after the first adds.
        let (lhs_at, rhs_at) = (&lhs.data[first * lhs.cs..], &rhs.data[first * rhs.rs..]);
        // SAFETY: the caller guarantees every index the product touches (the destination's
        // rows do not overlap since n <= dst_rs) and that nothing else touches the
        // destination; the blocks read within the views.
        unsafe {
            gemm::gemm(
                m,
                n,
                block.min(k - first),
                dst,
                1,
                dst_rs as isize,
                accumulate || first > 0,
                lhs_at.as_ptr(),
                lhs.cs as isize,
                lhs.rs as isize,
                rhs_at.as_ptr(),
                rhs.cs as isize,
                rhs.rs as isize,
                1.0,
                scale,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: View, b: View) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|l| a.data[i * a.rs + l * a.cs] * b.data[l * b.rs + j * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_match_the_naive_loop() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let want = naive(m, k, n, View::rows(&a, k), View::rows(&b, n));
        for rhs in [View::rows(&b, n), View::transposed(&bt, k)] {
            let mut got = vec![f32::NAN; m * n];
            let lhs = View::rows(&a, k);
            matmul_into(
                (m, k, n),
                (&mut got, n),
                false,
                lhs,
                rhs,
                1.0,
                Threads::BySize,
            );
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
            matmul_into(
                (m, k, n),
                (&mut got, n),
                true,
                lhs,
                rhs,
                1.0,
                Threads::BySize,
            );
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() < 1e-5, "accumulated {g} vs {}", 2.0 * w);
            }
        }
    }

    #[test]
    fn products_split_across_the_pool_match_the_naive_loop() {
        // Large enough to be split (m·k·n ≥ PARALLEL_MIN_MACS), by rows (m > n) and by columns
        // (n > m), with sizes that leave the last block short, over a block of columns of a
        // wider destination, written over and accumulated.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (m, k, n) in [(101, 160, 131), (37, 150, 389)] {
            let wide = n + 9;
            let a: Vec<f32> = (0..k * m).map(|i| (i as f32 * 0.013).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.007).cos()).collect();
            let (lhs, rhs) = (View::transposed(&a, m), View::rows(&b, n));
            assert!(m * k * n >= PARALLEL_MIN_MACS);
            assert!(m.max(n) >= 2 * MIN_ROWS_PER_PART.max(COLS_PER_PART_MULTIPLE));
            assert!(n % COLS_PER_PART_MULTIPLE != 0 && m % 2 == 1);
            let want = naive(m, k, n, lhs, rhs);
            let mut dst = vec![7.0; m * wide];
            for (accumulate, factor) in [(false, 1.0), (true, 2.0)] {
                let block = (&mut dst[3..], wide);
                pool.install(|| {
                    matmul_into((m, k, n), block, accumulate, lhs, rhs, 1.0, Threads::BySize)
                });
                for (i, row) in dst.chunks(wide).enumerate() {
                    assert_eq!([row[0], row[2], row[3 + n]], [7.0; 3], "outside the block");
                    for j in 0..n {
                        let (g, w) = (row[3 + j], factor * want[i * n + j]);
                        assert!(
                            (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                            "{m}×{k}×{n} ({i}, {j}): {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn long_transposed_products_summed_in_blocks_match_the_naive_loop() {
        // A transposed left operand with an inner dimension of 2 blocks and a part: summed in
        // 3 products, the first written over the destination (or added to it).
        let (m, k, n) = (7, 2 * TRANSPOSED_K_BLOCK + 37, 5);
        let a: Vec<f32> = (0..k * m).map(|i| (i as f32 * 0.013).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.007).cos()).collect();
        let (lhs, rhs) = (View::transposed(&a, m), View::rows(&b, n));
        let want = naive(m, k, n, lhs, rhs);
        for threads in [Threads::BySize, Threads::One] {
            let mut got = vec![f32::NAN; m * n];
            for (accumulate, factor) in [(false, 0.5), (true, 1.0)] {
                matmul_into((m, k, n), (&mut got, n), accumulate, lhs, rhs, 0.5, threads);
                for (g, w) in got.iter().zip(&want) {
                    let w = factor * w;
                    assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn scaled_products_fill_a_block_of_columns() {
        let (m, k, n, wide) = (4, 3, 2, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.7).cos()).collect();
        let want = naive(m, k, n, View::rows(&a, k), View::rows(&b, n));
        for threads in [Threads::BySize, Threads::One] {
            let mut dst = vec![7.0; m * wide];
            let (lhs, rhs) = (View::rows(&a, k), View::rows(&b, n));
            matmul_into(
                (m, k, n),
                (&mut dst[2..], wide),
                false,
                lhs,
                rhs,
                0.5,
                threads,
            );
            matmul_into(
                (m, k, n),
                (&mut dst[2..], wide),
                true,
                lhs,
                rhs,
                1.5,
                threads,
            );
            for (i, row) in dst.chunks(wide).enumerate() {
                assert_eq!([row[0], row[1], row[4]], [7.0; 3], "outside the block");
                for j in 0..n {
                    let w = 2.0 * want[i * n + j];
                    assert!((row[2 + j] - w).abs() < 1e-5, "{} vs {w}", row[2 + j]);
                }
            }
        }
    }
}
