//! Errors of the MoE crate.

/// What can go wrong while building or running an MoE model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration does not describe a valid layer.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A tensor could not be read back to the host.
    #[error("tensor read: {0}")]
    TensorRead(#[from] trainer::host::TensorReadError),
    /// The training loop or the report failed.
    #[error(transparent)]
    Train(#[from] trainer::Error),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] textdata::Error),
    /// The backbone crate failed.
    #[error(transparent)]
    Plm(#[from] plm::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
