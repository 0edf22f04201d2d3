//! Layer normalisation over the model width, as PyTorch's `nn.LayerNorm` (biased variance,
//! ε inside the square root, ε = 1e-5 in `nn.Transformer`).

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use vaezoo_core::axes::Model;
use vaezoo_core::params::{ParamBuilder, ParamId};
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::HostRng;
use vaezoo_nvib::num::{Dev, Real, Tr};

use crate::dropout::Dropout;
use crate::weights::Source;

/// PyTorch's default ε.
pub const EPS: f64 = 1e-5;

/// `(x − mean) / √(var + ε) ⊙ weight + bias` over `Model`; `name.weight`, `name.bias`: `[Model]`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: ParamId,
    bias: ParamId,
    width: Model,
}

impl LayerNorm {
    /// Declares `name.weight` (ones) and `name.bias` (zeros).
    pub fn new(params: &mut ParamBuilder, name: &str, width: Model) -> Self {
        Self {
            weight: params.constant(&format!("{name}.weight"), &[width.0], 1.0),
            bias: params.constant(&format!("{name}.bias"), &[width.0], 0.0),
            width,
        }
    }

    /// # Shapes
    /// `x: (B, N, Model)` → `(B, N, Model)`
    pub fn forward<B: Dim, N: Dim, E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(B, N, Model), E, D>,
    ) -> Tr<(B, N, Model), E, D> {
        let shape = *x.shape();
        let rows = shape.0.size() * shape.1.size();
        let flat = (rows, self.width);
        let (gamma, beta) = (
            w.get(self.weight, (self.width,)),
            w.get(self.bias, (self.width,)),
        );
        D::layer_norm(x.reshape_like(&flat), gamma, beta, EPS).reshape_like(&shape)
    }

    /// A post-LN residual sublayer's end: `norm(x + dropout(sub))`, in one kernel.
    ///
    /// # Shapes
    /// `x`, `sub`: `(B, N, Model)` → `(B, N, Model)`
    pub fn residual<B: Dim, N: Dim, E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(B, N, Model), E, D>,
        sub: Tr<(B, N, Model), E, D>,
        (dropout, mode, rng): (&Dropout, Mode, &mut HostRng),
    ) -> Tr<(B, N, Model), E, D> {
        let shape = *x.shape();
        let flat = (shape.0.size() * shape.1.size(), self.width);
        let mask = dropout.mask::<E>(shape.num_elements(), mode, rng);
        let (gamma, beta) = (
            w.get(self.weight, (self.width,)),
            w.get(self.bias, (self.width,)),
        );
        D::residual_layer_norm(
            x.reshape_like(&flat),
            sub.reshape_like(&flat),
            mask,
            gamma,
            beta,
            EPS,
        )
        .reshape_like(&shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check, input, store};
    use vaezoo_core::axes::{Batch, Seq};

    #[test]
    fn normalises_each_row() {
        let (params, ln) = store(|pb| LayerNorm::new(pb, "n", Model(4)));
        let x = input(
            &params,
            vec![1.0, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0],
            (Batch(1), Seq(2), Model(4)),
        );
        let y = ln.forward(&params, x).as_vec();
        let sd = (1.25f32 + 1e-5).sqrt();
        for (got, want) in y[..4].iter().zip([-1.5, -0.5, 0.5, 1.5]) {
            assert!((got - want / sd).abs() < 1e-5, "{got} vs {}", want / sd);
        }
        assert!(y[4..].iter().all(|v| v.abs() < 1e-6), "constant row → 0");
    }

    #[test]
    fn gradients_match_finite_differences() {
        check(
            |pb| {
                let ln = LayerNorm::new(pb, "n", Model(5));
                // Non-trivial affine parameters, so that their gradients are exercised.
                pb.declare("scale", &[5], vec![0.5, -1.0, 2.0, 1.5, 0.3]);
                ln
            },
            (Batch(2), Seq(2), Model(5)),
            |ln, p, x| {
                let y = ln.forward(p, x);
                let shape = *y.shape();
                let s = p.get(vaezoo_core::params::ParamId(2), (Model(5),));
                (y * s.broadcast_like(&shape)).sin().sum()
            },
        );
    }
}
