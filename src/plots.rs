//! PNG figures of a training run: loss curves drawn with plotters and grids of
//! images (inputs, reconstructions, samples) written with the `png` crate.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (no system fonts are
//! needed; see `assets/fonts/LICENSE-DejaVu.txt`). Every file is written
//! atomically: encoded to `.{name}.tmp.png` in the target directory, then
//! renamed over `name`, so a reader never sees a half-written PNG.

use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// DejaVu Sans, registered with plotters as the `sans-serif` family.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
/// The font family name every text style here uses.
const FAMILY: &str = "sans-serif";
/// Size of a loss-curve PNG in pixels.
const LOSS_SIZE: (u32, u32) = (800, 500);
/// Width of the legend column right of a [`Marks::MeanAndSpread`] chart, in pixels.
const LEGEND_WIDTH: u32 = 320;

/// The PNG size of an [`xy_chart`]: a [`Marks::MeanAndSpread`] chart has its legend in a
/// column of its own, so that it never hides a point.
fn chart_size(marks: Marks) -> (u32, u32) {
    match marks {
        Marks::MeanAndSpread => (LOSS_SIZE.0 + LEGEND_WIDTH, LOSS_SIZE.1),
        _ => LOSS_SIZE,
    }
}
/// Line colours of the series, in order (Tableau 10), repeated if needed.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How [`xy_chart`] draws each series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marks {
    /// A line through the points (a dot for a single point).
    Lines,
    /// A dot per point.
    Dots,
    /// A ring per point (e.g. one per seed), and their mean as a dot with error bars of one
    /// sample standard deviation each way (none for a single point).
    MeanAndSpread,
}

/// The mean of `points` and the sample standard deviation of each coordinate (0 for fewer
/// than two points).
pub fn mean_and_spread(points: &[(f64, f64)]) -> ((f64, f64), (f64, f64)) {
    let n = points.len() as f64;
    let mean = |f: fn(&(f64, f64)) -> f64| points.iter().map(f).sum::<f64>() / n;
    let (mx, my) = (mean(|p| p.0), mean(|p| p.1));
    let sd = |f: fn(&(f64, f64)) -> f64, m: f64| {
        if points.len() < 2 {
            0.0
        } else {
            (points.iter().map(|p| (f(p) - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        }
    };
    ((mx, my), (sd(|p| p.0, mx), sd(|p| p.1, my)))
}
/// Grey level of the separators between the images of a grid.
const SEPARATOR: u8 = 64;

/// A figure that could not be drawn or written: the target file and a
/// one-line reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct PlotError {
    /// The PNG that was to be written.
    pub path: PathBuf,
    /// What went wrong, on one line.
    pub message: String,
}

/// Registers the embedded font with plotters (once per process).
fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "the embedded DejaVu Sans font is not a valid font".to_string())
        })
        .clone()
}

/// An axis range holding `min..=max` plus `margin` (a fraction of the span)
/// on both sides; a single value gets a range around it, no value gives 0..1.
fn axis_range(bounds: Option<(f64, f64)>, margin: f64) -> Result<Range<f64>, String> {
    let Some((min, max)) = bounds else {
        return Ok(0.0..1.0);
    };
    let span = max - min;
    if !span.is_finite() {
        return Err(format!(
            "values from {min} to {max} are too far apart to plot"
        ));
    }
    if span == 0.0 {
        let pad = if min == 0.0 { 1.0 } else { min.abs() * 0.1 };
        return Ok(min - pad..max + pad);
    }
    Ok(min - span * margin..max + span * margin)
}

/// Smallest and largest of some values.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Decimals that tell apart the ticks of an axis spanning `range`: 0 for a
/// span of 10 or more, one more for each factor of ten below (at most 6).
fn tick_decimals(range: &Range<f64>) -> usize {
    (1.0 - (range.end - range.start).log10().floor()).clamp(0.0, 6.0) as usize
}

/// A tick label with `decimals` decimals, never "-0".
fn tick_label(v: f64, decimals: usize) -> String {
    let label = format!("{v:.decimals$}");
    match label.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => label,
    }
}

