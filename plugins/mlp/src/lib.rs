//! Multi-layer perceptrons for vector data: `mlp_encoder` (features → one state) and
//! `mlp_decoder` (one-component latent → Bernoulli-logit or Gaussian likelihood), each
//! optionally conditioned on the class label (`condition`).

mod condition;
mod decoder;
mod encoder;
mod likelihood;
mod stack;

pub use condition::Condition;
pub use decoder::{MlpDecoder, MlpDecoderConfig, Read};
pub use encoder::{MlpEncoder, MlpEncoderConfig};
pub use likelihood::Likelihood;

/// The names of the plugins this crate registers. The facade calls it so that the linker
/// keeps this crate (and its `inventory` submissions) in every binary.
pub fn link() -> &'static [&'static str] {
    &["mlp_decoder", "mlp_encoder"]
}
