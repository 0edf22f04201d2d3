//! Plugins loaded at start-up from separately built libraries, through the C ABI of
//! [`vaezoo_core::abi`].
//!
//! Libraries load only from folders the user names: every `--plugin-dir DIR`, then every
//! folder of `VAEZOO_PLUGIN_PATH` (separated like `PATH`). In each folder every file named
//! `lib*.so` (`lib*.dylib` on macOS, `*.dll` on Windows) is hashed (SHA-256), loaded and
//! checked, in name order. A file that fails is fatal at start-up, with one line naming it: a
//! user removes it or fixes it, rather than training with a silently missing plugin.
//! Libraries are never unloaded.

mod bottleneck;
mod instance;
mod library;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vaezoo_core::abi::sdk::partners;
use vaezoo_core::registry::{Build, Origin, PluginEntry, PluginKind};

pub use library::PluginLibrary;

use crate::{Error, Result};

/// The environment variable listing plugin folders.
pub const PLUGIN_PATH_VAR: &str = "VAEZOO_PLUGIN_PATH";

/// The folders plugins load from: `cli_dirs`, then those of [`PLUGIN_PATH_VAR`].
pub fn plugin_dirs(cli_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let from_env = std::env::var_os(PLUGIN_PATH_VAR)
        .map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .unwrap_or_default();
    let from_env = from_env.into_iter().filter(|d| !d.as_os_str().is_empty());
    cli_dirs.iter().cloned().chain(from_env).collect()
}

/// Whether `path` is named like a plugin library on this platform. Whatever it is (a folder,
/// a dangling link), loading it then says what is wrong instead of passing over it.
fn is_library(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    name.starts_with(prefix) && name.ends_with(suffix)
}

/// Loads every plugin library in `dirs`, as registry entries.
pub fn load_dirs(dirs: &[PathBuf]) -> Result<Vec<PluginEntry>> {
    let mut entries = Vec::new();
    for dir in dirs {
        let listing = std::fs::read_dir(dir).map_err(|e| Error::Run {
            path: dir.clone(),
            message: format!("cannot list plugin folder: {e}"),
        })?;
        let mut files: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_library(p))
            .collect();
        files.sort();
        for file in files {
            entries.push(entry(library::load(&file)?));
        }
    }
    Ok(entries)
}

/// The registry entry of a loaded library.
fn entry(library: &'static PluginLibrary) -> PluginEntry {
    PluginEntry {
        kind: PluginKind::Bottleneck,
        name: library.name.clone(),
        version: library.version.clone(),
        description: library.description.clone(),
        origin: Origin::Dynamic {
            path: library.path.clone(),
            sha256: library.sha256.clone(),
        },
        schema: library.schema.clone(),
        example: library.example.clone(),
        partners: partners(library.capabilities)
            .iter()
            .map(|p| p.to_string())
            .collect(),
        build: Build::LoadedBottleneck(Arc::new(move |config, params, model_dim| {
            bottleneck::build(library, config, params, model_dim)
        })),
    }
}
