//! The vector VAE family's bottlenecks and priors:
//! - `gaussian_vib`: a diagonal Gaussian posterior per encoder state (reparameterisation);
//! - `beta_vae`: the same with a KL weight β and optional capacity annealing;
//! - `ae`: a deterministic code, the autoencoder baseline (no noise, no KL);
//! - `identity`: the encoder states as they are (a plain Transformer autoencoder's memory);
//! - `learned_memory`: learned vectors independent of the input (the decoder becomes a
//!   language model);
//! - `standard_normal`: p(z) = N(0, I) with its closed-form KL;
//! - `conditional_normal`: a learned p(z | c) per class, for conditional VAEs;
//! - `none`: no prior (no KL term, no samples).

mod autoencoder;
mod beta_vae;
mod conditional_normal;
mod identity;
mod learned_memory;
mod no_prior;
mod standard_normal;
mod vib;

pub use autoencoder::{Autoencoder, AutoencoderConfig};
pub use beta_vae::{BetaVae, BetaVaeConfig, Capacity};
pub use conditional_normal::{ConditionalNormal, ConditionalNormalConfig};
pub use identity::{Identity, IdentityConfig};
pub use learned_memory::{LearnedMemory, LearnedMemoryConfig};
pub use no_prior::{NoPrior, NoPriorConfig};
pub use standard_normal::{StandardNormal, StandardNormalConfig};
pub use vib::{GaussianVib, GaussianVibConfig};

/// The names of the plugins this crate registers. The facade calls it so that the linker
/// keeps this crate (and its `inventory` submissions) in every binary.
pub fn link() -> &'static [&'static str] {
    &[
        "ae",
        "beta_vae",
        "conditional_normal",
        "gaussian_vib",
        "identity",
        "learned_memory",
        "none",
        "standard_normal",
    ]
}
