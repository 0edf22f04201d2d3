//! The softmax over keys and its backward pass, on scores kept key by key: a product's
//! `(nk × rows)` matrix, each row holding one key's score for every query. Every loop runs
//! along the queries, contiguously.

use super::super::fastmath::exp;
use super::layout::Layout;
use super::Hidden;

/// Scores `st` (`nk × rows`, of which the first `cols` columns are read) → weights: plus
/// `bias` per key, −∞ where hidden, then each column (query) normalised. A query that sees no
/// key gets NaN weights, as in PyTorch. `columns` is room for `2 · cols` values.
pub(super) fn forward(
    l: &Layout,
    st: &mut [f32],
    cols: usize,
    bias: Option<&[f32]>,
    hidden: Hidden,
    columns: &mut [f32],
) {
    let rows = l.rows();
    for (j, row) in st.chunks_exact_mut(rows).enumerate() {
        let row = &mut row[..cols];
        if hidden.keep.is_some_and(|keep| !keep[j]) {
            row.fill(f32::NEG_INFINITY);
            continue;
        }
        if let Some(bias) = bias {
            row.iter_mut().for_each(|x| *x += bias[j]);
        }
        if hidden.causal {
            row[..l.first_row_seeing(j).min(cols)].fill(f32::NEG_INFINITY);
        }
    }
    let (max, sum) = columns[..2 * cols].split_at_mut(cols);
    max.fill(f32::NEG_INFINITY);
    for row in st.chunks_exact(rows) {
        for (m, &x) in max.iter_mut().zip(row) {
            *m = m.max(x);
        }
    }
    sum.fill(0.0);
    for row in st.chunks_exact_mut(rows) {
        for ((x, m), s) in row.iter_mut().zip(&*max).zip(sum.iter_mut()) {
            *x = exp(*x - m);
            *s += *x;
        }
    }
    sum.iter_mut().for_each(|s| *s = 1.0 / *s);
    for row in st.chunks_exact_mut(rows) {
        for (x, inv) in row.iter_mut().zip(&*sum) {
            *x *= inv;
        }
    }
}

/// The weights' gradient `ds` (`nk × rows`, like the weights `at`) → the scores':
/// dS = A ⊙ (dA − Σ_keys dA ⊙ A), per query, in the first `cols` columns. `dot` is room for
/// `cols` values.
pub(super) fn backward(rows: usize, cols: usize, ds: &mut [f32], at: &[f32], dot: &mut [f32]) {
    let dot = &mut dot[..cols];
    dot.fill(0.0);
    for (d_row, a_row) in ds.chunks_exact(rows).zip(at.chunks_exact(rows)) {
        for ((s, d), a) in dot.iter_mut().zip(d_row).zip(a_row) {
            *s += d * a;
        }
    }
    for (d_row, a_row) in ds.chunks_exact_mut(rows).zip(at.chunks_exact(rows)) {
        for ((d, a), s) in d_row.iter_mut().zip(a_row).zip(&*dot) {
            *d = a * (*d - s);
        }
    }
}
