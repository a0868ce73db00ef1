//! Errors of the FormBERT crate.

/// What can go wrong while building or reading WSD data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A data line is malformed.
    #[error("{source_name} line {line}: {reason}")]
    Format {
        /// The file.
        source_name: String,
        /// 1-based line.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A tensor could not be read back to the host.
    #[error("tensor read: {0}")]
    TensorRead(#[from] trainer::host::TensorReadError),
    /// A formation name outside the 18-class inventory.
    #[error("unknown word formation {0:?} (see formation::FORMATIONS)")]
    UnknownFormation(String),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] textdata::Error),
    /// The encoder (plm) failed: a bad config or checkpoint.
    #[error(transparent)]
    Plm(#[from] plm::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing an output file failed.
    #[error(transparent)]
    Write(#[from] trainer::Error),
}

/// A task's error inside the trainer (so `?` works in `trainer::Task` impls).
impl From<Error> for trainer::Error {
    fn from(e: Error) -> Self {
        trainer::Error::task(e)
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
