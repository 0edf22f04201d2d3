//! `vaezoo traverse RUN`: the latent traversal grid of a vector VAE (e.g. a β-VAE). Test image
//! I is encoded; for each of the `--dims` most active latent dimensions (largest variance of
//! the posterior mean over the test set), that dimension is set to each of `--steps` values
//! from −range to +range while the others keep I's encoding, and the latents are decoded.
//! One PNG row per dimension, most active first.

use std::path::{Path, PathBuf};

use vaezoo_core::axes::{Batch, Latent};
use vaezoo_core::plugin::{Ctx, Mode};
use vaezoo_core::rng::seeded;
use vaezoo_core::Backend;

use super::{check_index, check_steps, encode, linspace};
use crate::device::{on_device, DeviceChoice};
use crate::evaluate::active::mean_variances;
use crate::model::Model;
use crate::session::restore;
use crate::{plots, Error, Result};

/// Options of `vaezoo traverse`.
#[derive(Clone, Debug)]
pub struct TraverseOptions {
    /// The test example whose encoding is varied.
    pub index: usize,
    /// How many dimensions (rows), the most active first; all when the latent has fewer.
    pub dims: usize,
    /// Each dimension goes from −range to +range.
    pub range: f32,
    /// Values per dimension (columns), both ends included (at least 2).
    pub steps: usize,
    /// Where to write the PNG (default `RUN/plots/traverse-I.png`).
    pub out: Option<PathBuf>,
    /// Where to compute.
    pub device: DeviceChoice,
}

/// What `vaezoo traverse` wrote.
#[derive(Clone, Debug)]
pub struct Traversal {
    /// The PNG grid.
    pub path: PathBuf,
    /// The dimension of each row, top to bottom, with its posterior-mean variance.
    pub rows: Vec<(usize, f64)>,
}

/// Writes the traversal grid of the run at `root`.
pub fn traverse(root: &Path, opts: &TraverseOptions) -> Result<Traversal> {
    check_steps(opts.steps)?;
    if opts.dims == 0 || !(opts.range.is_finite() && opts.range > 0.0) {
        return Err(Error::Usage(
            "--dims must be at least 1 and --range a positive number".into(),
        ));
    }
    on_device!(opts.device, |dev| traverse_on(dev, root, opts))
}

fn traverse_on<D: Backend>(dev: &D, root: &Path, opts: &TraverseOptions) -> Result<Traversal> {
    let r = restore(dev, root)?;
    if let Some(out) = &opts.out {
        r.run.check_output(out)?;
    }
    let test = r.test_split()?;
    check_index("--index", opts.index, &test)?;
    let latent = r.model.latent_dim();
    let mut means = Vec::with_capacity(test.n * latent);
    for start in (0..test.n).step_by(500) {
        let posterior = encode(&r, &test, start..(start + 500).min(test.n))?;
        if !posterior.is_vector() {
            return Err(Error::Usage(format!(
                "traversal supports vector latents (one component); this latent has {}",
                posterior.dims().1 .0
            )));
        }
        means.extend(posterior.mean.as_vec());
    }
    let mut rows: Vec<(usize, f64)> = mean_variances(&means, latent)
        .into_iter()
        .enumerate()
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.truncate(opts.dims);
    let code = &means[opts.index * latent..(opts.index + 1) * latent];
    let mut z = Vec::with_capacity(rows.len() * opts.steps * latent);
    for &(dim, _) in &rows {
        for v in linspace(-opts.range, opts.range, opts.steps) {
            let start = z.len();
            z.extend_from_slice(code);
            z[start + dim] = v;
        }
    }
    let n = rows.len() * opts.steps;
    let labels = vec![usize::from(test.labels[opts.index]); n];
    let z = dev.tensor_from_vec(z, (Batch(n), Latent(latent)));
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &r.params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let images = (r.model)
        .decode_mean(&mut ctx, &Model::point_latent(z), Some(&labels))?
        .as_vec();
    let path = opts
        .out
        .clone()
        .unwrap_or_else(|| r.run.plot_path(&format!("traverse-{}.png", opts.index)));
    plots::image_grid(&path, &images, n, test.rows, test.cols, opts.steps, 3)?;
    Ok(Traversal { path, rows })
}
