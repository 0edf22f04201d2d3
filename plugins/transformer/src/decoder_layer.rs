//! PyTorch's `nn.TransformerDecoderLayer` with `norm_first=False` (post-LN), as the NVAE uses:
//! x ← norm1(x + dropout(causal self_attn(x))); x ← norm2(x + dropout(cross(x)));
//! x ← norm3(x + dropout(ffn(x))). The cross-attention is the caller's: in the NVAE it is
//! NVIB's denoising attention over the latent mixture (an [`Attention`] plugin), in the
//! baselines scaled dot-product attention. [`DecoderLayer::step`] runs the same sublayers on one
//! new position, its self-attention reading a key/value cache.
//!
//! [`Attention`]: vaezoo_core::plugin::Attention

use vaezoo_core::axes::{Batch, Model, Seq};
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::HostRng;
use vaezoo_core::Result;
use vaezoo_nvib::num::{Dev, Real, Tr};

use crate::dropout::Dropout;
use crate::encoder_layer::LayerSizes;
use crate::feed_forward::FeedForward;
use crate::layer_norm::LayerNorm;
use crate::self_attention::{KvCache, SelfAttention};
use crate::weights::Source;

/// The cross-attention of one decoder layer: queries `(Batch, Seq, Model)` read the memory and
/// return `(Batch, Seq, Model)`; it may draw from the host generator. With row flags
/// (`Batch × Seq`), only the flagged queries are read downstream (the others are padding).
pub type Cross<'a, E, D> = dyn FnMut(
        Tr<(Batch, Seq, Model), E, D>,
        Option<&[bool]>,
        &mut HostRng,
    ) -> Result<Tr<(Batch, Seq, Model), E, D>>
    + 'a;

/// `name.self_attn.*`, `name.linear{1,2}.*`, `name.norm{1,2,3}.*` (the cross-attention's
/// parameters, `name.multihead_attn.*` in PyTorch, belong to the cross-attention).
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    self_attn: SelfAttention,
    ffn: FeedForward,
    norms: [LayerNorm; 3],
    dropout: Dropout,
}

impl DecoderLayer {
    /// Declares the layer's parameters under `name`.
    pub fn new(params: &mut ParamBuilder, name: &str, sizes: LayerSizes) -> Result<Self> {
        let dropout = Dropout::new(sizes.dropout);
        let self_attn = SelfAttention::new(
            params,
            &format!("{name}.self_attn"),
            sizes.width,
            sizes.heads,
        )?;
        let ffn = FeedForward::new(
            params,
            &format!("{name}."),
            sizes.width,
            sizes.hidden,
            dropout,
        );
        let norms =
            [1, 2, 3].map(|i| LayerNorm::new(params, &format!("{name}.norm{i}"), sizes.width));
        Ok(Self {
            self_attn,
            ffn,
            norms,
            dropout,
        })
    }

    /// `keep` (row-major `Batch × Seq`, true = a real token) masks padded target keys, on top of
    /// the causal mask.
    ///
    /// # Shapes
    /// `x: (Batch, Seq, Model)`, `keep: Batch × Seq` → `(Batch, Seq, Model)`
    pub fn forward<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        keep: &[bool],
        cross: &mut Cross<E, D>,
        mode: Mode,
        rng: &mut HostRng,
    ) -> Result<Tr<(Batch, Seq, Model), E, D>> {
        let attend = |x| self.self_attn.forward(w, x, keep, true);
        self.sublayers(w, x, attend, cross, (Some(keep), mode), rng)
    }

    /// One decoding step in evaluation (no dropout): the new position's self-attention reads
    /// the layer's `cache` ([`SelfAttention::step`]), the rest is [`forward`](Self::forward)'s.
    ///
    /// # Shapes
    /// `x: (Batch, Seq(1), Model)` → `(Batch, Seq(1), Model)`
    pub fn step<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        cache: &mut KvCache<E, D>,
        cross: &mut Cross<E, D>,
        rng: &mut HostRng,
    ) -> Result<Tr<(Batch, Seq, Model), E, D>> {
        let attend = |x| self.self_attn.step(w, x, cache);
        self.sublayers(w, x, attend, cross, (None, Mode::Eval), rng)
    }

    /// The three post-LN sublayers, the self-attention `attend`'s; the feed-forward computes
    /// only the positions `keep` flags (all with `None`), in `mode`.
    ///
    /// # Shapes
    /// `x: (Batch, Seq, Model)` → `(Batch, Seq, Model)`
    fn sublayers<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        attend: impl FnOnce(Tr<(Batch, Seq, Model), E, D>) -> Tr<(Batch, Seq, Model), E, D>,
        cross: &mut Cross<E, D>,
        (keep, mode): (Option<&[bool]>, Mode),
        rng: &mut HostRng,
    ) -> Result<Tr<(Batch, Seq, Model), E, D>> {
        let [norm1, norm2, norm3] = &self.norms;
        let a = attend(x.retaped());
        let x = norm1.residual(w, x, a, (&self.dropout, mode, rng));
        let m = cross(x.retaped(), keep, rng)?;
        let x = norm2.residual(w, x, m, (&self.dropout, mode, rng));
        let f = self.ffn.forward(w, x.retaped(), keep, mode, rng);
        Ok(norm3.residual(w, x, f, (&self.dropout, mode, rng)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check;
    use dfdx::prelude::*;
    use vaezoo_core::axes::{Head, Hidden};
    use vaezoo_core::rng::seeded;

    #[test]
    fn gradients_match_finite_differences() {
        let sizes = LayerSizes {
            width: Model(4),
            heads: Head(1),
            hidden: Hidden(8),
            dropout: 0.1,
        };
        for mode in [Mode::Eval, Mode::Train] {
            check(
                |pb| DecoderLayer::new(pb, "l", sizes).unwrap(),
                (Batch(2), Seq(3), Model(4)),
                |l, p, x| {
                    // A stand-in cross-attention with its own gradient path: tanh(x).
                    let mut cross =
                        |q: Tr<(Batch, Seq, Model), f32, Cpu>,
                         _: Option<&[bool]>,
                         _: &mut HostRng| { Ok(q.tanh()) };
                    let keep = [true, true, true, true, true, false];
                    let y = l
                        .forward(p, x, &keep, &mut cross, mode, &mut seeded(2))
                        .unwrap();
                    (y.sin() * 3.0).sum()
                },
            );
        }
    }
}
