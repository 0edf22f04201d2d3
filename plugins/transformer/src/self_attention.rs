//! Multi-head self-attention as PyTorch's `nn.MultiheadAttention` in `nn.Transformer`: the
//! packed in-projection `in_proj_weight` `[3P, P]` (rows q; k; v) and `in_proj_bias` `[3P]`,
//! the output projection `out_proj`, a key-padding mask and, in the decoder, the causal mask.
//! Masked keys get logit −∞ (the official masks merged into one float mask).

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Head, HeadDim, Model, Seq};
use vaezoo_core::params::{ParamBuilder, ParamId};
use vaezoo_core::{Error, Result};
use vaezoo_nvib::num::{c, Dev, Real, Tr};

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
    /// Declares the projections (Xavier-uniform weights; zero in-projection bias, as PyTorch).
    /// `heads` must divide `width`.
    pub fn new(params: &mut ParamBuilder, name: &str, width: Model, heads: Head) -> Result<Self> {
        if heads.0 == 0 || width.0 % heads.0 != 0 {
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
        let out = Dense::new(params, &format!("{name}.out_proj"), width, width, true);
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
        let dev = w.device().clone();
        let p = self.width;
        let packed = (Const::<3>, p, p);
        let rows = batch.0 * seq.0;
        let flat = x.reshape_like(&(rows, p));
        let project = |i: usize| {
            let weight = w
                .get(self.in_weight, packed)
                .select(dev.tensor(i))
                .permute::<_, Axes2<1, 0>>();
            let bias = w.get(self.in_bias, (Const::<3>, p)).select(dev.tensor(i));
            let y =
                flat.retaped::<OwnedTape<E, D>>().matmul(weight) + bias.broadcast_like(&(rows, p));
            let head_dim = HeadDim(p.0 / self.heads.0);
            y.reshape_like(&(batch, seq, self.heads, head_dim))
                .permute::<_, Axes4<0, 2, 1, 3>>()
        };
        let (q, k, v) = (project(0), project(1), project(2));
        let (q, tape) = q.split_tape();
        let q = q.put_tape(tape.merge(flat.split_tape().1));
        let scale = c::<E>(1.0 / ((p.0 / self.heads.0) as f64).sqrt());
        let logits = (q * scale).matmul(k.permute::<_, Axes4<0, 1, 3, 2>>());
        let shape = *logits.shape();
        let mask = dev
            .tensor_from_vec(mask::<E>(keep, batch.0, seq.0, causal), (batch, seq, seq))
            .broadcast_like::<_, Axis<1>>(&shape);
        let attn = (logits + mask).softmax::<Axis<3>>();
        let out = attn
            .matmul(v)
            .permute::<_, Axes4<0, 2, 1, 3>>()
            .reshape_like(&(batch, seq, p));
        self.out.forward(w, out)
    }
}

/// The additive mask `(Batch, query, key)`: 0, or −∞ for a padded key or (causal) a later one.
fn mask<E: Real>(keep: &[bool], batch: usize, seq: usize, causal: bool) -> Vec<E> {
    let mut m = Vec::with_capacity(batch * seq * seq);
    for b in 0..batch {
        for i in 0..seq {
            for j in 0..seq {
                let visible = keep[b * seq + j] && !(causal && j > i);
                m.push(if visible {
                    E::zero()
                } else {
                    E::neg_infinity()
                });
            }
        }
    }
    m
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
    fn masked_keys_do_not_change_the_output() {
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
