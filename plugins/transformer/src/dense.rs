//! A fully connected layer in PyTorch's layout: `y = x Wᵀ + b` with `W` stored `[out, in]`, so
//! the official state_dict's tensors load as they are.

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use vaezoo_core::kernels::Weight;
use vaezoo_core::layers::Activation;
use vaezoo_core::params::{ParamBuilder, ParamId};
use vaezoo_nvib::num::{Dev, Real, Tr};

use crate::weights::Source;

/// `y = x Wᵀ (+ b)` from axis `I` to axis `O`; `name.weight` is `[O, I]`, `name.bias` `[O]`.
#[derive(Clone, Debug)]
pub struct Dense<I: Dim, O: Dim> {
    weight: ParamId,
    bias: Option<ParamId>,
    in_dim: I,
    out_dim: O,
}

impl<I: Dim, O: Dim> Dense<I, O> {
    /// Declares `name.weight` (Xavier-uniform, as the NVAE's `train.py` initialises every
    /// matrix) and, with `bias`, `name.bias` (PyTorch's Linear default, uniform in ±1/√in,
    /// which `train.py` keeps).
    pub fn new(params: &mut ParamBuilder, name: &str, in_dim: I, out_dim: O, bias: bool) -> Self {
        let bound = 1.0 / (in_dim.size() as f32).sqrt();
        Self::declare(params, name, in_dim, out_dim, |params, name, shape| {
            bias.then(|| params.uniform(name, shape, bound))
        })
    }

    /// As [`new`](Self::new) with a zero bias: the output projection of PyTorch's
    /// `nn.MultiheadAttention`, whose `_reset_parameters` zeroes `out_proj.bias`.
    pub fn with_zero_bias(params: &mut ParamBuilder, name: &str, in_dim: I, out_dim: O) -> Self {
        Self::declare(params, name, in_dim, out_dim, |params, name, shape| {
            Some(params.constant(name, shape, 0.0))
        })
    }

    fn declare(
        params: &mut ParamBuilder,
        name: &str,
        in_dim: I,
        out_dim: O,
        bias: impl FnOnce(&mut ParamBuilder, &str, &[usize]) -> Option<ParamId>,
    ) -> Self {
        let (i, o) = (in_dim.size(), out_dim.size());
        let xavier = (6.0 / (i + o) as f32).sqrt();
        let weight = params.uniform(&format!("{name}.weight"), &[o, i], xavier);
        let bias = bias(params, &format!("{name}.bias"), &[o]);
        Self {
            weight,
            bias,
            in_dim,
            out_dim,
        }
    }

    /// The output axis.
    pub fn out_dim(&self) -> O {
        self.out_dim
    }

    /// As one 2-D matmul over all `B·N` rows.
    ///
    /// # Shapes
    /// `x: (B, N, I)` → `(B, N, O)`
    pub fn forward<B: Dim, N: Dim, E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(B, N, I), E, D>,
    ) -> Tr<(B, N, O), E, D> {
        self.forward_activated(w, x, Activation::Identity)
    }

    /// `Kernels::weighted_nll` of the layer's output (logits) over `O`, without the logits as
    /// a tensor: one group per `B`, `targets` and `weights` one per `B·N` row.
    ///
    /// # Shapes
    /// `x: (B, N, I)` → `(B,)`
    pub fn weighted_nll<B: Dim, N: Dim, E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(B, N, I), E, D>,
        targets: &[usize],
        weights: &[E],
    ) -> Tr<(B,), E, D> {
        let (b, n, i) = *x.shape();
        let weight = Weight::OutIn(w.get(self.weight, (self.out_dim, self.in_dim)));
        let bias = self.bias.map(|id| w.get(id, (self.out_dim,)));
        let rows = x.reshape_like(&(b.size() * n.size(), i));
        D::linear_weighted_nll(rows, weight, bias, targets, weights, b)
    }

    /// `activation(x Wᵀ + b)` in one fused kernel.
    ///
    /// # Shapes
    /// `x: (B, N, I)` → `(B, N, O)`
    pub fn forward_activated<B: Dim, N: Dim, E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(B, N, I), E, D>,
        activation: Activation,
    ) -> Tr<(B, N, O), E, D> {
        self.forward_rows(w, x, activation, None, None)
    }

    /// [`forward_activated`](Self::forward_activated) of the positions whose `keep` flag
    /// (row-major `B × N`) is true; the others are zero and pass no gradient back (padding,
    /// which nothing downstream reads). `None` computes every position. `dropout`, a dropout
    /// layer's scaled keep mask over the output, is applied in the same pass (only with
    /// `keep`).
    ///
    /// # Shapes
    /// `x: (B, N, I)`, `keep: B × N`, `dropout: B × N × O` → `(B, N, O)`
    pub fn forward_rows<B: Dim, N: Dim, E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(B, N, I), E, D>,
        activation: Activation,
        keep: Option<&[bool]>,
        dropout: Option<Vec<E>>,
    ) -> Tr<(B, N, O), E, D> {
        let (b, n, i) = *x.shape();
        let rows = x.reshape_like(&(b.size() * n.size(), i));
        let weight = Weight::OutIn(w.get(self.weight, (self.out_dim, self.in_dim)));
        let bias = self.bias.map(|id| w.get(id, (self.out_dim,)));
        let y = match keep {
            Some(keep) => D::linear_rows(rows, weight, bias, activation, keep, dropout),
            None => {
                assert!(dropout.is_none(), "fused dropout needs the row flags");
                D::linear(rows, weight, bias, activation)
            }
        };
        y.reshape_like(&(b, n, self.out_dim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check, input, store};
    use vaezoo_core::axes::{Batch, Hidden, Model, Seq};

    #[test]
    fn computes_x_w_transposed_plus_b() {
        let (params, layer) = store(|pb| Dense::new(pb, "d", Model(2), Hidden(3), true));
        let x = input(&params, vec![1.0, 2.0], (Batch(1), Seq(1), Model(2)));
        let w = params.host(0);
        let b = params.host(1);
        let y = layer.forward(&params, x).as_vec();
        for o in 0..3 {
            let want = w[o * 2] + 2.0 * w[o * 2 + 1] + b[o];
            assert!((y[o] - want).abs() < 1e-6, "{o}: {} vs {want}", y[o]);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for bias in [true, false] {
            check(
                |pb| Dense::new(pb, "d", Model(4), Hidden(3), bias),
                (Batch(2), Seq(3), Model(4)),
                |layer, p, x| layer.forward(p, x).square().sum(),
            );
        }
    }
}
