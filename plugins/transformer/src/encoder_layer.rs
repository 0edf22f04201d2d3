//! PyTorch's `nn.TransformerEncoderLayer` with `norm_first=False` (post-LN), as the NVAE uses:
//! x ← norm1(x + dropout(self_attn(x))); x ← norm2(x + dropout(ffn(x))).

use vaezoo_core::axes::{Batch, Head, Hidden, Model, Seq};
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::HostRng;
use vaezoo_core::Result;
use vaezoo_nvib::num::{Dev, Real, Tr};

use crate::dropout::Dropout;
use crate::feed_forward::FeedForward;
use crate::layer_norm::LayerNorm;
use crate::self_attention::SelfAttention;
use crate::weights::Source;

/// The sizes and dropout of a Transformer layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerSizes {
    /// d_model.
    pub width: Model,
    /// Attention heads (they must divide the width).
    pub heads: Head,
    /// The feed-forward width (4·d_model in the NVAE).
    pub hidden: Hidden,
    /// Dropout probability (residual branches and feed-forward).
    pub dropout: f64,
}

/// `name.self_attn.*`, `name.linear{1,2}.*`, `name.norm{1,2}.*`.
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    self_attn: SelfAttention,
    ffn: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    dropout: Dropout,
}

impl EncoderLayer {
    /// Declares the layer's parameters under `name`.
    pub fn new(params: &mut ParamBuilder, name: &str, sizes: LayerSizes) -> Result<Self> {
        let dropout = Dropout::new(sizes.dropout);
        Ok(Self {
            self_attn: SelfAttention::new(
                params,
                &format!("{name}.self_attn"),
                sizes.width,
                sizes.heads,
            )?,
            ffn: FeedForward::new(
                params,
                &format!("{name}."),
                sizes.width,
                sizes.hidden,
                dropout,
            ),
            norm1: LayerNorm::new(params, &format!("{name}.norm1"), sizes.width),
            norm2: LayerNorm::new(params, &format!("{name}.norm2"), sizes.width),
            dropout,
        })
    }

    /// `keep` (row-major `Batch × Seq`, true = a real token) masks padded keys.
    ///
    /// # Shapes
    /// `x: (Batch, Seq, Model)`, `keep: Batch × Seq` → `(Batch, Seq, Model)`
    pub fn forward<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        keep: &[bool],
        mode: Mode,
        rng: &mut HostRng,
    ) -> Tr<(Batch, Seq, Model), E, D> {
        let a = self.self_attn.forward(w, x.retaped(), keep, false);
        let x = self.norm1.residual(w, x, a, (&self.dropout, mode, rng));
        let f = self.ffn.forward(w, x.retaped(), Some(keep), mode, rng);
        self.norm2.residual(w, x, f, (&self.dropout, mode, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check;
    use dfdx::prelude::*;
    use vaezoo_core::rng::seeded;

    #[test]
    fn gradients_match_finite_differences() {
        let sizes = LayerSizes {
            width: Model(4),
            heads: Head(2),
            hidden: Hidden(8),
            dropout: 0.1,
        };
        for mode in [Mode::Eval, Mode::Train] {
            check(
                |pb| EncoderLayer::new(pb, "l", sizes).unwrap(),
                (Batch(2), Seq(3), Model(4)),
                |l, p, x| {
                    let keep = [true, true, true, true, true, false];
                    let y = l.forward(p, x, &keep, mode, &mut seeded(2));
                    (y.sin() * 3.0).sum()
                },
            );
        }
    }
}
