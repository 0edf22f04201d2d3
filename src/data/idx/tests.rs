//! Unit tests of `idx`.

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

    for dims in [[2, 0, 0], [2, 4, 0], [0, 0, 3]] {
        let empty = write(dir, "e", &idx_bytes(2051, &dims, &[]));
        let err = read_images(&empty, 255.0, None).unwrap_err();
        assert!(
            err.message.contains("at least one pixel"),
            "{dims:?}: {err}"
        );
    }

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
