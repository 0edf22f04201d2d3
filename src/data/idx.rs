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
mod tests {
    use super::*;

    /// Finds `zoo/data/<name>` by walking up from this source file and from the
    /// working directory (works from the vaezoo crate and from scratch crates).
    fn data_dir(name: &str) -> PathBuf {
        let cwd = std::env::current_dir().expect("current dir");
        // `file!()` is relative to the workspace root, or absolute for `#[path]` modules.
        let source = Path::new(file!());
        let source = if source.is_absolute() {
            source.to_path_buf()
        } else {
            cwd.join(source)
        };
        for start in [source.as_path(), cwd.as_path()] {
            for dir in start.ancestors() {
                let candidate = dir.join("zoo").join("data").join(name);
                if candidate.is_dir() {
                    return candidate;
                }
            }
        }
        panic!("zoo/data/{name} not found above {}", cwd.display());
    }

    fn idx_bytes(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(body);
        out
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write test file");
        path
    }

    fn check_set(set: &ImageSet, n: usize, rows: usize, cols: usize) {
        assert_eq!((set.n, set.rows, set.cols), (n, rows, cols));
        assert_eq!(set.features(), rows * cols);
        assert_eq!(set.images.len(), n * rows * cols);
        assert_eq!(set.labels.len(), n);
        assert_eq!(set.num_classes(), 10);
        assert!(set.images.iter().all(|v| (0.0..=1.0).contains(v)));
        // Real data uses the full range.
        assert!(set.images.contains(&1.0));
        assert!(set.images.contains(&0.0));
    }

    #[test]
    fn reads_fashion_mnist() {
        let dir = data_dir("fashion_mnist");
        check_set(
            &load_split(&dir, Split::Train, 255.0, None).unwrap(),
            6000,
            28,
            28,
        );
        check_set(
            &load_split(&dir, Split::Test, 255.0, None).unwrap(),
            1000,
            28,
            28,
        );
    }

    #[test]
    fn reads_optdigits() {
        let dir = data_dir("optdigits");
        check_set(
            &load_split(&dir, Split::Train, 16.0, None).unwrap(),
            3823,
            8,
            8,
        );
        check_set(
            &load_split(&dir, Split::Test, 16.0, None).unwrap(),
            1497,
            8,
            8,
        );
    }

    #[test]
    fn limit_keeps_the_first_examples() {
        let dir = data_dir("optdigits");
        let full = load_split(&dir, Split::Test, 16.0, None).unwrap();
        let part = load_split(&dir, Split::Test, 16.0, Some(100)).unwrap();
        assert_eq!(part.n, 100);
        assert_eq!(part.images[..], full.images[..100 * 64]);
        assert_eq!(part.labels[..], full.labels[..100]);
        let labels = read_labels(&dir.join("t10k-labels-idx1-ubyte"), Some(5000)).unwrap();
        assert_eq!(labels, full.labels);
        let (images, n, rows, cols) =
            read_images(&dir.join("t10k-images-idx3-ubyte"), 16.0, Some(3)).unwrap();
        assert_eq!((n, rows, cols), (3, 8, 8));
        assert_eq!(images[..], full.images[..3 * 64]);
    }

    #[test]
    fn wrong_pixel_max_is_reported() {
        let dir = data_dir("fashion_mnist");
        let err = read_images(&dir.join("t10k-images-idx3-ubyte"), 16.0, None).unwrap_err();
        assert!(err.message.contains("above pixel_max 16"), "{err}");
        assert!(err.message.contains("is pixel_max right"), "{err}");
    }

    #[test]
    fn bad_files_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();

        let missing = read_images(&dir.join("nothing"), 255.0, None).unwrap_err();
        assert_eq!(missing.message, "file not found");
        assert_eq!(missing.path, dir.join("nothing"));

        let labels_as_images = write(dir, "l", &idx_bytes(2049, &[2], &[1, 2]));
        let err = read_images(&labels_as_images, 255.0, None).unwrap_err();
        assert!(err.message.contains("expected 2051, found 2049"), "{err}");

        let short_header = write(dir, "s", &[0, 0, 8]);
        let err = read_labels(&short_header, None).unwrap_err();
        assert!(err.message.starts_with("truncated"), "{err}");

        let truncated = write(dir, "t", &idx_bytes(2051, &[2, 2, 2], &[0; 7]));
        let err = read_images(&truncated, 255.0, None).unwrap_err();
        assert!(
            err.message.contains("header says 24 bytes, file has 23"),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'));
        assert!(err
            .to_string()
            .starts_with(&truncated.display().to_string()));

        let long = write(dir, "x", &idx_bytes(2049, &[2], &[0; 3]));
        let err = read_labels(&long, None).unwrap_err();
        assert!(
            err.message.contains("header says 10 bytes, file has 11"),
            "{err}"
        );

        let huge = write(dir, "h", &idx_bytes(2051, &[u32::MAX; 3], &[]));
        assert!(read_images(&huge, 255.0, None).is_err());

        let bright = write(dir, "b", &idx_bytes(2051, &[1, 1, 2], &[3, 200]));
        let err = read_images(&bright, 16.0, None).unwrap_err();
        assert!(
            err.message.contains("value 200 above pixel_max 16"),
            "{err}"
        );
        assert!(read_images(&bright, 0.0, None).is_err());
        let (images, ..) = read_images(&bright, 200.0, None).unwrap();
        assert_eq!(images, vec![0.015, 1.0]);
    }

    #[test]
    fn count_mismatch_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(
            dir,
            "t10k-images-idx3-ubyte",
            &idx_bytes(2051, &[2, 1, 1], &[0, 1]),
        );
        write(
            dir,
            "t10k-labels-idx1-ubyte",
            &idx_bytes(2049, &[3], &[0, 1, 2]),
        );
        let err = load_split(dir, Split::Test, 1.0, Some(1)).unwrap_err();
        assert!(err.message.contains("count mismatch: 3 labels"), "{err}");
        assert!(load_split(dir, Split::Train, 1.0, None)
            .unwrap_err()
            .message
            .contains("not found"));

        write(
            dir,
            "t10k-labels-idx1-ubyte",
            &idx_bytes(2049, &[2], &[0, 4]),
        );
        let set = load_split(dir, Split::Test, 1.0, None).unwrap();
        assert_eq!(set.num_classes(), 5);
        assert_eq!(set.images, vec![0.0, 1.0]);
    }

    #[test]
    fn empty_set_has_no_classes() {
        let set = ImageSet {
            images: vec![],
            labels: vec![],
            n: 0,
            rows: 8,
            cols: 8,
        };
        assert_eq!(set.num_classes(), 0);
    }
}
