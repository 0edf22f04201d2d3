//! Image datasets for training: reading the IDX files in `zoo/data/`
//! ([`idx`]) and turning them into seeded, resumable mini-batches
//! ([`batches`]).

pub mod batches;
pub mod idx;

pub use batches::{batch_ranges, epoch_order, gather};
pub use idx::{load_split, read_images, read_labels, DataError, ImageSet, Split};

use std::path::Path;

use vaezoo_core::spec::DataSpec;

/// The `split` of a spec's data, with the spec's limit for that split applied.
pub fn load_spec_split(data: &DataSpec, split: Split) -> Result<ImageSet, DataError> {
    let DataSpec::Idx {
        dir,
        pixel_max,
        train_limit,
        test_limit,
    } = data;
    let limit = match split {
        Split::Train => *train_limit,
        Split::Test => *test_limit,
    };
    load_split(Path::new(dir), split, *pixel_max, limit)
}
