//! Unit tests of `plots`.

use super::*;

/// Decodes a PNG, returning its size, colour type and pixels.
fn decode(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
    let decoder = png::Decoder::new(File::open(path).expect("open png"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png data");
    buf.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, buf)
}

/// The names in `dir`, to check that no temporary file is left behind.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn loss_curves_write_an_rgb_png() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("loss.png");
    let curve = |f: fn(f64) -> f64| (0..50).map(|s| (s as f64, f(s as f64))).collect();
    let mut recon: Vec<(f64, f64)> = curve(|s| 200.0 / (1.0 + s));
    recon[3].1 = f64::NAN;
    recon[4].0 = f64::INFINITY;
    let series = [
        ("loss", curve(|s| 230.0 / (1.0 + s) + 20.0)),
        ("reconstruction", recon),
        ("kl", curve(|s| 20.0 + s / 10.0)),
    ];
    loss_curves(&path, "Gaussian VAE", &series, "step").unwrap();
    let (w, h, color, pixels) = decode(&path);
    assert_eq!((w, h, color), (800, 500, png::ColorType::Rgb));
    // Something besides the white background was drawn, in colour.
    assert!(pixels.chunks(3).any(|p| p == [31, 119, 180]));
    // Overwriting works too.
    loss_curves(&path, "again", &series[..1], "epoch").unwrap();
    assert_eq!(names(tmp.path()), vec!["loss.png"]);
}

#[test]
fn tick_labels_suit_the_axis() {
    assert_eq!(tick_decimals(&(0.0..4700.0)), 0);
    assert_eq!(tick_decimals(&(-1.0..1.0)), 1);
    assert_eq!(tick_decimals(&(0.2..0.25)), 3);
    assert_eq!(tick_decimals(&(0.0..1e-30)), 6);
    assert_eq!(tick_label(1000.0, 0), "1000");
    assert_eq!(tick_label(-0.001, 1), "0.0");
    assert_eq!(tick_label(-0.25, 2), "-0.25");
}

#[test]
fn loss_curves_handle_degenerate_data() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one.png");
    loss_curves(&one, "one point", &[("loss", vec![(0.0, 5.0)])], "step").unwrap();
    assert_eq!(decode(&one).0, 800);
    let none = tmp.path().join("none.png");
    let nan = vec![(0.0, f64::NAN), (f64::NAN, 1.0)];
    loss_curves(&none, "nothing", &[("loss", nan), ("kl", vec![])], "step").unwrap();
    loss_curves(&none, "no series", &[], "step").unwrap();
    let wide = [("loss", vec![(0.0, -f64::MAX), (1.0, f64::MAX)])];
    let err = loss_curves(&none, "too wide", &wide, "step").unwrap_err();
    assert!(err.message.contains("too far apart"), "{err}");
}

#[test]
fn unwritable_path_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("missing").join("loss.png");
    let err = loss_curves(&path, "t", &[("loss", vec![(0.0, 1.0)])], "step").unwrap_err();
    assert_eq!(err.path, path);
    assert!(err.to_string().contains("cannot write PNG"), "{err}");
    assert!(!err.to_string().contains('\n'));
    let err = image_grid(&path, &[0.5], 1, 1, 1, 1, 1).unwrap_err();
    assert!(err.message.contains("cannot create"), "{err}");
}

#[test]
fn image_grid_has_the_documented_size() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("grid.png");
    let mut images = vec![1.0f32; 10 * 28 * 28];
    images[0] = f32::NAN;
    images[1] = -3.0;
    images[2] = 0.5;
    image_grid(&path, &images, 10, 28, 28, 5, 2).unwrap();
    let (w, h, color, grey) = decode(&path);
    assert_eq!((w, h), ((5 * 29 + 1) * 2, (2 * 29 + 1) * 2));
    assert_eq!((w, h), (292, 118));
    assert_eq!(color, png::ColorType::Grayscale);
    let at = |x: usize, y: usize| grey[y * w as usize + x];
    assert_eq!(at(0, 0), SEPARATOR);
    // First image starts at (2, 2); each pixel is a 2x2 block.
    assert_eq!(
        [at(2, 2), at(3, 3), at(4, 2), at(6, 3), at(8, 2)],
        [0, 0, 0, 128, 255]
    );
    assert_eq!(at(58, 2), SEPARATOR, "separator after the first image");
    assert_eq!(at(60, 2), 255, "second image");
    assert_eq!(names(tmp.path()), vec!["grid.png"]);
}

#[test]
fn image_grid_partial_rows_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("g.png");
    image_grid(&path, &[1.0; 3 * 4], 3, 2, 2, 8, 1).unwrap();
    let (w, h, _, _) = decode(&path);
    assert_eq!((w, h), (10, 4), "fewer images than grid_cols: one row of 3");
    image_grid(&path, &[1.0; 3 * 4], 3, 2, 2, 2, 3).unwrap();
    let (w, h, _, grey) = decode(&path);
    assert_eq!((w, h), (21, 21));
    assert_eq!(
        grey[(h as usize - 4) * w as usize + 12],
        SEPARATOR,
        "empty cell"
    );
    assert!(image_grid(&path, &[1.0; 5], 3, 2, 2, 2, 1).is_err());
    assert!(image_grid(&path, &[], 0, 2, 2, 2, 1).is_err());
    assert!(image_grid(&path, &[1.0; 4], 1, 2, 2, 0, 1).is_err());
    assert!(image_grid(&path, &[1.0; 4], 1, 2, 2, 1, 0).is_err());
    assert!(image_grid(&path, &[1.0; 4], 1, 2, 2, 1, u32::MAX).is_err());
}

#[test]
fn seed_charts_show_mean_and_spread_beside_a_legend() {
    let ((mx, my), (sx, sy)) = mean_and_spread(&[(0.5, 10.0), (0.7, 20.0), (0.6, 30.0)]);
    assert!((mx - 0.6).abs() < 1e-12 && (my - 20.0).abs() < 1e-12);
    assert!((sx - 0.1).abs() < 1e-12 && (sy - 10.0).abs() < 1e-12);
    assert_eq!(mean_and_spread(&[(0.5, 10.0)]).1, (0.0, 0.0));

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("seeds.png");
    let series = [
        ("three seeds", vec![(0.5, 10.0), (0.7, 20.0), (0.6, 30.0)]),
        ("one seed", vec![(0.9, 80.0)]),
    ];
    xy_chart(
        &path,
        "seeds",
        &series,
        ("kept", "BLEU"),
        Marks::MeanAndSpread,
    )
    .unwrap();
    let (w, h, color, pixels) = decode(&path);
    assert_eq!(
        (w, h, color),
        (800 + LEGEND_WIDTH, 500, png::ColorType::Rgb)
    );
    // Both series' colours are drawn.
    assert!(pixels.chunks(3).any(|p| p == [31, 119, 180]));
    assert!(pixels.chunks(3).any(|p| p == [255, 127, 14]));
}
