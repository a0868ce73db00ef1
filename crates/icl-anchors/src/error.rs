//! Errors of the icl-anchors crate.

/// What can go wrong while building prompts or analysing a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A label word or template piece tokenizes to nothing.
    #[error("'{0}' tokenizes to no token")]
    EmptyTokens(String),
    /// A prompt does not fit the model or the analysis.
    #[error("bad prompt: {0}")]
    BadPrompt(String),
    /// An invalid setting.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A tensor could not be read back to the host.
    #[error("tensor read: {0}")]
    TensorRead(#[from] trainer::host::TensorReadError),
    /// The backbone crate failed.
    #[error(transparent)]
    Plm(#[from] plm::Error),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] textdata::Error),
    /// The training loop failed.
    #[error(transparent)]
    Train(#[from] trainer::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
