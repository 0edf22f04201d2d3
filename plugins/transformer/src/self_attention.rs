//! Multi-head self-attention as PyTorch's `nn.MultiheadAttention` in `nn.Transformer`: the
//! packed in-projection `in_proj_weight` `[3P, P]` (rows q; k; v) and `in_proj_bias` `[3P]`,
//! the output projection `out_proj`, a key-padding mask and, in the decoder, the causal mask.
//! Masked keys get logit −∞ (the official masks merged into one float mask). In decoding, a
//! [`KvCache`] keeps the keys and values of the positions generated so far, so that each step
//! projects only the new position ([`SelfAttention::step`]).
//!
//! The queries, keys and values stay in the `(Batch, Seq, Model)` layout the projections give
//! (head h in columns h·E..(h+1)·E), and the attention is one fused kernel
//! ([`Kernels::multi_head_attention`](vaezoo_core::kernels::Kernels::multi_head_attention)).

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Head, Model, Seq};
use vaezoo_core::kernels::{AttentionSpec, Weight};
use vaezoo_core::layers::Activation::Identity;
use vaezoo_core::params::{ParamBuilder, ParamId};
use vaezoo_core::{Error, Result};
use vaezoo_nvib::num::{Dev, Real, Tr};

use crate::dense::Dense;
use crate::weights::Source;

/// `name.in_proj_weight`, `name.in_proj_bias`, `name.out_proj.{weight,bias}`.
#[derive(Clone, Debug)]
pub struct SelfAttention {
    in_weight: ParamId,
    in_bias: ParamId,
    out: Dense<Model, Model>,
    heads: Head,
    width: Model,
}

impl SelfAttention {
    /// Declares the projections as `nn.MultiheadAttention` under the NVAE's `train.py`:
    /// Xavier-uniform weights, zero in- and out-projection biases.
    /// `heads` must divide `width`.
    pub fn new(params: &mut ParamBuilder, name: &str, width: Model, heads: Head) -> Result<Self> {
        if heads.0 == 0 || !width.0.is_multiple_of(heads.0) {
            return Err(Error::Shape(format!(
                "{} heads do not divide the model width {}",
                heads.0, width.0
            )));
        }
        let xavier = (6.0 / (4.0 * width.0 as f32)).sqrt();
        let in_weight = params.uniform(
            &format!("{name}.in_proj_weight"),
            &[3 * width.0, width.0],
            xavier,
        );
        let in_bias = params.constant(&format!("{name}.in_proj_bias"), &[3 * width.0], 0.0);
        let out = Dense::with_zero_bias(params, &format!("{name}.out_proj"), width, width);
        Ok(Self {
            in_weight,
            in_bias,
            out,
            heads,
            width,
        })
    }

    /// softmax(q kᵀ/√E + mask) v per head, then the output projection. `keep` (row-major
    /// `Batch × Seq`, true = a real token) masks padded keys; `causal` also masks every key
    /// after the query. A query whose keys are all masked gives NaN, as in PyTorch.
    ///
    /// # Shapes
    /// `x: (Batch, Seq, Model)`, `keep: Batch × Seq` → `(Batch, Seq, Model)`
    pub fn forward<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        keep: &[bool],
        causal: bool,
    ) -> Tr<(Batch, Seq, Model), E, D> {
        let (batch, seq, _) = *x.shape();
        assert_eq!(keep.len(), batch.0 * seq.0, "keep must be Batch × Seq");
        // A padded position's query, key and value are never read (its key is masked, its
        // output is padding), so none of them is computed.
        let [q, k, v] = self.project(w, x, Some(keep));
        self.attend(w, q, k, v, Some(keep), causal)
    }

    /// One decoding step: the new position attends to the cached keys and values and to its
    /// own, which join the cache. Every key is visible: the cache holds earlier positions only,
    /// and a decoder generating one token at a time has no padding. Over steps this equals
    /// [`forward`](Self::forward) with the causal mask on the whole prefix, at O(t) per step
    /// rather than the prefix's O(t²).
    ///
    /// # Shapes
    /// `x: (Batch, Seq(1), Model)` → `(Batch, Seq(1), Model)`; the cache grows from
    /// `(Batch, Seq(t), Model)` to `(Batch, Seq(t + 1), Model)`
    ///
    /// # Panics
    /// If `x` has more than one position.
    pub fn step<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        cache: &mut KvCache<E, D>,
    ) -> Tr<(Batch, Seq, Model), E, D> {
        assert_eq!(x.shape().1, Seq(1), "one new position per step");
        let [q, k, v] = self.project(w, x, None);
        let join = |cached: &Option<Packed<E, D>>, new: Tr<_, E, D>| match cached {
            Some(c) => (c.clone().put_tape(OwnedTape::default()), new).concat_along(Axis::<1>),
            None => new,
        };
        let (k, v) = (join(&cache.keys, k), join(&cache.values, v));
        // The cache keeps values only: each step's tape is dropped with the step.
        cache.keys = Some(k.retaped());
        cache.values = Some(v.retaped());
        self.attend(w, q, k, v, None, false)
    }

    /// The queries, keys and values of `x` (rows q; k; v of the packed in-projection), each
    /// `(Batch, Seq, Model)` with the heads packed; the queries carry `x`'s tape. With `keep`
    /// (`Batch × Seq`), only the flagged positions are projected; the others are zero.
    fn project<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        keep: Option<&[bool]>,
    ) -> [Tr<(Batch, Seq, Model), E, D>; 3] {
        let (batch, seq, p) = *x.shape();
        let dev = w.device().clone();
        let rows = batch.0 * seq.0;
        let flat = x.reshape_like(&(rows, p));
        let weights = w.get(self.in_weight, (Const::<3>, p, p));
        let biases = w.get(self.in_bias, (Const::<3>, p));
        let project = |i: usize, x: Tr<(usize, Model), E, D>| {
            let weight = weights.retaped().select(dev.tensor(i));
            let bias = biases.retaped().select(dev.tensor(i));
            let weight = Weight::OutIn(weight);
            match keep {
                Some(keep) => D::linear_rows(x, weight, Some(bias), Identity, keep, None),
                None => D::linear(x, weight, Some(bias), Identity),
            }
            .reshape_like(&(batch, seq, p))
        };
        let (k, v) = (project(1, flat.retaped()), project(2, flat.retaped()));
        [project(0, flat), k, v]
    }

    /// softmax(q kᵀ/√E + mask) v per head, then the output projection: `keep` (`Batch × Key`)
    /// hides padded keys, `causal` every key after the query. With `keep`, queries and keys are
    /// the same positions, and the padded ones' outputs are zero.
    ///
    /// # Shapes
    /// `q: (Batch, Query, Model)`, `k, v: (Batch, Key, Model)` → `(Batch, Query, Model)`
    fn attend<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        q: Tr<(Batch, Seq, Model), E, D>,
        k: Tr<(Batch, Seq, Model), E, D>,
        v: Tr<(Batch, Seq, Model), E, D>,
        keep: Option<&[bool]>,
        causal: bool,
    ) -> Tr<(Batch, Seq, Model), E, D> {
        let spec = AttentionSpec {
            heads: self.heads,
            shared_kv: false,
            scale: 1.0 / ((self.width.0 / self.heads.0) as f64).sqrt(),
            keep,
            causal,
            queries: keep,
            query_gate: false,
            want_weights: false,
        };
        let (out, _) = D::multi_head_attention(q, k, v, None, spec);
        self.out.forward_rows(w, out, Identity, keep, None)
    }
}

