//! Image datasets for training: reading the IDX files in `zoo/data/`
//! ([`idx`]) and turning them into seeded, resumable mini-batches
//! ([`batches`]).

pub mod batches;
pub mod idx;

pub use batches::{batch_ranges, epoch_order, gather};
pub use idx::{load_split, read_images, read_labels, DataError, ImageSet, Split};
