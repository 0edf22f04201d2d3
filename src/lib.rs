//! vaezoo: variational information bottlenecks composed from JSON specs.
//!
//! This crate is the application (the `vaezoo` CLI's library half) and the facade that links
//! every built-in plugin: [`registry`] is the frozen plugin registry of this binary.
//!
//! - [`model`]: a spec's plugins built into one model, and its losses;
//! - [`data`]: IDX images, seeded shuffling and batching;
//! - [`text`]: sentence corpora, the WordPiece tokenizer, length-bucketed batches and
//!   SacreBLEU-compatible BLEU, the data side of the text VAE;
//! - [`run`]: the run folder (spec, checkpoints, metrics, env, plots);
//! - [`train`], [`evaluate`], [`sample`], [`explore`] (interpolation, traversal), [`zoo`]
//!   (reproductions): what the CLI commands do;
//! - [`conformance`]: the conformance kit, one harness run over every registered plugin;
//! - [`dynamic`]: plugins loaded at start-up from separately built libraries (the C ABI);
//! - [`plots`]: PNG loss curves and image grids; [`progress`]: progress bars.

pub mod append;
pub mod conformance;
pub mod data;
pub mod device;
pub mod dynamic;
pub mod error;
pub mod evaluate;
pub mod explore;
pub mod export;
pub mod interrupt;
pub mod memory;
pub mod model;
pub mod plot_runs;
pub mod plots;
pub mod preflight;
pub mod progress;
pub mod run;
pub mod sample;
pub mod session;
pub mod spec_file;
pub mod sweep;
pub mod tensorboard;
pub mod text;
pub mod train;
pub mod zoo;

use std::path::PathBuf;
use std::sync::OnceLock;

use vaezoo_core::registry::Registry;

pub use error::{Error, Result};
pub use vaezoo_core as core;

/// The names of every built-in plugin, by the crate that registers it. Calling into each plugin
/// crate here is what keeps it (and its `inventory` registrations) in the binary.
pub fn builtin_plugin_names() -> Vec<&'static str> {
    [
        vaezoo_gaussian::link(),
        vaezoo_mlp::link(),
        vaezoo_nvib::link(),
        vaezoo_transformer::link(),
    ]
    .concat()
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Builds the process's registry once: the built-in plugins and every plugin library in
/// `plugin_dirs` and in `VAEZOO_PLUGIN_PATH` ([`dynamic`]). The CLI calls it first, with its
/// `--plugin-dir` folders; once built, the registry is frozen and later calls return it as
/// it is. A plugin name that is both built in and loaded (or loaded twice) is an error.
pub fn init_registry(plugin_dirs: &[PathBuf]) -> Result<&'static Registry> {
    if let Some(r) = REGISTRY.get() {
        return Ok(r);
    }
    builtin_plugin_names();
    let mut entries = Registry::builtin_entries();
    entries.extend(dynamic::load_dirs(&dynamic::plugin_dirs(plugin_dirs))?);
    let built = Registry::from_entries(entries)?;
    Ok(REGISTRY.get_or_init(|| built))
}

/// The registry of this binary: built-in plugins and those of `VAEZOO_PLUGIN_PATH` (or, after
/// [`init_registry`], of its folders too), collected once and frozen.
pub fn registry() -> Result<&'static Registry> {
    init_registry(&[])
}
