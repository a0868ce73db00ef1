//! Errors of the fin-news crate.

/// What can go wrong in the fin-news pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A time stamp could not be parsed.
    #[error(
        "bad time stamp {0:?} (expected YYYY-MM-DD[ HH:MM[:SS]], M/D/YYYY or DD-MON-YYYY HH:MM:SS)"
    )]
    BadTime(String),
    /// A price series is not in time order or is otherwise unusable.
    #[error("price series: {0}")]
    Series(String),
    /// The event dictionary is malformed.
    #[error("event dictionary: {0}")]
    Dictionary(String),
    /// Not enough examples to train or evaluate.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// A tensor could not be read back to the host.
    #[error("tensor read: {0}")]
    TensorRead(#[from] trainer::host::TensorReadError),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] textdata::Error),
    /// The encoder could not be built.
    #[error(transparent)]
    Plm(#[from] plm::Error),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Training or writing an output file failed.
    #[error(transparent)]
    Trainer(#[from] trainer::Error),
}

/// A task's error inside the trainer (so `?` works in `trainer::Task` impls).
impl From<Error> for trainer::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Trainer(t) => t,
            other => trainer::Error::task(other),
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
