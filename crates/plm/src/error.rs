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
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] textdata::Error),
    /// The training loop failed.
    #[error(transparent)]
    Train(#[from] trainer::Error),
    /// A file could not be read or written.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
