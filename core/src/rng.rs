//! The host random-number generator: all randomness (initialisation, noise, shuffling) comes
//! from it, so a checkpoint that stores its state resumes bit for bit.

use num_traits::Float;
use rand::{RngCore, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// `n` standard normals of training noise, as [`fill_noise`] draws them, converted to `E`.
pub fn noise_vec_as<E: Float + Send>(rng: &mut HostRng, n: usize) -> Vec<E> {
    let mut out = vec![E::zero(); n];
    fill_noise(rng, &mut out);
    out
}

/// Fills `out` with standard normals of training noise (a reparameterisation's ε).
///
/// One draw from `rng` seeds it. Chunk c of [`NOISE_CHUNK`] values is then drawn as
/// [`fill_normal`] draws them, from stream c of a generator keyed by that seed, so the
/// chunks are filled in parallel with the same values on any number of threads, and `rng`
/// advances by one draw whatever `out`'s size (as [`dropout_mask`]).
pub fn fill_noise<E: Float + Send>(rng: &mut HostRng, out: &mut [E]) {
    let seed = rng.next_u64();
    let fill = |(chunk, values): (usize, &mut [E])| {
        let mut stream = HostRng::seed_from_u64(seed);
        stream.set_stream(chunk as u64);
        fill_normal(&mut stream, values);
    };
    for_each_numbered_chunk(out, NOISE_CHUNK, 2, fill);
}

/// Calls `fill((c, chunk))` for chunk c of `chunk_len` values of `out`: on rayon's pool when
/// `out` holds at least `min_chunks` chunks, else in order on the calling thread. The
/// seeded fills above compute each chunk from its number alone, so both give the same values.
fn for_each_numbered_chunk<E: Send>(
    out: &mut [E],
    chunk_len: usize,
    min_chunks: usize,
    fill: impl Fn((usize, &mut [E])) + Sync + Send,
) {
    if out.len() >= min_chunks * chunk_len {
        out.par_chunks_mut(chunk_len).enumerate().for_each(fill);
    } else {
        out.chunks_mut(chunk_len).enumerate().for_each(fill);
    }
}

/// Values per unit of parallel work (and per generator stream) in [`fill_noise`].
const NOISE_CHUNK: usize = 1 << 13;

/// `n` uniform draws in `[low, high)`.
pub fn uniform_vec(rng: &mut HostRng, n: usize, low: f32, high: f32) -> Vec<f32> {
    let dist = rand_distr::Uniform::new(low, high);
    (0..n).map(|_| dist.sample(rng)).collect()
}

/// A dropout layer's scaled keep mask of `len` values: each value is 0 with probability `p`,
/// else `1 / (1 − p)`.
///
/// One draw from `rng` seeds the whole mask; value i is then a SplitMix64 hash of the seed and
/// i compared with `p`. Every value is a function of its index alone, so the mask is filled in
/// parallel chunks with the same result on any number of threads, at a fraction of a
/// nanosecond a value (a ChaCha draw per value cost several), and the generator advances by
/// one draw whatever the mask's size. The values are written once, into the new allocation
/// (no zero fill first: the masks of a text training step add up to hundreds of megabytes).
///
/// # Panics
/// If `p` is not in `[0, 1)`.
pub fn dropout_mask<E: Float + Send + Sync>(rng: &mut HostRng, p: f64, len: usize) -> Vec<E> {
    assert!((0.0..1.0).contains(&p), "dropout probability {p}");
    let seed = rng.next_u64();
    // u < p·2⁶⁴ with u uniform on [0, 2⁶⁴): probability p (to within 2⁻⁶⁴).
    let threshold = (p * 2f64.powi(64)) as u64;
    let scale = E::from(1.0 / (1.0 - p)).expect("a finite scale");
    #[cfg(target_arch = "x86_64")]
    let wide = wide_multiplies();
    let fill = |(chunk, values): (usize, &mut [MaybeUninit<E>])| {
        let first = (chunk * MASK_CHUNK) as u64;
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the CPU has the features (checked by `wide_multiplies`).
            unsafe { fill_mask_avx512(values, (seed, first), threshold, scale) };
            return;
        }
        fill_mask(values, (seed, first), threshold, scale);
    };
    let mut mask = Vec::with_capacity(len);
    for_each_numbered_chunk(&mut mask.spare_capacity_mut()[..len], MASK_CHUNK, 4, fill);
    // SAFETY: the chunks cover the first `len` values, and `fill_mask` writes every value of
    // its chunk.
    unsafe { mask.set_len(len) };
    mask
}

/// Values `first`, `first + 1`, … of the mask of `seed`: 0 where the hash falls below
/// `threshold`, `scale` elsewhere.
#[inline(always)]
fn fill_mask<E: Float>(
    values: &mut [MaybeUninit<E>],
    (seed, first): (u64, u64),
    threshold: u64,
    scale: E,
) {
    for (i, v) in values.iter_mut().enumerate() {
        v.write(if splitmix64(seed, first + i as u64) < threshold {
            E::zero()
        } else {
            scale
        });
    }
}

