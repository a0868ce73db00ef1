//! Errors of the backbone crate.

/// What can go wrong while building, loading or running a backbone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration does not describe a valid model.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A tensor had another shape than expected.
    #[error("shape mismatch for {tensor}: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Which tensor.
        tensor: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Actual shape.
        found: Vec<usize>,
    },
    /// A checkpoint lacks a tensor the module needs.
    #[error("tensor {tensor} is missing from {file}")]
    MissingTensor {
        /// Module path of the tensor.
        tensor: String,
        /// The weights file.
        file: std::path::PathBuf,
    },
    /// A weights file is malformed or does not fit the module.
    #[error("weights: {0}")]
    Weights(String),
    /// A `config.json` could not be parsed.
    #[error("config {path}: {reason}")]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The checkpoint uses a feature this crate does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] textdata::Error),
    /// The training loop failed.
    #[error(transparent)]
    Train(#[from] trainer::Error),
    /// A file could not be read or written.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an io error with its path.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
