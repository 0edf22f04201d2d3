//! Seeded shuffling and mini-batching of an [`ImageSet`].
//!
//! The order of an epoch is a pure function of `(seed, epoch)`, so a resumed
//! run recomputes exactly the order it was interrupted in without storing it.

use std::ops::Range;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::idx::ImageSet;

/// SplitMix64 finaliser: a bijective scramble of 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Combines a run seed and an epoch number into one RNG seed, so that nearby
/// seeds and epochs give unrelated streams.
fn mix(seed: u64, epoch: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ epoch.wrapping_mul(0xd1b5_4a32_d192_ed03))
}

/// The order in which to visit `n` examples in epoch `epoch` of a run seeded
/// with `seed`: a permutation of `0..n` (Fisher–Yates shuffle driven by
/// `ChaCha8Rng`), depending only on `(n, seed, epoch)`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Consecutive position ranges of at most `batch_size` covering `0..n` once,
/// in order; only the last one may be shorter. A `batch_size` of 0 is treated
/// as 1.
///
/// For example `n = 6000, batch_size = 128` gives 47 ranges, the last `5888..6000`.
pub fn batch_ranges(n: usize, batch_size: usize) -> impl Iterator<Item = Range<usize>> {
    let size = batch_size.max(1);
    (0..n)
        .step_by(size)
        .map(move |start| start..n.min(start + size))
}

/// Copies the examples `idx` of `set` into reusable buffers: their pixels,
/// image after image, into `out_x` (`idx.len() * set.features()` values) and
/// their labels into `out_labels`. Both buffers are cleared first and keep
/// their capacity, so a loop over batches allocates only while they grow.
///
/// # Panics
/// If an index is not below `set.n` (indices come from [`epoch_order`]).
pub fn gather(set: &ImageSet, idx: &[usize], out_x: &mut Vec<f32>, out_labels: &mut Vec<usize>) {
    let features = set.features();
    out_x.clear();
    out_labels.clear();
    out_x.reserve(idx.len() * features);
    out_labels.reserve(idx.len());
    for &i in idx {
        out_x.extend_from_slice(&set.images[i * features..(i + 1) * features]);
        out_labels.push(usize::from(set.labels[i]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(1000, 7, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, sorted, "the order is shuffled");
        assert_eq!(a, epoch_order(1000, 7, 0), "same (seed, epoch), same order");
        assert_ne!(a, epoch_order(1000, 7, 1), "epochs differ");
        assert_ne!(a, epoch_order(1000, 8, 0), "seeds differ");
        assert_ne!(epoch_order(1000, 0, 1), epoch_order(1000, 1, 0));
        assert!(epoch_order(0, 7, 0).is_empty());
        assert_eq!(epoch_order(1, 7, 3), vec![0]);
    }

    #[test]
    fn batch_ranges_cover_everything_once() {
        let ranges: Vec<_> = batch_ranges(6000, 128).collect();
        assert_eq!(ranges.len(), 47);
        assert_eq!(ranges[0], 0..128);
        assert_eq!(ranges[46], 5888..6000);
        assert_eq!(ranges[46].len(), 112);
        let mut next = 0;
        for r in &ranges {
            assert_eq!(r.start, next);
            assert!(!r.is_empty() && r.len() <= 128);
            next = r.end;
        }
        assert_eq!(next, 6000);
        assert_eq!(batch_ranges(256, 128).count(), 2);
        assert_eq!(batch_ranges(0, 128).count(), 0);
        assert_eq!(
            batch_ranges(3, 0).collect::<Vec<_>>(),
            vec![0..1, 1..2, 2..3]
        );
    }

    #[test]
    fn gather_copies_rows_into_reused_buffers() {
        let set = ImageSet {
            images: (0..12).map(|v| v as f32).collect(),
            labels: vec![3, 1, 4],
            n: 3,
            rows: 2,
            cols: 2,
        };
        let (mut x, mut labels) = (Vec::new(), Vec::new());
        gather(&set, &[2, 0], &mut x, &mut labels);
        assert_eq!(x, vec![8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0]);
        assert_eq!(labels, vec![4, 3]);
        let capacity = x.capacity();
        let ptr = x.as_ptr();
        gather(&set, &[1], &mut x, &mut labels);
        assert_eq!(x, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!(labels, vec![1]);
        assert_eq!((x.capacity(), x.as_ptr()), (capacity, ptr));
    }
}
