//! `vaezoo sample RUN -n N [--class C]`: decode latents drawn from the prior into a PNG grid,
//! or for a text model into sentences (greedy decoding); with `--class C` every sample is
//! given the label C (a CVAE draws from p(x | c)).

use std::path::{Path, PathBuf};

use vaezoo_core::plugin::{Ctx, Mode};
use vaezoo_core::rng::{seeded, HostRng};
use vaezoo_core::spec::DataSpec;
use vaezoo_core::Backend;

use crate::device::{on_device, DeviceChoice};
use crate::memory::rows_per_call;
use crate::run::write_lines;
use crate::session::restore;
use crate::text::TextModel;
use crate::{plots, Error, Result};

/// Options of `vaezoo sample`.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// How many samples.
    pub n: usize,
    /// Seed of the prior draws.
    pub seed: u64,
    /// The label every sample is given (for a conditional model), if any.
    pub class: Option<usize>,
    /// Scales each prior draw's distance from the prior mean (1: the model as trained).
    pub temperature: f32,
    /// Where to write the PNG (default `RUN/plots/samples.png`).
    pub out: Option<PathBuf>,
    /// Where to compute.
    pub device: DeviceChoice,
}

/// What `vaezoo sample` wrote.
#[derive(Clone, Debug)]
pub struct Sampled {
    /// The PNG grid, or for text the sentences, one per line (default
    /// `RUN/text/samples-seed<N>.txt`).
    pub path: PathBuf,
    /// The sentences of a text model.
    pub sentences: Option<Vec<String>>,
    /// Whether the model reads labels (otherwise `--class` has no effect).
    pub conditional: bool,
}

/// Draws `opts.n` samples from the run at `root` and writes them as an image grid.
pub fn sample(root: &Path, opts: &SampleOptions) -> Result<Sampled> {
    if opts.n == 0 {
        return Err(Error::Usage("-n must be at least 1".into()));
    }
    if !(opts.temperature.is_finite() && opts.temperature >= 0.0) {
        return Err(Error::Usage(format!(
            "--temperature must be a finite number ≥ 0, not {}",
            opts.temperature
        )));
    }
    on_device!(opts.device, |dev| sample_on(dev, root, opts))
}

fn sample_on<D: Backend>(dev: &D, root: &Path, opts: &SampleOptions) -> Result<Sampled> {
    let r = restore(dev, root)?;
    if let Some(out) = &opts.out {
        r.run.check_output(out)?;
    }
    if let Some(class) = opts.class {
        let classes = r.state.classes;
        if class >= classes {
            return Err(Error::OutOfRange {
                message: format!(
                    "--class {class} is out of range: the run was trained on {classes} classes (0 to {})",
                    classes.saturating_sub(1)
                ),
                hint: "pick a class the training labels contain; classes are numbered from 0",
            });
        }
    }
    let labels = opts.class.map(|c| vec![c; opts.n]);
    let mut rng = seeded(opts.seed);
    if matches!(r.spec.data, DataSpec::Text { .. }) {
        let tokenizer = r.tokenizer()?;
        let tm = TextModel::of_run(&r, &tokenizer)?;
        let sentences = tm.sample(&mut rng, opts.n, labels.as_deref(), opts.temperature)?;
        let path = opts
            .out
            .clone()
            .unwrap_or_else(|| r.run.text_path(&format!("samples-seed{}.txt", opts.seed)));
        write_lines(&path, &sentences)?;
        return Ok(Sampled {
            path,
            sentences: Some(sentences),
            conditional: r.is_conditional(),
        });
    }
    // In as few calls as the memory left allows (the built-in priors draw row after row, so
    // their samples are the same whatever the calls).
    let draw = |rng: &mut HostRng, n: usize| -> Result<Vec<f32>> {
        let mut ctx = Ctx {
            params: &r.params,
            mode: Mode::Eval,
            rng,
        };
        let labels = opts.class.map(|c| vec![c; n]);
        let z = r
            .model
            .sample(&mut ctx, n, labels.as_deref(), opts.temperature)?;
        Ok(z.as_vec())
    };
    let per_call = rows_per_call(dev, |n| draw(&mut seeded(0), n).map(drop))?;
    let mut images = Vec::with_capacity(opts.n * r.state.features);
    let mut left = opts.n;
    while left > 0 {
        let n = left.min(per_call.unwrap_or(usize::MAX));
        images.extend(draw(&mut rng, n)?);
        left -= n;
    }
    let side = (r.state.features as f64).sqrt() as usize;
    let (rows, cols) = if side * side == r.state.features {
        (side, side)
    } else {
        (1, r.state.features)
    };
    let path = opts
        .out
        .clone()
        .unwrap_or_else(|| r.run.plot_path("samples.png"));
    let grid_cols = (opts.n as f64).sqrt().ceil() as usize;
    plots::image_grid(&path, &images, opts.n, rows, cols, grid_cols, 3)?;
    Ok(Sampled {
        path,
        sentences: None,
        conditional: r.is_conditional(),
    })
}
