//! A fully connected layer, `y = x W + b`.

use dfdx::prelude::*;
use dfdx::shapes::Dim;

use crate::backend::{Backend, Traced};
use crate::kernels::Weight;
use crate::layers::Activation;
use crate::params::{ParamBuilder, ParamId, ParamStore};
use crate::torch_layout::TorchView;

/// `y = x W + b` from axis `I` to axis `O`; `W` is stored `(I, O)` (`nn.Linear`'s `(O, I)`
/// transposed, [`TorchView::Transposed`]), `b` is `(O,)`.
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
        params.set_torch_view(weight, TorchView::Transposed);
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
        self.forward_activated(params, x, Activation::Identity)
    }

    /// `activation(x W + b)` in one fused kernel; `x` may carry no tape (an input that needs
    /// no gradient, such as the data), and then none is computed for it.
    ///
    /// # Shapes
    /// `x: (B, I)` → `(B, O)`
    pub fn forward_activated<B: Dim, D: Backend, T>(
        &self,
        params: &ParamStore<D>,
        x: Tensor<(B, I), f32, D, T>,
        activation: Activation,
    ) -> Traced<(B, O), D>
    where
        T: Tape<f32, D>,
        OwnedTape<f32, D>: Merge<T>,
    {
        let w = params.get(self.weight, (self.in_dim, self.out_dim));
        let b = params.get(self.bias, (self.out_dim,));
        D::linear(x, Weight::InOut(w), Some(b), activation)
    }

    /// # Shapes
    /// `x: (B, S, I)` → `(B, S, O)`
    pub fn forward_seq<B: Dim, S: Dim, D: Backend>(
        &self,
        params: &ParamStore<D>,
        x: Traced<(B, S, I), D>,
    ) -> Traced<(B, S, O), D> {
        let (b, s, i) = *x.shape();
        let flat = x.reshape_like(&(b.size() * s.size(), i));
        self.forward(params, flat)
            .reshape_like(&(b, s, self.out_dim))
    }
}