/// Draws the loss chart into an RGB buffer of [`LOSS_SIZE`].
fn draw_loss_chart(
    rgb: &mut [u8],
    title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    (x_label, y_label): (&str, &str),
    (x_range, y_range): (Range<f64>, Range<f64>),
    marks: Marks,
) -> Result<(), Box<dyn std::error::Error>> {
    let x_decimals = tick_decimals(&x_range);
    let y_decimals = tick_decimals(&y_range);
    let x_ticks = move |v: &f64| tick_label(*v, x_decimals);
    let y_ticks = move |v: &f64| tick_label(*v, y_decimals);
    let size = chart_size(marks);
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot_area, legend_area) = match marks {
        Marks::MeanAndSpread => {
            let (plot, legend) = root.split_horizontally(size.0 - LEGEND_WIDTH);
            (plot, Some(legend))
        }
        _ => (root.clone(), None),
    };
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&x_ticks)
        .y_label_formatter(&y_ticks)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(244, 244, 244))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let style = color.filled().stroke_width(2);
        let drawn = match marks {
            Marks::Lines => {
                // A single point has no line: show it as a dot.
                let dot = if points.len() == 1 { 4 } else { 0 };
                chart.draw_series(LineSeries::new(points.iter().copied(), style).point_size(dot))?
            }
            Marks::Dots => {
                let dots = points.iter().map(|&p| Circle::new(p, 5, style));
                chart.draw_series(dots)?
            }
            Marks::MeanAndSpread => {
                let ring = color.stroke_width(1);
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, ring)))?;
                let ((mx, my), (sx, sy)) = mean_and_spread(points);
                if points.len() > 1 {
                    chart.draw_series([ErrorBar::new_vertical(
                        mx,
                        my - sy,
                        my,
                        my + sy,
                        style,
                        10,
                    )])?;
                    chart.draw_series([ErrorBar::new_horizontal(
                        my,
                        mx - sx,
                        mx,
                        mx + sx,
                        style,
                        10,
                    )])?;
                }
                chart.draw_series([Circle::new((mx, my), 6, style)])?
            }
        };
        drawn
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    match legend_area {
        // One line per series: its colour's dot and its name.
        Some(area) => {
            // Colours by the series' index, as the chart drew them; lines for the drawn ones.
            let drawn: Vec<_> = (series.iter().enumerate())
                .filter(|(_, (_, p))| !p.is_empty())
                .collect();
            for (line, &(i, (name, _))) in drawn.iter().enumerate() {
                let y = 64 + 26 * line as i32;
                let color = COLORS[i % COLORS.len()];
                area.draw(&Circle::new((14, y), 6, color.filled()))?;
                area.draw(&Text::new(*name, (28, y - 9), (FAMILY, 15)))?;
            }
            let grey = (FAMILY, 13).into_font().color(&RGBColor(90, 90, 90));
            let key = ["rings: one per seed", "dot and bars: their mean ± 1 s.d."];
            for (j, line) in key.iter().enumerate() {
                let y = 64 + 26 * drawn.len() as i32 + 8 + 18 * j as i32;
                area.draw(&Text::new(*line, (8, y), grey.clone()))?;
            }
        }
        None => chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()?,
    }
    root.present()?;
    Ok(())
}

/// Writes a line chart of `series` (name, `(x, y)` points; e.g. "loss",
/// "reconstruction" and "kl" against the step) to the 800×500 PNG `path`,
/// with a legend, `x_label` under the x axis and "nats per example" on the y
/// axis.
///
/// Points with a non-finite coordinate are skipped; the axes span the
/// remaining points (a single point gets a range around it, none gives 0..1).
pub fn loss_curves(
    path: &Path,
    title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    x_label: &str,
) -> Result<(), PlotError> {
    xy_chart(
        path,
        title,
        series,
        (x_label, "nats per example"),
        Marks::Lines,
    )
}

/// [`loss_curves`] with any axis labels `(x, y)`, each series drawn with `marks`.
pub fn xy_chart(
    path: &Path,
    title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    labels: (&str, &str),
    marks: Marks,
) -> Result<(), PlotError> {
    let fail = |message: String| PlotError {
        path: path.to_path_buf(),
        message,
    };
    ensure_font().map_err(fail)?;
    let finite: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, points)| {
            let kept = points.iter().copied();
            (
                *name,
                kept.filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect(),
            )
        })
        .collect();
    // The error bars' ends count as points for the axes.
    let bar_ends: Vec<(f64, f64)> = match marks {
        Marks::MeanAndSpread => finite
            .iter()
            .filter(|(_, points)| !points.is_empty())
            .flat_map(|(_, points)| {
                let ((mx, my), (sx, sy)) = mean_and_spread(points);
                [(mx - sx, my - sy), (mx + sx, my + sy)]
            })
            .collect(),
        _ => Vec::new(),
    };
    let all = || {
        let points = finite.iter().flat_map(|(_, points)| points.iter().copied());
        points.chain(bar_ends.iter().copied())
    };
    let x_margin = if marks == Marks::MeanAndSpread {
        0.05
    } else {
        0.0
    };
    let x_range = axis_range(bounds(all().map(|p| p.0)), x_margin).map_err(fail)?;
    let y_range = axis_range(bounds(all().map(|p| p.1)), 0.05).map_err(fail)?;
    let (width, height) = chart_size(marks);
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    draw_loss_chart(&mut rgb, title, &finite, labels, (x_range, y_range), marks)
        .map_err(|e| fail(format!("cannot draw the chart: {e}")))?;
    write_png(path, width, height, png::ColorType::Rgb, &rgb)
}

