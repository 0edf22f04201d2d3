//! The host random-number generator: all randomness (initialisation, noise, shuffling) comes
//! from it, so a checkpoint that stores its state resumes bit for bit.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// The seedable, serialisable generator every vaezoo run draws from.
pub type HostRng = rand_chacha::ChaCha8Rng;

/// A generator seeded from `seed`.
pub fn seeded(seed: u64) -> HostRng {
    HostRng::seed_from_u64(seed)
}

/// `n` standard-normal draws.
pub fn normal_vec(rng: &mut HostRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// `n` uniform draws in `[low, high)`.
pub fn uniform_vec(rng: &mut HostRng, n: usize, low: f32, high: f32) -> Vec<f32> {
    let dist = rand_distr::Uniform::new(low, high);
    (0..n).map(|_| dist.sample(rng)).collect()
}
