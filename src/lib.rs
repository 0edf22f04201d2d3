//! vaezoo: variational information bottlenecks composed from JSON specs.
//!
//! This crate is the application (the `vaezoo` CLI's library half) and the facade that links
//! every built-in plugin: [`registry`] is the frozen plugin registry of this binary.
//!
//! - [`model`]: a spec's plugins built into one model, and its losses;
//! - [`data`]: IDX images, seeded shuffling and batching;
//! - [`run`]: the run folder (spec, checkpoints, metrics, env, plots);
//! - [`train`], [`evaluate`], [`sample`], [`explore`] (interpolation, traversal), [`zoo`]
//!   (reproductions): what the CLI commands do;
//! - [`conformance`]: the conformance kit, one harness run over every registered plugin;
//! - [`plots`]: PNG loss curves and image grids.

pub mod conformance;
pub mod data;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod explore;
pub mod model;
pub mod plots;
pub mod run;
pub mod sample;
pub mod session;
pub mod spec_file;
pub mod train;
pub mod zoo;

use std::sync::OnceLock;

pub use error::{Error, Result};
pub use vaezoo_core as core;

/// The names of every built-in plugin, by the crate that registers it. Calling into each plugin
/// crate here is what keeps it (and its `inventory` registrations) in the binary.
pub fn builtin_plugin_names() -> Vec<&'static str> {
    [
        vaezoo_gaussian::link(),
        vaezoo_mlp::link(),
        vaezoo_nvib::link(),
    ]
    .concat()
}

/// The registry of this binary: built-in plugins, collected once and frozen.
pub fn registry() -> Result<&'static vaezoo_core::registry::Registry> {
    static REGISTRY: OnceLock<vaezoo_core::registry::Registry> = OnceLock::new();
    if let Some(r) = REGISTRY.get() {
        return Ok(r);
    }
    builtin_plugin_names();
    let built = vaezoo_core::registry::Registry::builtin()?;
    Ok(REGISTRY.get_or_init(|| built))
}
