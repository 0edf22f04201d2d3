//! A stack of linear layers with an activation after each hidden layer, between two typed
//! axes `I` and `O`: `I → Hidden → … → Hidden → O`.

use vaezoo_core::axes::Hidden;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::dfdx::shapes::Dim;
use vaezoo_core::layers::{Activation, Linear};
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::{Backend, Traced};

/// `I → Hidden(h₀) → … → Hidden(hₙ) → O`, the activation after every hidden layer and, when
/// `activate_output`, after the last one too.
pub struct Stack<I: Dim, O: Dim> {
    first: Option<Linear<I, Hidden>>,
    middle: Vec<Linear<Hidden, Hidden>>,
    last: Linear<Hidden, O>,
    activation: Activation,
    activate_output: bool,
    in_dim: I,
}

impl<I: Dim, O: Dim> Stack<I, O> {
    /// Declares `layers.0.*`, `layers.1.*`, … for `hidden.len() + 1` layers.
    pub fn new(
        params: &mut ParamBuilder,
        in_dim: I,
        hidden: &[usize],
        out_dim: O,
        activation: Activation,
        activate_output: bool,
    ) -> Self {
        let name = |i: usize| format!("layers.{i}");
        let first = hidden
            .first()
            .map(|&h| Linear::new(params, &name(0), in_dim, Hidden(h)));
        let last_in = hidden.last().copied().unwrap_or(in_dim.size());
        let middle = hidden
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(params, &name(i + 1), Hidden(w[0]), Hidden(w[1])))
            .collect();
        let last = Linear::new(params, &name(hidden.len()), Hidden(last_in), out_dim);
        Self {
            first,
            middle,
            last,
            activation,
            activate_output,
            in_dim,
        }
    }

    /// # Shapes
    /// `x: (B, I)` → `(B, O)`
    pub fn forward<B: Dim, D: Backend, T>(
        &self,
        params: &ParamStore<D>,
        x: Tensor<(B, I), f32, D, T>,
    ) -> Traced<(B, O), D>
    where
        T: Tape<f32, D>,
        OwnedTape<f32, D>: Merge<T>,
    {
        let output_activation = if self.activate_output {
            self.activation
        } else {
            Activation::Identity
        };
        let Some(first) = &self.first else {
            let batch = x.shape().0;
            let x = x.reshape_like(&(batch, Hidden(self.in_dim.size())));
            return self.last.forward_activated(params, x, output_activation);
        };
        let mut h = first.forward_activated(params, x, self.activation);
        for layer in &self.middle {
            h = layer.forward_activated::<B, D, OwnedTape<f32, D>>(params, h, self.activation);
        }
        self.last
            .forward_activated::<B, D, OwnedTape<f32, D>>(params, h, output_activation)
    }
}
