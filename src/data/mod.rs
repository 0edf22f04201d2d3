//! Datasets: reading the IDX image files in `zoo/data/` ([`idx`]), seeded, resumable
//! mini-batches ([`batches`]), and [`Dataset`], the one interface the trainer reads images
//! and sentences through ([`dataset`]).

pub mod batches;
pub mod dataset;
pub mod idx;

pub use batches::{batch_ranges, epoch_order, gather};
pub use dataset::{spec_tokenizer, Dataset, TextSet};
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
    } = data
    else {
        return Err(DataError {
            path: data.dir().into(),
            message: "is a text corpus; this command works on image data".into(),
        });
    };
    let limit = match split {
        Split::Train => *train_limit,
        Split::Test => *test_limit,
    };
    load_split(Path::new(dir), split, *pixel_max, limit)
}
