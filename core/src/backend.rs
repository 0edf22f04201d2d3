//! The device bound every vaezoo computation is generic over, and traced-tensor helpers.
//!
//! Plugins implement their traits for every [`Backend`]; the registry stores them as
//! device-independent trait objects (`DynEncoder`, …) and [`Backend`] casts those back to the
//! device-specific trait (`Encoder<Self>`, …). `Cpu` is always available; `Cuda` with the
//! `cuda` feature.

use dfdx::prelude::*;

use crate::custom_op::HostGrad;
use crate::kernels::Kernels;
use crate::plugin::{
    Attention, Bottleneck, Decoder, DynAttention, DynBottleneck, DynDecoder, DynEncoder, DynPrior,
    Encoder, Prior,
};

/// A tensor that records its operations on a tape, so gradients can flow back through it.
pub type Traced<S, D> = Tensor<S, f32, D, OwnedTape<f32, D>>;

/// A device vaezoo runs on.
pub trait Backend: Device<f32> + HostGrad<f32> + Kernels<f32> + Cache + Default + 'static {
    /// A short name for logs and `env.json`.
    const NAME: &'static str;
    /// The encoder as seen on this device.
    fn encoder(p: &dyn DynEncoder) -> &dyn Encoder<Self>;
    /// The bottleneck as seen on this device.
    fn bottleneck(p: &dyn DynBottleneck) -> &dyn Bottleneck<Self>;
    /// The prior as seen on this device.
    fn prior(p: &dyn DynPrior) -> &dyn Prior<Self>;
    /// The decoder as seen on this device.
    fn decoder(p: &dyn DynDecoder) -> &dyn Decoder<Self>;
    /// The attention as seen on this device.
    fn attention(p: &dyn DynAttention) -> &dyn Attention<Self>;
}

macro_rules! backend {
    ($dev:ty, $name:literal) => {
        impl Backend for $dev {
            const NAME: &'static str = $name;
            fn encoder(p: &dyn DynEncoder) -> &dyn Encoder<Self> {
                p
            }
            fn bottleneck(p: &dyn DynBottleneck) -> &dyn Bottleneck<Self> {
                p
            }
            fn prior(p: &dyn DynPrior) -> &dyn Prior<Self> {
                p
            }
            fn decoder(p: &dyn DynDecoder) -> &dyn Decoder<Self> {
                p
            }
            fn attention(p: &dyn DynAttention) -> &dyn Attention<Self> {
                p
            }
        }
    };
}

backend!(Cpu, "cpu");
#[cfg(feature = "cuda")]
backend!(Cuda, "cuda");

/// Using a traced tensor more than once: `x.reuse()` is the same tensor (same gradient slot)
/// with a fresh, empty tape, whose operations join the loss's tape when the branches meet.
///
/// The history of `x` (the operations that made it) stays on the original: the original must
/// still reach the loss, either consumed by an operation or by merging its tape (see
/// [`crate::latent::Mixture::into_tape`]).
pub trait Reuse {
    /// A second handle on the same values and gradient.
    fn reuse(&self) -> Self;
}

impl<S: Shape, D: Backend> Reuse for Traced<S, D> {
    fn reuse(&self) -> Self {
        self.retaped()
    }
}

/// A constant (untracked) tensor lifted onto a fresh tape, so it can meet traced tensors.
pub fn lift<S: Shape, D: Backend>(t: Tensor<S, f32, D>) -> Traced<S, D> {
    t.put_tape(OwnedTape::default())
}
