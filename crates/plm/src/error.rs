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
    /// A sharded checkpoint's index names a file the folder lacks.
    #[error("shard {shard} named by {index} is missing")]
    MissingShard {
        /// The missing file.
        shard: std::path::PathBuf,
        /// The index naming it.
        index: std::path::PathBuf,
    },
    /// A sharded checkpoint's index places a tensor in a shard that does not hold it.
    #[error("the index places {tensor} in {shard}, which does not hold it")]
    TensorNotInShard {
        /// The tensor name.
        tensor: String,
        /// The shard.
        shard: std::path::PathBuf,
    },
    /// A folder holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("{dir} holds neither model.safetensors nor model.safetensors.index.json")]
    NoWeights {
        /// The folder.
        dir: std::path::PathBuf,
    },
    /// A stored tensor's dtype cannot be loaded.
    #[error("tensor {tensor} in {file} is stored as {dtype}, which is not supported")]
    UnsupportedDtype {
        /// The tensor name.
        tensor: String,
        /// Its stored dtype.
        dtype: String,
        /// The file.
        file: std::path::PathBuf,
    },
    /// An input is longer than a learned position table.
    #[error("sequence of {len} positions exceeds the model's {max} learned positions")]
    SequenceTooLong {
        /// Positions asked for (past + new tokens).
        len: usize,
        /// Positions the table holds.
        max: usize,
    },
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
