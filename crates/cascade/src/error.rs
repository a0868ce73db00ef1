//! Errors of the cascade crate.

/// What can go wrong while building, training or running a cascade.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid setting (names what is wrong).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Inputs of the wrong shape or size.
    #[error("bad input: {0}")]
    BadInput(String),
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
