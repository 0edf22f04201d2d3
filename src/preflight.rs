//! What `vaezoo validate` checks beyond the schema: everything `train` checks before its first
//! step, without a run folder. The spec's data is read (and a text spec's tokenizer trained)
//! as a new run reads it, the model is built for that data, and one training step's forward
//! pass and objective run on two examples. So a spec that validates also builds: heads that
//! divide d_model, a latent width the decoder takes, partner plugins (a prior that needs its
//! bottleneck's settings), an encoder for the data's format and KL schedules that name the
//! model's terms are all checked, and so is the memory a training step of the spec's batch
//! takes ([`crate::memory`]).
//!
//! A plugin's config error names the slot it came from as a JSON pointer (`/decoder/config`,
//! or `/decoder/config/cross_attention/config` for a nested component), and a KL schedule
//! error points at `/training/kl_schedules`.

use std::path::Path;

use vaezoo_core::dfdx::prelude::Cpu;
use vaezoo_core::params::ParamStore;
use vaezoo_core::plugin::{Ctx, Mode, Progress};
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::Spec;

use crate::data::Dataset;
use crate::memory::{check_step_fits, gradient_bytes};
use crate::model::Model;
use crate::spec_file::resolve_paths;
use crate::{registry, Error, Result};

/// Checks that `spec` (read from `path`) builds and takes a training step's forward pass.
pub fn preflight(path: &Path, mut spec: Spec) -> Result<()> {
    resolve_paths(&mut spec, path)?;
    let (data, _tokenizer) = Dataset::load_for_new_run(&spec.data)?;
    let dims = data.dims();
    let at = |e: Error| locate(&spec, e);
    let mut rng = seeded(spec.training.seed);
    let (model, init) = Model::build(registry()?, &spec, dims, &mut rng).map_err(at)?;
    let dev = Cpu::default();
    let params = ParamStore::new(&dev, init);
    let batches = data.epoch_batches(spec.training.batch_size.min(2), spec.training.seed, 0);
    let Some(rows) = batches.first() else {
        return Err(Error::Usage(format!(
            "{}: the training split is empty",
            spec.data.dir()
        )));
    };
    let obs = data.observation(&dev, rows)?;
    let mut ctx = Ctx {
        params: &params,
        mode: Mode::Train,
        rng: &mut rng,
    };
    let losses = model.losses(&mut ctx, &obs).map_err(at)?;
    let progress = Progress {
        step: 0,
        total_steps: 1,
        epochs: spec.training.epochs,
    };
    model
        .objective(losses, &spec.training, progress)
        .map_err(at)?;
    // Training adds the gradient buffers and Adam's two moments.
    let pending = 3 * gradient_bytes(&params);
    check_step_fits(&params, &model, &data, &spec.training, pending)
}

/// The JSON pointer (within `config`) of a nested component `{"kind": plugin, …}`, such as a
/// decoder's cross-attention.
fn nested_component(config: &serde_json::Value, plugin: &str) -> Option<String> {
    let object = config.as_object()?;
    if object.get("kind").and_then(|k| k.as_str()) == Some(plugin) {
        return Some(String::new());
    }
    object
        .iter()
        .find_map(|(key, value)| nested_component(value, plugin).map(|at| format!("/{key}{at}")))
}

/// A plugin's config error as a spec problem at its slot (`/encoder/config`, …, or
/// `/training/kl_schedules`); other errors as they are.
fn locate(spec: &Spec, e: Error) -> Error {
    let Error::Core(vaezoo_core::Error::Config { plugin, .. }) = &e else {
        return e;
    };
    let slots = [
        ("encoder", &spec.encoder),
        ("bottleneck", &spec.bottleneck),
        ("prior", &spec.prior),
        ("decoder", &spec.decoder),
    ];
    let nested = || {
        slots.iter().find_map(|(slot, c)| {
            nested_component(&c.config, plugin).map(|at| format!("/{slot}/config{at}/config"))
        })
    };
    let pointer = match slots.iter().find(|(_, c)| &c.kind == plugin) {
        Some((slot, _)) => format!("/{slot}/config"),
        None if plugin == "training.kl_schedules" => "/training/kl_schedules".into(),
        None => match nested() {
            Some(pointer) => pointer,
            None => return e,
        },
    };
    Error::Core(vaezoo_core::Error::InvalidSpec {
        problems: vec![format!("{pointer}: {e}")],
    })
}
