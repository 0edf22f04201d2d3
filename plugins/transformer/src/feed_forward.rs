//! The Transformer's position-wise feed-forward block: `linear2(dropout(relu(linear1(x))))`,
//! with a hidden width of 4·d in the NVAE.

use dfdx::prelude::{Dim, HasShape};
use vaezoo_core::axes::{Batch, Hidden, Model, Seq};
use vaezoo_core::layers::Activation;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::HostRng;
use vaezoo_nvib::num::{Dev, Real, Tr};

use crate::dense::Dense;
use crate::dropout::Dropout;
use crate::weights::Source;

/// `name_prefix.linear1` (`Model → Hidden`) and `name_prefix.linear2` (`Hidden → Model`).
#[derive(Clone, Debug)]
pub struct FeedForward {
    linear1: Dense<Model, Hidden>,
    linear2: Dense<Hidden, Model>,
    dropout: Dropout,
}

impl FeedForward {
    /// Declares `{prefix}linear1.*` and `{prefix}linear2.*` (`prefix` ends with a dot or is
    /// empty, as PyTorch names them directly in the layer).
    pub fn new(
        params: &mut ParamBuilder,
        prefix: &str,
        width: Model,
        hidden: Hidden,
        dropout: Dropout,
    ) -> Self {
        Self {
            linear1: Dense::new(params, &format!("{prefix}linear1"), width, hidden, true),
            linear2: Dense::new(params, &format!("{prefix}linear2"), hidden, width, true),
            dropout,
        }
    }

    /// Only the positions whose `keep` flag (row-major `Batch × Seq`) is true are computed;
    /// the others (padding) are zero. `None` computes every position.
    ///
    /// # Shapes
    /// `x: (Batch, Seq, Model)`, `keep: Batch × Seq` → `(Batch, Seq, Model)`
    pub fn forward<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        keep: Option<&[bool]>,
        mode: Mode,
        rng: &mut HostRng,
    ) -> Tr<(Batch, Seq, Model), E, D> {
        let linear1 = &self.linear1;
        let h = match keep {
            // The dropout fused into linear1's kernel.
            Some(keep) => {
                let (b, n, _) = *x.shape();
                let len = b.size() * n.size() * linear1.out_dim().size();
                let mask = self.dropout.mask(len, mode, rng);
                linear1.forward_rows(w, x, Activation::Relu, Some(keep), mask)
            }
            None => {
                let h = linear1.forward_rows(w, x, Activation::Relu, None, None);
                self.dropout.forward(h, mode, rng)
            }
        };
        self.linear2
            .forward_rows(w, h, Activation::Identity, keep, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dropout::Dropout;
    use crate::testing::check;
    use dfdx::prelude::*;
    use vaezoo_core::rng::seeded;

    #[test]
    fn gradients_match_finite_differences() {
        check(
            |pb| FeedForward::new(pb, "", Model(3), Hidden(12), Dropout::new(0.2)),
            (Batch(2), Seq(2), Model(3)),
            |ff, p, x| {
                ff.forward(p, x, None, Mode::Train, &mut seeded(5))
                    .sin()
                    .sum()
            },
        );
    }

    #[test]
    fn fused_dropout_of_kept_rows_has_finite_difference_gradients() {
        let keep = [true, false, true, true];
        check(
            |pb| FeedForward::new(pb, "", Model(3), Hidden(12), Dropout::new(0.3)),
            (Batch(2), Seq(2), Model(3)),
            |ff, p, x| {
                ff.forward(p, x, Some(&keep), Mode::Train, &mut seeded(6))
                    .sin()
                    .sum()
            },
        );
    }
}
