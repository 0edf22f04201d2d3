//! The one error type of the `vaezoo` application, printed by the CLI as one line plus a hint.

use std::path::PathBuf;

/// Result with the application [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the application.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From vaezoo-core (specs, plugins, checkpoints, numerics).
    #[error(transparent)]
    Core(#[from] vaezoo_core::Error),
    /// A dataset file is missing or malformed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The text tokenizer failed (training, encoding or decoding; a bad `tokenizer.json`
    /// file is a [`Error::Data`] naming it).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A plot could not be written.
    #[error(transparent)]
    Plot(#[from] crate::plots::PlotError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A run folder that is not what the command expects.
    #[error("{}: {message}", path.display())]
    Run { path: PathBuf, message: String },
    /// A bad command-line request.
    #[error("{0}")]
    Usage(String),
    /// A command-line value out of the range the run allows, with what to do about it.
    #[error("{message}")]
    OutOfRange {
        /// What is wrong, with the allowed range.
        message: String,
        /// The next step.
        hint: &'static str,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A suggestion for the user, when there is an obvious next step.
    pub fn hint(&self) -> Option<&'static str> {
        use vaezoo_core::Error as C;
        match self {
            Error::Core(C::MalformedJson { .. } | C::InvalidSpec { .. }) => {
                Some("`vaezoo validate SPEC` lists every problem; `vaezoo schema` writes the schemas")
            }
            Error::Core(C::UnknownPlugin { .. }) => Some("`vaezoo plugins` lists what is registered"),
            Error::Core(C::Plugin { .. }) => Some(
                "the plugin library is at fault: remove it from the plugin folder, or fix and rebuild it against this vaezoo-core (docs/plugin-abi.md)",
            ),
            Error::Core(C::PluginPin { .. }) => Some(
                "`vaezoo --plugin-dir DIR plugins` shows each loaded library's sha256; update the pin only if you trust the new file",
            ),
            Error::Core(C::Checkpoint { .. }) => {
                Some("the checkpoint is damaged or not a vaezoo checkpoint; the run folder was left as it was")
            }
            Error::Data(_) => Some("check the spec's `data` section and the files it points to"),
            Error::OutOfRange { hint, .. } => Some(hint),
            _ => None,
        }
    }
}
