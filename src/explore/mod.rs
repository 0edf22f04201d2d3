//! Looking into a trained latent space: `vaezoo interpolate` (decoded steps between the
//! latents of two test images) and `vaezoo traverse` (one latent dimension varied at a time).
//! Both encode with posterior means (`Mode::Eval`) and decode the likelihood's mean. For text
//! models, [`text`]: `vaezoo reconstruct` and `vaezoo interpolate` between two sentences.

pub mod interpolate;
pub mod text;
pub mod traverse;

use vaezoo_core::latent::Mixture;
use vaezoo_core::plugin::{Ctx, Mode};
use vaezoo_core::rng::seeded;
use vaezoo_core::Backend;

use crate::data::ImageSet;
use crate::evaluate::observation;
use crate::session::Restored;
use crate::{Error, Result};

/// Checks that `index` (given as `--flag`) is a test example.
fn check_index(flag: &str, index: usize, test: &ImageSet) -> Result<()> {
    if index >= test.n {
        return Err(Error::OutOfRange {
            message: format!(
                "{flag} {index} is out of range: the test set has {} examples (0 to {})",
                test.n,
                test.n.saturating_sub(1)
            ),
            hint: "test examples are numbered from 0, in the order of the test files",
        });
    }
    Ok(())
}

/// The posterior (`Mode::Eval`: `z` is the mean) of test examples `rows`.
///
/// # Shapes
/// → `(rows, Comp, Latent)`
fn encode<D: Backend>(
    r: &Restored<D>,
    test: &ImageSet,
    rows: std::ops::Range<usize>,
) -> Result<Mixture<D>> {
    let obs = observation(r.params.device(), test, rows);
    let mut rng = seeded(0);
    let mut ctx = Ctx {
        params: &r.params,
        mode: Mode::Eval,
        rng: &mut rng,
    };
    r.model.posterior(&mut ctx, &obs)
}

/// The pixels of test example `index`.
fn image(test: &ImageSet, index: usize) -> &[f32] {
    let f = test.features();
    &test.images[index * f..(index + 1) * f]
}

/// `steps` evenly spaced values from `from` to `to`, both included.
fn linspace(from: f32, to: f32, steps: usize) -> impl Iterator<Item = f32> {
    let span = (steps.max(2) - 1) as f32;
    (0..steps).map(move |i| from + (to - from) * i as f32 / span)
}

/// `--steps` must give both ends.
fn check_steps(steps: usize) -> Result<()> {
    if steps < 2 {
        return Err(Error::Usage(format!(
            "--steps {steps} is too few: at least 2 (both ends)"
        )));
    }
    Ok(())
}
