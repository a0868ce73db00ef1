//! Errors of the training loop.

use std::path::PathBuf;

/// Everything that can go wrong while training, checkpointing or reporting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The loss became NaN or infinite; the last good checkpoint is left untouched.
    #[error("non-finite loss {value} at step {step}")]
    NonFiniteLoss {
        /// The optimizer step (0-based) whose loss was not finite.
        step: usize,
        /// The offending value.
        value: f32,
    },
    /// A checkpoint exists but cannot be trusted.
    #[error("corrupt checkpoint {path}: {reason}")]
    CorruptCheckpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// `resume` was asked for but the run folder holds no checkpoint.
    #[error("no checkpoint to resume from in {0}")]
    NoCheckpoint(PathBuf),
    /// Saving or loading a module or optimizer record failed.
    #[error("record: {0}")]
    Record(String),
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A tensor could not be read back to the host.
    #[error("tensor read: {0}")]
    TensorRead(#[from] crate::host::TensorReadError),
    /// Drawing a plot failed.
    #[error("plot: {0}")]
    Plot(String),
    /// A device name that [`crate::device::from_name`] does not know.
    #[error("unknown device '{name}' (expected one of: {expected})")]
    UnknownDevice {
        /// The name asked for.
        name: String,
        /// The names accepted.
        expected: &'static str,
    },
    /// The backend of a device name was not compiled into this binary.
    #[error(
        "device '{name}' needs the `{feature}` feature (burn's backend of that name), which this \
         binary was built without: rebuild with `--features {feature}`"
    )]
    BackendNotCompiled {
        /// The name asked for.
        name: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// The task (the caller's model and data) failed.
    #[error("task: {0}")]
    Task(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps an io error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps any error raised by a [`crate::Task`].
    pub fn task(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Task(Box::new(err))
    }
}

impl From<burn::store::RecordError> for Error {
    fn from(e: burn::store::RecordError) -> Self {
        Self::Record(e.to_string())
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
