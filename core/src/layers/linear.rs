//! A fully connected layer, `y = x W + b`.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use crate::backend::{Backend, Traced};
use crate::params::{ParamBuilder, ParamId, ParamStore};

/// `y = x W + b` from axis `I` to axis `O`; `W` is stored `(I, O)`, `b` is `(O,)`.
///
/// Initialised as PyTorch's `nn.Linear`: both uniform in `±1/sqrt(in)`.
#[derive(Clone, Debug)]
pub struct Linear<I: Dim, O: Dim> {
    weight: ParamId,
    bias: ParamId,
    in_dim: I,
    out_dim: O,
}

impl<I: Dim, O: Dim> Linear<I, O> {
    /// Declares `name.weight` and `name.bias`.
    pub fn new(params: &mut ParamBuilder, name: &str, in_dim: I, out_dim: O) -> Self {
        let (i, o) = (in_dim.size(), out_dim.size());
        let bound = 1.0 / (i as f32).sqrt();
        let weight = params.uniform(&format!("{name}.weight"), &[i, o], bound);
        let bias = params.uniform(&format!("{name}.bias"), &[o], bound);
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

    /// # Shapes
    /// `x: (B, I)` → `(B, O)`
    pub fn forward<B: Dim, D: Backend>(
        &self,
        params: &ParamStore<D>,
        x: Traced<(B, I), D>,
    ) -> Traced<(B, O), D> {
        let w = params.get(self.weight, (self.in_dim, self.out_dim));
        let b = params.get(self.bias, (self.out_dim,));
        let y = x.matmul(w);
        let shape = *y.shape();
        y + b.broadcast_like(&shape)
    }

    /// # Shapes
    /// `x: (B, S, I)` → `(B, S, O)`
    pub fn forward_seq<B: Dim, S: Dim, D: Backend>(
        &self,
        params: &ParamStore<D>,
        x: Traced<(B, S, I), D>,
    ) -> Traced<(B, S, O), D> {
        let w = params.get(self.weight, (self.in_dim, self.out_dim));
        let b = params.get(self.bias, (self.out_dim,));
        let y = x.matmul(w);
        let shape = *y.shape();
        y + b.broadcast_like(&shape)
    }
}
