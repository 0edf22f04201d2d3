//! The encoder and decoder stacks of PyTorch's `nn.Transformer`: N post-LN layers, then a
//! **final LayerNorm** (`encoder.norm`, `decoder.norm`), as the NVAE builds them. The decoder
//! stack also decodes one position at a time with a key/value cache per layer
//! ([`DecoderStack::step`]).

use vaezoo_core::axes::{Batch, Model, Seq};
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::Mode;
use vaezoo_core::rng::HostRng;
use vaezoo_core::Result;
use vaezoo_nvib::num::{Dev, Real, Tr};

use crate::decoder_layer::{Cross, DecoderLayer};
use crate::encoder_layer::{EncoderLayer, LayerSizes};
use crate::layer_norm::LayerNorm;
use crate::self_attention::KvCache;
use crate::weights::Source;

/// `name.layers.{i}.*` and `name.norm.*`.
#[derive(Clone, Debug)]
pub struct EncoderStack {
    layers: Vec<EncoderLayer>,
    norm: LayerNorm,
}

impl EncoderStack {
    /// Declares `layers` encoder layers and the final norm under `name`.
    pub fn new(
        params: &mut ParamBuilder,
        name: &str,
        layers: usize,
        sizes: LayerSizes,
    ) -> Result<Self> {
        Ok(Self {
            layers: (0..layers)
                .map(|i| EncoderLayer::new(params, &format!("{name}.layers.{i}"), sizes))
                .collect::<Result<_>>()?,
            norm: LayerNorm::new(params, &format!("{name}.norm"), sizes.width),
        })
    }

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
        let x = self
            .layers
            .iter()
            .fold(x, |x, l| l.forward(w, x, keep, mode, rng));
        self.norm.forward(w, x)
    }
}

/// `name.layers.{i}.*` and `name.norm.*`.
#[derive(Clone, Debug)]
pub struct DecoderStack {
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
}

impl DecoderStack {
    /// Declares `layers` decoder layers and the final norm under `name`.
    pub fn new(
        params: &mut ParamBuilder,
        name: &str,
        layers: usize,
        sizes: LayerSizes,
    ) -> Result<Self> {
        Ok(Self {
            layers: (0..layers)
                .map(|i| DecoderLayer::new(params, &format!("{name}.layers.{i}"), sizes))
                .collect::<Result<_>>()?,
            norm: LayerNorm::new(params, &format!("{name}.norm"), sizes.width),
        })
    }

    /// The number of layers (each needs its own cross-attention).
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the stack has no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// `cross[i]` is layer i's cross-attention.
    ///
    /// # Shapes
    /// `x: (Batch, Seq, Model)`, `keep: Batch × Seq` → `(Batch, Seq, Model)`
    ///
    /// # Panics
    /// If `cross` does not have one entry per layer.
    pub fn forward<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        keep: &[bool],
        cross: &mut [&mut Cross<E, D>],
        mode: Mode,
        rng: &mut HostRng,
    ) -> Result<Tr<(Batch, Seq, Model), E, D>> {
        self.through(w, x, cross, |_, l, x, c| {
            l.forward(w, x, keep, c, mode, rng)
        })
    }

    /// Empty key/value caches, one per layer, for [`step`](Self::step).
    pub fn cache<E: Real, D: Dev<E>>(&self) -> Vec<KvCache<E, D>> {
        self.layers.iter().map(|_| KvCache::default()).collect()
    }

    /// One decoding step in evaluation: each layer's [`DecoderLayer::step`] with its cache
    /// (`cache[i]`, grown by the new position) and its cross-attention `cross[i]`, then the
    /// final norm.
    ///
    /// # Shapes
    /// `x: (Batch, Seq(1), Model)` → `(Batch, Seq(1), Model)`
    ///
    /// # Panics
    /// If `cache` or `cross` does not have one entry per layer.
    pub fn step<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        x: Tr<(Batch, Seq, Model), E, D>,
        cache: &mut [KvCache<E, D>],
        cross: &mut [&mut Cross<E, D>],
        rng: &mut HostRng,
    ) -> Result<Tr<(Batch, Seq, Model), E, D>> {
        assert_eq!(cache.len(), self.layers.len(), "one cache per layer");
        self.through(w, x, cross, |i, l, x, c| {
            l.step(w, x, &mut cache[i], c, rng)
        })
    }

    /// `layer(i, layers[i], x, cross[i])` through the stack, then the final norm.
    fn through<E: Real, D: Dev<E>>(
        &self,
        w: &impl Source<E, D>,
        mut x: Tr<(Batch, Seq, Model), E, D>,
        cross: &mut [&mut Cross<E, D>],
        mut layer: impl FnMut(
            usize,
            &DecoderLayer,
            Tr<(Batch, Seq, Model), E, D>,
            &mut Cross<E, D>,
        ) -> Result<Tr<(Batch, Seq, Model), E, D>>,
    ) -> Result<Tr<(Batch, Seq, Model), E, D>> {
        assert_eq!(
            cross.len(),
            self.layers.len(),
            "one cross-attention per layer"
        );
        for (i, (l, c)) in self.layers.iter().zip(cross.iter_mut()).enumerate() {
            x = layer(i, l, x, *c)?;
        }
        Ok(self.norm.forward(w, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check;
    use dfdx::prelude::*;
    use vaezoo_core::axes::{Head, Hidden};
    use vaezoo_core::rng::seeded;

    const SIZES: LayerSizes = LayerSizes {
        width: Model(4),
        heads: Head(2),
        hidden: Hidden(8),
        dropout: 0.0,
    };
    const KEEP: [bool; 6] = [true, true, true, true, false, false];

    #[test]
    fn encoder_gradients_match_finite_differences() {
        check(
            |pb| EncoderStack::new(pb, "encoder", 2, SIZES).unwrap(),
            (Batch(2), Seq(3), Model(4)),
            |s, p, x| (s.forward(p, x, &KEEP, Mode::Eval, &mut seeded(0)).sin() * 3.0).sum(),
        );
    }

    #[test]
    fn decoder_gradients_match_finite_differences() {
        check(
            |pb| DecoderStack::new(pb, "decoder", 2, SIZES).unwrap(),
            (Batch(2), Seq(3), Model(4)),
            |s, p, x| {
                assert_eq!((s.len(), s.is_empty()), (2, false));
                let mut c0 = |q: Tr<(Batch, Seq, Model), f32, Cpu>,
                              _: Option<&[bool]>,
                              _: &mut HostRng| { Ok(q.tanh()) };
                let mut c1 = |q: Tr<(Batch, Seq, Model), f32, Cpu>,
                              _: Option<&[bool]>,
                              _: &mut HostRng| { Ok(q * 0.5) };
                let y = s
                    .forward(
                        p,
                        x,
                        &KEEP,
                        &mut [&mut c0, &mut c1],
                        Mode::Eval,
                        &mut seeded(0),
                    )
                    .unwrap();
                (y.sin() * 3.0).sum()
            },
        );
    }
}
