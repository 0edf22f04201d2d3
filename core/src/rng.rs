//! The host random-number generator: all randomness (initialisation, noise, shuffling) comes
//! from it, so a checkpoint that stores its state resumes bit for bit.

use num_traits::Float;
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
    normal_vec_as(rng, n)
}

/// `n` standard-normal draws as [`normal_vec`] makes them (f32 values), converted to `E` in the
/// same pass.
pub fn normal_vec_as<E: Float + Send>(rng: &mut HostRng, n: usize) -> Vec<E> {
    let mut out = vec![E::zero(); n];
    fill_normal(rng, &mut out);
    out
}

/// Fills `out` with the draws [`normal_vec_as`] makes: f32 standard normals, one after
/// another, converted to `E`.
pub fn fill_normal<E: Float>(rng: &mut HostRng, out: &mut [E]) {
    for o in out {
        let x: f32 = StandardNormal.sample(rng);
        *o = E::from(x).expect("an f32 converts to the float type");
    }
}

/// `n` uniform draws in `[low, high)`.
pub fn uniform_vec(rng: &mut HostRng, n: usize, low: f32, high: f32) -> Vec<f32> {
    let dist = rand_distr::Uniform::new(low, high);
    (0..n).map(|_| dist.sample(rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_draws_convert_exactly() {
        let narrow = normal_vec(&mut seeded(3), 100);
        let wide: Vec<f64> = normal_vec_as(&mut seeded(3), 100);
        assert!(wide.iter().zip(&narrow).all(|(&w, &v)| w == f64::from(v)));
    }
}
