//! Finite-difference gradient checks: every numerical op and every plugin is tested by
//! comparing the tape's gradients with central differences of the loss.
//!
//! Inputs you want to check (not only weights) can be declared as parameters too: a
//! [`ParamStore`] is just named tensors.

use dfdx::prelude::*;

use crate::backend::{Backend, Traced};
use crate::params::ParamStore;

/// Tolerances and effort of a check.
#[derive(Clone, Debug)]
pub struct GradCheck {
    /// Step of the central difference.
    pub eps: f32,
    /// Allowed absolute difference.
    pub atol: f32,
    /// Allowed difference relative to the larger of the two gradients.
    pub rtol: f32,
    /// Coordinates checked per parameter tensor, spread evenly over it.
    pub per_param: usize,
}

impl Default for GradCheck {
    /// Tolerances for f32 losses of order 1–100.
    fn default() -> Self {
        Self {
            eps: 1e-2,
            atol: 2e-3,
            rtol: 2e-2,
            per_param: 6,
        }
    }
}

/// What a passing check measured.
#[derive(Clone, Debug)]
pub struct GradReport {
    /// Coordinates compared.
    pub checked: usize,
    /// The largest |analytic − numeric|.
    pub max_abs_err: f32,
    /// Parameters whose analytic gradient is zero everywhere.
    pub zero_gradient: Vec<String>,
}

impl GradCheck {
    /// Compares d`loss`/d`params` from the tape with central differences. `loss` must be a
    /// deterministic function of the parameters (reseed any generator inside it).
    ///
    /// Returns a description of every mismatch as the error.
    pub fn run<D: Backend>(
        &self,
        params: &mut ParamStore<D>,
        mut loss: impl FnMut(&ParamStore<D>) -> Traced<(), D>,
    ) -> Result<GradReport, String> {
        let mut grads = vec![Vec::new(); params.len()];
        let mut tape_grads = loss(params).backward();
        params.gradients_into(&mut tape_grads, &mut grads);
        drop(tape_grads);
        let mut report = GradReport {
            checked: 0,
            max_abs_err: 0.0,
            zero_gradient: Vec::new(),
        };
        let mut failures = Vec::new();
        for (i, grad) in grads.iter().enumerate() {
            if grad.iter().all(|&g| g == 0.0) {
                report.zero_gradient.push(params.name(i).to_string());
            }
            let original = params.host(i).to_vec();
            let n = original.len();
            let picks = self.per_param.min(n).max(1);
            for k in 0..picks {
                let j = k * n / picks;
                let mut values = original.clone();
                values[j] = original[j] + self.eps;
                params.set(i, &values).map_err(|e| e.to_string())?;
                let plus = loss(params).as_vec()[0];
                values[j] = original[j] - self.eps;
                params.set(i, &values).map_err(|e| e.to_string())?;
                let minus = loss(params).as_vec()[0];
                params.set(i, &original).map_err(|e| e.to_string())?;
                let numeric = (plus - minus) / (2.0 * self.eps);
                let err = (grad[j] - numeric).abs();
                report.checked += 1;
                report.max_abs_err = report.max_abs_err.max(err);
                let scale = grad[j].abs().max(numeric.abs());
                if err.is_nan() || err > self.atol + self.rtol * scale {
                    failures.push(format!(
                        "{}[{j}]: tape {} vs finite difference {numeric}",
                        params.name(i),
                        grad[j]
                    ));
                }
            }
        }
        if failures.is_empty() {
            Ok(report)
        } else {
            Err(failures.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::axes::{Batch, Feature, Hidden};
    use crate::backend::lift;
    use crate::layers::{Activation, Linear};
    use crate::params::ParamBuilder;
    use crate::rng::{normal_vec, seeded};

    type Setup = (
        ParamStore<Cpu>,
        Linear<Feature, Hidden>,
        Tensor<(Batch, Feature), f32, Cpu>,
    );

    fn linear_setup() -> Setup {
        let mut rng = seeded(3);
        let mut pb = ParamBuilder::new(&mut rng);
        let layer = Linear::new(&mut pb, "lin", Feature(5), Hidden(4));
        let dev = Cpu::default();
        let params = ParamStore::new(&dev, pb.finish());
        let x = dev.tensor_from_vec(normal_vec(&mut seeded(4), 15), (Batch(3), Feature(5)));
        (params, layer, x)
    }

    #[test]
    fn linear_gradients_match_finite_differences() {
        for act in [
            Activation::Identity,
            Activation::Tanh,
            Activation::Sigmoid,
            Activation::Gelu,
            Activation::Relu,
            Activation::LeakyRelu,
        ] {
            let (mut params, layer, x) = linear_setup();
            let report = GradCheck {
                per_param: 20,
                ..Default::default()
            }
            .run(&mut params, |p| {
                let y = act.forward(layer.forward(p, lift(x.clone())));
                (y.square() + 0.5).sum()
            })
            .unwrap_or_else(|e| panic!("{act:?}: {e}"));
            assert_eq!(report.checked, 20 + 4);
            assert!(
                report.zero_gradient.is_empty(),
                "{act:?}: {:?}",
                report.zero_gradient
            );
        }
    }

    #[test]
    fn a_wrong_gradient_is_caught() {
        // The tape sees `w`, but the loss's value also depends on the host copy in a way the
        // tape does not: the check must fail.
        let (mut params, layer, x) = linear_setup();
        let result = GradCheck::default().run(&mut params, |p| {
            let hidden_shift = p.host(0)[0] * 10.0;
            layer.forward(p, lift(x.clone())).sum::<(), _>() + hidden_shift
        });
        assert!(result.is_err());
    }
}