/// Writes `n` greyscale images (`rows × cols` each, values in [0, 1], row-major,
/// image after image in `images`) as one 8-bit greyscale PNG, `grid_cols`
/// images per row, each pixel enlarged to `scale × scale` (nearest neighbour).
/// Values are clamped to [0, 1]; NaN is drawn black.
///
/// Images are framed by dark-grey separators one (scaled) pixel wide, also
/// around the outside. With `c = min(grid_cols, n)` columns and
/// `r = ceil(n / c)` rows of images, the PNG is
/// `(c * (cols + 1) + 1) * scale` pixels wide and
/// `(r * (rows + 1) + 1) * scale` pixels high; e.g. 10 images of 28×28 with
/// `grid_cols = 5`, `scale = 2` give 292×118. Unused cells of the last row
/// stay dark grey.
pub fn image_grid(
    path: &Path,
    images: &[f32],
    n: usize,
    rows: usize,
    cols: usize,
    grid_cols: usize,
    scale: u32,
) -> Result<(), PlotError> {
    let fail = |message: String| PlotError {
        path: path.to_path_buf(),
        message,
    };
    if n == 0 || rows == 0 || cols == 0 || grid_cols == 0 || scale == 0 {
        return Err(fail(format!(
            "nothing to draw: n={n}, rows={rows}, cols={cols}, grid_cols={grid_cols}, scale={scale} must all be positive"
        )));
    }
    let features = rows * cols;
    if n.checked_mul(features) != Some(images.len()) {
        return Err(fail(format!(
            "{} values given for {n} images of {rows}x{cols}",
            images.len()
        )));
    }
    let s = scale as usize;
    let grid_c = grid_cols.min(n);
    let grid_r = n.div_ceil(grid_c);
    let size = |count: usize, len: usize| {
        count
            .checked_mul(len + 1)
            .and_then(|v| v.checked_add(1))
            .and_then(|v| v.checked_mul(s))
            .and_then(|v| u32::try_from(v).ok())
    };
    let (Some(width), Some(height)) = (size(grid_c, cols), size(grid_r, rows)) else {
        return Err(fail("the grid is too large for a PNG".to_string()));
    };
    let (w, h) = (width as usize, height as usize);
    let Some(total) = w.checked_mul(h) else {
        return Err(fail("the grid is too large for a PNG".to_string()));
    };
    let mut grey = vec![SEPARATOR; total];
    for (k, image) in images.chunks_exact(features).enumerate() {
        let x0 = ((k % grid_c) * (cols + 1) + 1) * s;
        let y0 = ((k / grid_c) * (rows + 1) + 1) * s;
        for (r, row) in image.chunks_exact(cols).enumerate() {
            let top = (y0 + r * s) * w + x0;
            let line = &mut grey[top..top + cols * s];
            for (block, &v) in line.chunks_exact_mut(s).zip(row) {
                block.fill(to_grey(v));
            }
            for dy in 1..s {
                grey.copy_within(top..top + cols * s, top + dy * w);
            }
        }
    }
    write_png(path, width, height, png::ColorType::Grayscale, &grey)
}

/// An intensity in [0, 1] as an 8-bit grey level (clamped; NaN is 0).
fn to_grey(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// Encodes 8-bit pixels as a PNG at `path`, atomically: written to
/// `.{name}.tmp.png` next to it first, then renamed.
fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    data: &[u8],
) -> Result<(), PlotError> {
    let fail = |message: String| PlotError {
        path: path.to_path_buf(),
        message,
    };
    let Some(name) = path.file_name() else {
        return Err(fail("not a file path".to_string()));
    };
    let tmp = path.with_file_name(format!(".{}.tmp.png", name.to_string_lossy()));
    let encode = || -> Result<(), String> {
        let file =
            File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))
    };
    encode().map_err(|message| {
        // Best effort: the temporary file may not even exist.
        let _ = std::fs::remove_file(&tmp);
        fail(format!("cannot write PNG: {message}"))
    })
}

#[cfg(test)]
mod tests;