/// Keys or values, heads packed, `(Batch, Seq, Model)`.
type Packed<E, D> = Tensor<(Batch, Seq, Model), E, D>;

/// The keys and values of the positions decoded so far, `(Batch, Seq(t), Model)` each (heads
/// packed), off any tape; empty before the first [`SelfAttention::step`].
#[derive(Clone, Debug)]
pub struct KvCache<E: Real, D: Dev<E>> {
    keys: Option<Packed<E, D>>,
    values: Option<Packed<E, D>>,
}

impl<E: Real, D: Dev<E>> Default for KvCache<E, D> {
    fn default() -> Self {
        Self {
            keys: None,
            values: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check, input, store};
    use vaezoo_core::rng::{normal_vec, seeded};

    fn setup() -> (vaezoo_core::params::ParamStore<Cpu>, SelfAttention) {
        store(|pb| SelfAttention::new(pb, "sa", Model(4), Head(2)).unwrap())
    }

    #[test]
    fn padded_positions_change_nothing_and_are_zero() {
        let (params, sa) = setup();
        let shape = (Batch(1), Seq(3), Model(4));
        let mut values = normal_vec(&mut seeded(1), 12);
        let y1 = sa.forward(
            &params,
            input(&params, values.clone(), shape),
            &[true, true, false],
            false,
        );
        values[8..].iter_mut().for_each(|v| *v += 5.0);
        let y2 = sa.forward(
            &params,
            input(&params, values.clone(), shape),
            &[true, true, false],
            false,
        );
        assert_eq!(y1.as_vec()[..8], y2.as_vec()[..8], "padded key");
        assert_eq!(
            y2.as_vec()[8..],
            [0.0; 4],
            "a padded position is not computed"
        );
        let c1 = sa.forward(
            &params,
            input(&params, values.clone(), shape),
            &[true; 3],
            true,
        );
        values[4..].iter_mut().for_each(|v| *v -= 3.0);
        let c2 = sa.forward(&params, input(&params, values, shape), &[true; 3], true);
        assert_eq!(c1.as_vec()[..4], c2.as_vec()[..4], "causal: later keys");
        assert_ne!(c1.as_vec()[4..8], c2.as_vec()[4..8]);
    }

    #[test]
    fn steps_through_the_cache_equal_the_causal_forward() {
        let (params, sa) = setup();
        let (batch, len, width) = (2, 4, 4);
        let values = normal_vec(&mut seeded(3), batch * len * width);
        let shape = (Batch(batch), Seq(len), Model(width));
        let keep = vec![true; batch * len];
        let full = sa
            .forward(&params, input(&params, values.clone(), shape), &keep, true)
            .as_vec();
        let mut cache = KvCache::default();
        for t in 0..len {
            let new: Vec<f32> = values
                .chunks(len * width)
                .flat_map(|row| &row[t * width..(t + 1) * width])
                .copied()
                .collect();
            let x = input(&params, new, (Batch(batch), Seq(1), Model(width)));
            let got = sa.step(&params, x, &mut cache).as_vec();
            let want = full
                .chunks(len * width)
                .flat_map(|row| &row[t * width..(t + 1) * width]);
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "position {t}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn heads_must_divide_the_width() {
        let mut rng = seeded(0);
        let mut pb = ParamBuilder::new(&mut rng);
        assert!(SelfAttention::new(&mut pb, "sa", Model(4), Head(3)).is_err());
    }

    #[test]
    fn gradients_match_finite_differences() {
        for causal in [false, true] {
            check(
                |pb| SelfAttention::new(pb, "sa", Model(4), Head(2)).unwrap(),
                (Batch(2), Seq(3), Model(4)),
                |sa, p, x| {
                    sa.forward(p, x, &[true, true, true, true, false, true], causal)
                        .sin()
                        .sum()
                },
            );
        }
    }
}
