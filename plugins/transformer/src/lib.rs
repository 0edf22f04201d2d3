//! The text Transformer VAE of the official NVAE (Henderson & Fehr, ICLR 2023) and its
//! Variational Transformer baselines, ported from the official code (§D–§E of
//! `docs/nvib-math.md`).
//!
//! Building blocks, each generic over the float type (f32 in models, f64 for the golden checks)
//! and reading its weights through a [`weights::Source`]; weights are stored in PyTorch's
//! layout and named as the official state_dict:
//!
//! - [`dense`]: `y = x Wᵀ + b`;
//! - [`layer_norm`]: LayerNorm over the model width (ε = 1e-5);
//! - [`dropout`]: train-only dropout fed from the host generator;
//! - [`positional`]: the official (non-standard) positional encoding, positions from 1;
//! - [`embedding`]: token embeddings with padding index 0;
//! - [`self_attention`], [`feed_forward`]: multi-head self-attention (key padding, causal; a
//!   key/value cache for decoding one token at a time) and the ReLU feed-forward block;
//! - [`encoder_layer`], [`decoder_layer`]: PyTorch's post-LN Transformer layers, the decoder's
//!   cross-attention supplied by the caller;
//! - [`stack`]: the encoder and decoder stacks with their final LayerNorms;
//! - [`loss`]: the official mean token cross-entropy (PAD in the denominator);
//! - [`vt`]: the Variational Transformer baselines' latents (per token, pooled, strided).
//!
//! Plugins: [`text_encoder`] (`transformer_encoder`) and [`text_decoder`]
//! (`transformer_decoder`, its cross-attention an attention plugin; greedy decoding with the
//! key/value cache), for text observations; the Variational Transformer baselines
//! [`vt_bottleneck`] (`vt_variable`: VTV, or VTS with a stride; `vt_pooled`: VTP) and their
//! prior [`vt_prior`] (`vt_normal`).

pub mod decoder_layer;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod encoder_layer;
pub mod feed_forward;
pub mod layer_norm;
pub mod loss;
pub mod positional;
pub mod self_attention;
pub mod stack;
pub mod text_decoder;
pub mod text_encoder;
pub mod vt;
pub mod vt_bottleneck;
pub mod vt_prior;
pub mod weights;

#[cfg(test)]
mod testing;

/// The names of the plugins this crate registers. The facade calls it so that the linker
/// keeps this crate (and its `inventory` submissions) in every binary.
pub fn link() -> &'static [&'static str] {
    &[
        "transformer_encoder",
        "transformer_decoder",
        "vt_variable",
        "vt_pooled",
        "vt_normal",
    ]
}
