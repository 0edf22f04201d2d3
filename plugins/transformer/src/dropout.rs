//! Dropout: in training, each element is zeroed with probability p and the survivors scaled
//! by 1/(1 − p), with the mask seeded from the host generator (see
//! [`dropout_mask`]); the identity in evaluation.

use dfdx::prelude::*;
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::{dropout_mask, HostRng};
use vaezoo_nvib::num::{Dev, Real, Tr};

/// Dropout with probability `p` in `[0, 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    /// # Panics
    /// If `p` is not in `[0, 1)`.
    pub fn new(p: f64) -> Self {
        assert!((0.0..1.0).contains(&p), "dropout probability {p}");
        Self { p }
    }

    /// `x` in evaluation or with p = 0 (nothing drawn); otherwise `x ⊙ mask / (1 − p)`.
    ///
    /// # Shapes
    /// any `S` → `S`
    pub fn forward<S: Shape, E: Real, D: Dev<E>>(
        &self,
        x: Tr<S, E, D>,
        mode: Mode,
        rng: &mut HostRng,
    ) -> Tr<S, E, D> {
        let shape = *x.shape();
        match self.mask(shape.num_elements(), mode, rng) {
            Some(mask) => {
                let mask = x.device().tensor_from_vec(mask, shape);
                x * mask
            }
            None => x,
        }
    }

    /// The scaled keep mask of `len` elements: 0 with probability p, else 1/(1 − p); `None`
    /// in evaluation or with p = 0 (nothing drawn). For kernels that apply it themselves.
    pub fn mask<E: Real>(&self, len: usize, mode: Mode, rng: &mut HostRng) -> Option<Vec<E>> {
        if mode == Mode::Eval || self.p == 0.0 {
            return None;
        }
        Some(dropout_mask(rng, self.p, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check, input, store};
    use vaezoo_core::axes::{Batch, Model, Seq};
    use vaezoo_core::rng::seeded;

    #[test]
    fn evaluation_is_the_identity_and_training_drops_and_rescales() {
        let (params, _) = store(|_| ());
        let shape = (Batch(1), Seq(1), Model(4000));
        let x = || input(&params, vec![1.0; 4000], shape);
        let d = Dropout::new(0.25);
        let mut rng = seeded(1);
        assert_eq!(
            d.forward(x(), Mode::Eval, &mut rng).as_vec(),
            vec![1.0; 4000]
        );
        let y = d.forward(x(), Mode::Train, &mut rng).as_vec();
        let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / 4000.0;
        assert!((zeros - 0.25).abs() < 0.03, "dropped {zeros}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        let again = d.forward(x(), Mode::Train, &mut seeded(1)).as_vec();
        let first = d.forward(x(), Mode::Train, &mut seeded(1)).as_vec();
        assert_eq!(again, first, "the mask comes from the host generator");
    }

    #[test]
    fn gradients_match_finite_differences() {
        check(
            |_| Dropout::new(0.5),
            (Batch(2), Seq(1), Model(6)),
            |d, _, x| d.forward(x, Mode::Train, &mut seeded(3)).square().sum(),
        );
    }
}
