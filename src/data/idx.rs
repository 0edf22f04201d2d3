//! Reader for the uncompressed IDX files (the MNIST layout) in `zoo/data/`.
//!
//! Image files are `u32 magic 2051 | u32 n | u32 rows | u32 cols` followed by
//! `n*rows*cols` bytes, label files `u32 magic 2049 | u32 n` followed by `n`
//! bytes; all header integers are big-endian. Every malformed input is reported
//! as a [`DataError`] naming the file; nothing here panics on bad data.

use std::path::{Path, PathBuf};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
const LABELS_MAGIC: u32 = 2049;

/// A problem with one data file: the file and a one-line description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct DataError {
    /// The file (or directory) the problem is about.
    pub path: PathBuf,
    /// What is wrong, on one line.
    pub message: String,
}

impl DataError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Which half of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training files (`train-*-ubyte`).
    Train,
    /// The test files (`t10k-*-ubyte`).
    Test,
}

impl Split {
    /// The MNIST file names `(images, labels)` of this split.
    fn file_names(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

/// Labelled greyscale images, all the same size, held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// `n * rows * cols` pixel values in [0, 1], row-major, image after image.
    pub images: Vec<f32>,
    /// One class id per image.
    pub labels: Vec<u8>,
    /// Number of images.
    pub n: usize,
    /// Image height in pixels.
    pub rows: usize,
    /// Image width in pixels.
    pub cols: usize,
}

impl ImageSet {
    /// Pixels per image (`rows * cols`), the input size of a model.
    pub fn features(&self) -> usize {
        self.rows * self.cols
    }

    /// Number of classes: the largest label plus one, 0 for an empty set.
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| usize::from(m) + 1)
    }
}

/// An IDX file checked against its header: the bytes after the header and the
/// dimensions the header gives.
struct IdxFile {
    body: Vec<u8>,
    dims: Vec<usize>,
}

/// Reads `path` and checks its magic number and that its size matches the
/// `ndims` dimensions in its header.
fn read_idx(path: &Path, magic: u32, ndims: usize) -> Result<IdxFile, DataError> {
    let mut bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::new(path, "file not found"),
        _ => DataError::new(path, format!("cannot read file: {e}")),
    })?;
    let header_len = 4 * (1 + ndims);
    let word = |i: usize| {
        bytes
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    match word(0) {
        Some(found) if found != magic => {
            return Err(DataError::new(
                path,
                format!("wrong magic number: expected {magic}, found {found} (not an IDX file of this kind?)"),
            ));
        }
        Some(_) if bytes.len() >= header_len => {}
        _ => {
            return Err(DataError::new(
                path,
                format!(
                    "truncated: an IDX header needs {header_len} bytes, file has {}",
                    bytes.len()
                ),
            ));
        }
    }
    let dims: Vec<usize> = (1..=ndims)
        .map(|d| word(4 * d).map_or(0, |v| v as usize))
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|body| body.checked_add(header_len));
    let Some(expected) = expected else {
        return Err(DataError::new(
            path,
            format!("header dimensions {dims:?} are too large"),
        ));
    };
    if bytes.len() != expected {
        let what = if bytes.len() < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(DataError::new(
            path,
            format!(
                "{what}: header says {expected} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    bytes.drain(..header_len);
    Ok(IdxFile { body: bytes, dims })
}

/// Scales the first `limit` images of a checked image file to [0, 1].
fn images_from(
    path: &Path,
    file: &IdxFile,
    pixel_max: f32,
    limit: Option<usize>,
) -> Result<(Vec<f32>, usize, usize, usize), DataError> {
    if !(pixel_max.is_finite() && pixel_max > 0.0) {
        return Err(DataError::new(
            path,
            format!("pixel_max must be a positive number, got {pixel_max}"),
        ));
    }
    let (total, rows, cols) = (file.dims[0], file.dims[1], file.dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::new(
            path,
            format!("images of {rows} × {cols} pixels: a model needs at least one pixel"),
        ));
    }
    let n = limit.map_or(total, |l| l.min(total));
    let used = &file.body[..n * rows * cols];
    if let Some(pos) = used.iter().position(|&v| f32::from(v) > pixel_max) {
        return Err(DataError::new(
            path,
            format!(
                "value {} above pixel_max {pixel_max} — is pixel_max right for this dataset? (image {})",
                used[pos],
                pos / (rows * cols).max(1)
            ),
        ));
    }
    let images = used.iter().map(|&v| f32::from(v) / pixel_max).collect();
    Ok((images, n, rows, cols))
}

/// Reads an IDX image file, scaling each pixel to [0, 1] by dividing by
/// `pixel_max` (255 for MNIST-style data, 16 for optdigits).
///
/// Returns `(images, n, rows, cols)` with `images` row-major, image after
/// image; `limit` keeps only the first `limit` images. A pixel above
/// `pixel_max` is an error.
pub fn read_images(
    path: &Path,
    pixel_max: f32,
    limit: Option<usize>,
) -> Result<(Vec<f32>, usize, usize, usize), DataError> {
    let file = read_idx(path, IMAGES_MAGIC, 3)?;
    images_from(path, &file, pixel_max, limit)
}

/// Reads an IDX label file (one class id byte per example); `limit` keeps
/// only the first `limit` labels.
pub fn read_labels(path: &Path, limit: Option<usize>) -> Result<Vec<u8>, DataError> {
    let mut file = read_idx(path, LABELS_MAGIC, 1)?;
    let n = limit.map_or(file.dims[0], |l| l.min(file.dims[0]));
    file.body.truncate(n);
    Ok(file.body)
}

/// Loads the images and labels of one split from a dataset directory holding
/// the four MNIST-named files, checking that both files have the same count.
///
/// `pixel_max` is the largest raw pixel value (255 or 16); `limit` keeps only
/// the first `limit` examples.
pub fn load_split(
    dir: &Path,
    split: Split,
    pixel_max: f32,
    limit: Option<usize>,
) -> Result<ImageSet, DataError> {
    let (images_name, labels_name) = split.file_names();
    let images_path = dir.join(images_name);
    let labels_path = dir.join(labels_name);
    let image_file = read_idx(&images_path, IMAGES_MAGIC, 3)?;
    let label_file = read_idx(&labels_path, LABELS_MAGIC, 1)?;
    if image_file.dims[0] != label_file.dims[0] {
        return Err(DataError::new(
            &labels_path,
            format!(
                "count mismatch: {} labels but {} has {} images",
                label_file.dims[0],
                images_path.display(),
                image_file.dims[0]
            ),
        ));
    }
    let (images, n, rows, cols) = images_from(&images_path, &image_file, pixel_max, limit)?;
    let mut labels = label_file.body;
    labels.truncate(n);
    Ok(ImageSet {
        images,
        labels,
        n,
        rows,
        cols,
    })
}

#[cfg(test)]
mod tests;
