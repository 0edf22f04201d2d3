//! The official NVAE's positional encoding (`T:classes/Transformer.py:29-42`, §D of
//! `docs/nvib-math.md`): the embeddings are scaled by √d_model and rows 1..=L of a sinusoid
//! table are added (**positions start at 1**). The table is not the standard one: for even i,
//! pe[pos, i] = sin(pos / 10000^(2i/d)) and pe[pos, i+1] = cos(pos / 10000^(2(i+1)/d)); the
//! exponent uses the raw index i, not i/2.

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use vaezoo_core::axes::{Model, Seq};
use vaezoo_nvib::num::{c, Dev, Real, Tr};

/// The official positional encoding for a model width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositionalEncoding {
    width: Model,
}

impl PositionalEncoding {
    /// For embeddings of `width`.
    pub fn new(width: Model) -> Self {
        Self { width }
    }

    /// Rows `0..rows` of the table, row-major `rows × width` (row 0 is never added).
    pub fn table(&self, rows: usize) -> Vec<f64> {
        self.rows(0, rows)
    }

    /// Rows `first..first + count` of the table, row-major `count × width`.
    pub fn rows(&self, first: usize, count: usize) -> Vec<f64> {
        let d = self.width.0 as f64;
        let mut pe = vec![0.0; count * self.width.0];
        for (pos, row) in pe.chunks_mut(self.width.0).enumerate() {
            let pos = (first + pos) as f64;
            for (i, x) in row.iter_mut().enumerate() {
                let angle = |i: usize| pos / 10000f64.powf(2.0 * i as f64 / d);
                *x = if i % 2 == 0 {
                    angle(i).sin()
                } else {
                    angle(i).cos()
                };
            }
        }
        pe
    }

    /// `x·√d + pe[1..=L]`, the same rows for every batch element.
    ///
    /// # Shapes
    /// `x: (B, Seq, Model)` → `(B, Seq, Model)`
    pub fn forward<B: Dim, E: Real, D: Dev<E>>(
        &self,
        x: Tr<(B, Seq, Model), E, D>,
    ) -> Tr<(B, Seq, Model), E, D> {
        self.forward_from(x, 1)
    }

    /// `x·√d + pe[first..first + L]`: positions from `first` (a decoding step's new tokens).
    ///
    /// # Shapes
    /// `x: (B, Seq, Model)` → `(B, Seq, Model)`
    pub fn forward_from<B: Dim, E: Real, D: Dev<E>>(
        &self,
        x: Tr<(B, Seq, Model), E, D>,
        first: usize,
    ) -> Tr<(B, Seq, Model), E, D> {
        let shape = *x.shape();
        let len = shape.1;
        let rows = self.rows(first, len.0).iter().map(|&v| c::<E>(v)).collect();
        let pe = x
            .device()
            .tensor_from_vec(rows, (len, self.width))
            .broadcast_like(&shape);
        x * c::<E>((self.width.0 as f64).sqrt()) + pe
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check, input, store};
    use vaezoo_core::axes::Batch;

    #[test]
    fn the_table_uses_the_raw_index_in_the_exponent() {
        let pe = PositionalEncoding::new(Model(4)).table(3);
        assert_eq!(&pe[..4], &[0.0, 1.0, 0.0, 1.0], "row 0");
        let row2 = &pe[8..];
        assert!((row2[0] - 2f64.sin()).abs() < 1e-15);
        assert!((row2[1] - (2.0 / 10000f64.powf(0.5)).cos()).abs() < 1e-15);
        assert!((row2[2] - (2.0 / 10000f64.powf(1.0)).sin()).abs() < 1e-15);
        assert!((row2[3] - (2.0 / 10000f64.powf(1.5)).cos()).abs() < 1e-15);
    }

    #[test]
    fn adds_rows_from_position_one_to_scaled_embeddings() {
        let (params, _) = store(|_| ());
        let enc = PositionalEncoding::new(Model(2));
        let x = input(
            &params,
            vec![1.0, 0.0, 0.0, 0.0],
            (Batch(1), Seq(2), Model(2)),
        );
        let y = enc.forward(x).as_vec();
        let pe = enc.table(3);
        let want = [2f64.sqrt() + pe[2], pe[3], pe[4], pe[5]];
        for (g, w) in y.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn rows_from_any_position_are_the_tables() {
        let enc = PositionalEncoding::new(Model(6));
        assert_eq!(enc.rows(3, 2), enc.table(5)[18..]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        check(
            |_| PositionalEncoding::new(Model(4)),
            (Batch(2), Seq(3), Model(4)),
            |pe, _, x| pe.forward(x).square().sum(),
        );
    }
}
