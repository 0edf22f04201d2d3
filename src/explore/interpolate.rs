//! `vaezoo interpolate RUN --from I --to J`: one PNG row with test image I, the decoded
//! latents of `--steps` points from I's latent to J's (both ends included), and image J.
//!
//! Vector latents move on a straight line ([`VectorSpace`]); mixture latents (NVIB) by the
//! weighted union of both mixtures' components ([`MixtureSpace`]). A conditional model decodes
//! every step with the label of I.

use std::path::{Path, PathBuf};

use vaezoo_core::latent::Mixture;
use vaezoo_core::plugin::{Ctx, LatentSpace, Mode, VectorSpace};
use vaezoo_core::rng::seeded;
use vaezoo_core::Backend;
use vaezoo_nvib::space::MixtureSpace;

use super::{check_index, check_steps, encode, image, linspace};
use crate::device::{on_device, DeviceChoice};
use crate::session::restore;
use crate::{plots, Result};

/// Options of `vaezoo interpolate`.
#[derive(Clone, Debug)]
pub struct InterpolateOptions {
    /// The test example to start from.
    pub from: usize,
    /// The test example to end at.
    pub to: usize,
    /// Decoded points, both ends included (at least 2).
    pub steps: usize,
    /// Where to write the PNG (default `RUN/plots/interpolate-I-J.png`).
    pub out: Option<PathBuf>,
    /// Where to compute.
    pub device: DeviceChoice,
}

/// Writes the interpolation row of the run at `root`; returns the PNG's path.
pub fn interpolate(root: &Path, opts: &InterpolateOptions) -> Result<PathBuf> {
    check_steps(opts.steps)?;
    on_device!(opts.device, |dev| interpolate_on(dev, root, opts))
}

fn interpolate_on<D: Backend>(dev: &D, root: &Path, opts: &InterpolateOptions) -> Result<PathBuf> {
    let r = restore(dev, root)?;
    if let Some(out) = &opts.out {
        r.run.check_output(out)?;
    }
    let test = r.test_split()?;
    check_index("--from", opts.from, &test)?;
    check_index("--to", opts.to, &test)?;
    let a = encode(&r, &test, opts.from..opts.from + 1)?;
    let b = encode(&r, &test, opts.to..opts.to + 1)?;
    let space: &dyn LatentSpace<D> = if a.is_vector() {
        &VectorSpace
    } else {
        &MixtureSpace
    };
    let label = [usize::from(test.labels[opts.from])];
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &r.params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    let mut images = image(&test, opts.from).to_vec();
    for tau in linspace(0.0, 1.0, opts.steps) {
        let latent: Mixture<D> = space.interpolate(&a, &b, tau)?;
        let decoded = r.model.decode_mean(&mut ctx, &latent, Some(&label))?;
        images.extend(decoded.as_vec());
    }
    images.extend_from_slice(image(&test, opts.to));
    let path = opts.out.clone().unwrap_or_else(|| {
        r.run
            .plot_path(&format!("interpolate-{}-{}.png", opts.from, opts.to))
    });
    let n = opts.steps + 2;
    plots::image_grid(&path, &images, n, test.rows, test.cols, n, 3)?;
    Ok(path)
}
