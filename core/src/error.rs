//! The one error type of vaezoo-core.

use std::path::PathBuf;

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside vaezoo-core, with enough context for a one-line report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec did not parse as JSON; `line` and `column` are 1-based.
    #[error("{path}:{line}:{column}: malformed JSON: {message}")]
    MalformedJson {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A spec broke its schema; one entry per problem, each `JSON pointer: message`.
    #[error("{} problem(s) in the spec:\n{}", problems.len(), problems.join("\n"))]
    InvalidSpec { problems: Vec<String> },
    /// A plugin's configuration was rejected by the plugin itself.
    #[error("plugin `{plugin}`: {message}")]
    Config { plugin: String, message: String },
    /// The registry has no plugin of that name for that kind.
    #[error("no {kind} plugin named `{name}` (registered: {known})")]
    UnknownPlugin {
        kind: String,
        name: String,
        known: String,
    },
    /// Two plugins were registered under one name.
    #[error("plugin name `{name}` is registered twice ({first} and {second})")]
    DuplicatePlugin {
        name: String,
        first: String,
        second: String,
    },
    /// A plugin library could not be loaded, or misbehaved in a call.
    #[error("plugin {}: {message}", path.display())]
    Plugin { path: PathBuf, message: String },
    /// A spec pins a plugin (by sha256) that is not loaded, or is loaded from other bytes.
    #[error("the spec pins plugin `{name}`: {message}")]
    PluginPin { name: String, message: String },
    /// A checkpoint could not be read or is damaged.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// Sizes that do not fit together (e.g. a parameter of the wrong size in a checkpoint).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The plugin cannot do what was asked by its nature (e.g. sampling from a model that
    /// has no prior).
    #[error("{0}")]
    Unsupported(String),
    /// A numerical problem, such as a non-finite loss.
    #[error("numerical problem: {0}")]
    Numeric(String),

    #[error("the model is too large: {0}")]
    TooLarge(String),
    /// File-system trouble, with the path involved.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `text` on one line: every run of whitespace, line breaks included, as one space (errors and
/// listings print one line each).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_and_descriptions_print_on_one_line() {
        let assertion = "assertion `left == right` failed\n  left: 3\n right: 4";
        assert_eq!(
            super::one_line(assertion),
            "assertion `left == right` failed left: 3 right: 4"
        );
        assert_eq!(super::one_line("a\r\n\tplugin "), "a plugin");
    }
}
