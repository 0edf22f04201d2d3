//! Gaussian bottlenecks: `gaussian_vib` (a diagonal Gaussian posterior per encoder state, the
//! reparameterisation trick) and the `standard_normal` prior with its closed-form KL.

mod no_prior;
mod standard_normal;
mod vib;

pub use no_prior::{NoPrior, NoPriorConfig};
pub use standard_normal::{StandardNormal, StandardNormalConfig};
pub use vib::{GaussianVib, GaussianVibConfig};

/// The names of the plugins this crate registers. The facade calls it so that the linker
/// keeps this crate (and its `inventory` submissions) in every binary.
pub fn link() -> &'static [&'static str] {
    &["gaussian_vib", "none", "standard_normal"]
}
