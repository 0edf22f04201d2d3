//! `vaezoo reconstruct RUN "a sentence"…` and `vaezoo interpolate RUN "s1" "s2" --steps N` for
//! text models: sentences are encoded to their posterior means and decoded greedily
//! ([`TextModel`]).

use std::path::Path;

use vaezoo_core::rng::seeded;
use vaezoo_core::Backend;

use crate::device::{on_device, DeviceChoice};
use crate::session::restore;
use crate::text::TextModel;
use crate::{Error, Result};

use super::{check_steps, linspace};

/// The greedy reconstruction of each sentence (each decoded for its own length), given the
/// class `class` for a conditional model.
pub fn reconstruct(
    root: &Path,
    sentences: &[String],
    class: Option<usize>,
    device: DeviceChoice,
) -> Result<Vec<String>> {
    if sentences.is_empty() {
        return Err(Error::Usage(
            "give at least one sentence to reconstruct".into(),
        ));
    }
    on_device!(device, |dev| reconstruct_on(dev, root, sentences, class))
}

fn reconstruct_on<D: Backend>(
    dev: &D,
    root: &Path,
    sentences: &[String],
    class: Option<usize>,
) -> Result<Vec<String>> {
    let r = restore(dev, root)?;
    let tokenizer = r.tokenizer()?;
    let tm = TextModel::of_run(&r, &tokenizer)?;
    let mut rng = seeded(0);
    sentences
        .iter()
        .map(|s| {
            let obs = tm.observation(std::slice::from_ref(s), class.map(|c| vec![c]))?;
            Ok(tm.reconstruct(&mut rng, &obs)?.remove(0))
        })
        .collect()
}

/// `steps` decodings from `from` to `to` (both ends included), with their τ; `class` is the
/// class of both for a conditional model.
pub fn interpolate_text(
    root: &Path,
    (from, to): (&str, &str),
    steps: usize,
    class: Option<usize>,
    device: DeviceChoice,
) -> Result<Vec<(f32, String)>> {
    check_steps(steps)?;
    on_device!(device, |dev| {
        let r = restore(dev, root)?;
        let tokenizer = r.tokenizer()?;
        let tm = TextModel::of_run(&r, &tokenizer)?;
        let mut rng = seeded(0);
        let labels = || class.map(|c| vec![c]);
        let (obs_a, obs_b) = (
            tm.observation(&[from], labels())?,
            tm.observation(&[to], labels())?,
        );
        let len =
            |o: &vaezoo_core::plugin::Observation<_>| o.tokens.as_ref().map_or(0, |t| t.seq.0 - 1);
        let decode_steps = len(&obs_a) + len(&obs_b);
        let (a, b) = (tm.encode(&mut rng, &obs_a)?, tm.encode(&mut rng, &obs_b)?);
        linspace(0.0, 1.0, steps)
            .map(|tau| {
                let latent = tm.interpolate(&a, &b, tau)?;
                let labels = obs_a.labels.as_deref();
                Ok((
                    tau,
                    tm.decode(&mut rng, &latent, labels, decode_steps)?
                        .remove(0),
                ))
            })
            .collect()
    })
}

/// Whether the run at `root` is a text run (its spec's data is a sentence corpus).
pub fn is_text_run(root: &Path) -> Result<bool> {
    let run = crate::run::RunDir::open(root)?;
    let spec = crate::spec_file::read_spec(&run.spec_path())?;
    Ok(matches!(
        spec.data,
        vaezoo_core::spec::DataSpec::Text { .. }
    ))
}