/// [`fill_mask`] compiled for AVX-512, whose 64-bit multiplies let the compiler vectorise the
/// hash (without them it stays scalar: about 3 times slower). The same values.
///
/// # Safety
/// The CPU must support AVX-512 F, DQ and VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
unsafe fn fill_mask_avx512<E: Float>(
    values: &mut [MaybeUninit<E>],
    at: (u64, u64),
    threshold: u64,
    scale: E,
) {
    fill_mask(values, at, threshold, scale)
}

/// Whether [`fill_mask_avx512`] may run on this CPU.
#[cfg(target_arch = "x86_64")]
fn wide_multiplies() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
}

/// Values per unit of parallel work in [`dropout_mask`].
const MASK_CHUNK: usize = 1 << 15;

/// The `index`-th output of SplitMix64 started at `seed` (Steele, Lea and Flood, 2014): a
/// counter-based generator whose outputs pass BigCrush.
fn splitmix64(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // The reference implementation's first outputs from state 1234567.
        let want = [6_457_827_717_110_365_317, 3_203_168_211_198_807_973];
        assert_eq!([splitmix64(1_234_567, 0), splitmix64(1_234_567, 1)], want);
    }

    #[test]
    fn dropout_masks_drop_at_rate_p_on_any_thread_count() {
        let mask: Vec<f32> = dropout_mask(&mut seeded(4), 0.3, 10 * MASK_CHUNK);
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / mask.len() as f64;
        assert!((dropped - 0.3).abs() < 0.005, "dropped {dropped}");
        assert!(mask.iter().all(|&v| v == 0.0 || v == (1.0 / 0.7) as f32));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let one: Vec<f32> = pool.install(|| dropout_mask(&mut seeded(4), 0.3, mask.len()));
        assert_eq!(one, mask);
        // Consecutive masks differ, and the generator moves on by one draw.
        let mut rng = seeded(4);
        let again: Vec<f32> = dropout_mask(&mut rng, 0.3, 100);
        assert_eq!(again[..], mask[..100]);
        let next: Vec<f32> = dropout_mask(&mut rng, 0.3, 100);
        assert_ne!(next[..], mask[..100]);
        let mut twice = seeded(4);
        twice.next_u64();
        twice.next_u64();
        assert_eq!(twice.next_u64(), rng.next_u64(), "one draw per mask");
    }

    #[test]
    fn noise_is_standard_normal_and_the_same_on_any_thread_count() {
        let n = 8 * NOISE_CHUNK + 123;
        let mut rng = seeded(9);
        let noise: Vec<f32> = noise_vec_as(&mut rng, n);
        let mean = noise.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let var = noise
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "mean {mean}, var {var}"
        );
        // Chunks are distinct streams, not copies of one.
        assert_ne!(noise[..16], noise[NOISE_CHUNK..NOISE_CHUNK + 16]);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let one: Vec<f32> = pool.install(|| noise_vec_as(&mut seeded(9), n));
        assert_eq!(one, noise);
        // f64 noise holds the same draws; the generator moves on by one draw.
        let wide: Vec<f64> = noise_vec_as(&mut seeded(9), 100);
        assert!(wide.iter().zip(&noise).all(|(&w, &v)| w == f64::from(v)));
        let mut once = seeded(9);
        once.next_u64();
        assert_eq!(once.next_u64(), rng.next_u64(), "one draw per fill");
    }

    /// The AVX-512 build of the mask gives the plain loop's values (where the CPU has it).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vectorised_masks_match_the_plain_loop() {
        if !wide_multiplies() {
            return;
        }
        let threshold = (0.3 * 2f64.powi(64)) as u64;
        let filled = |fill: &dyn Fn(&mut [MaybeUninit<f32>])| {
            let mut values = Vec::with_capacity(1000);
            fill(&mut values.spare_capacity_mut()[..1000]);
            // SAFETY: both fills write every value.
            unsafe { values.set_len(1000) };
            values
        };
        let plain = filled(&|v| fill_mask(v, (42, 7), threshold, 2.0));
        // SAFETY: checked above.
        let wide = filled(&|v| unsafe { fill_mask_avx512(v, (42, 7), threshold, 2.0) });
        assert_eq!(plain, wide);
        assert!(plain.contains(&0.0) && plain.contains(&2.0));
    }

    #[test]
    fn normal_draws_convert_exactly() {
        let narrow = normal_vec(&mut seeded(3), 100);
        let wide: Vec<f64> = normal_vec_as(&mut seeded(3), 100);
        assert!(wide.iter().zip(&narrow).all(|(&w, &v)| w == f64::from(v)));
    }
}
