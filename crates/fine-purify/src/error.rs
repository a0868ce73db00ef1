//! Errors of the fine-purify crate.

/// What can go wrong while comparing, scoring or purifying models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The two models do not have the same parameters.
    #[error("parameter '{path}': {reason}")]
    Mismatch {
        /// Parameter path.
        path: String,
        /// What differs.
        reason: String,
    },
    /// An invalid setting.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A tensor could not be read back to the host.
    #[error("tensor read: {0}")]
    TensorRead(#[from] trainer::host::TensorReadError),
    /// The backbone crate failed.
    #[error(transparent)]
    Plm(#[from] plm::Error),
    /// The training loop or the report failed.
    #[error(transparent)]
    Train(#[from] trainer::Error),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] textdata::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
