//! Errors of the process-supervision crate.

/// What can go wrong in data handling, annotation, reward modelling or PPO.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A data line or record is malformed.
    #[error("{source_name} line {line}: {reason}")]
    Format {
        /// The file or source.
        source_name: String,
        /// 1-based line (0 when not line-based).
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// The step tag was not found where the text says it is.
    #[error(
        "step tag {tag:?}: the text holds {expected} tags but {found} were found in its tokens \
         (tried token forms {tried:?}); the tokenizer merges the tag with its neighbours — \
         encode the steps piecewise with `tags::encode_tagged`"
    )]
    TagNotFound {
        /// The tag string.
        tag: String,
        /// Tags in the text.
        expected: usize,
        /// Tags found among the token ids.
        found: usize,
        /// The token-id sequences searched for.
        tried: Vec<Vec<u32>>,
    },
    /// The tag encodes to no tokens at all.
    #[error("step tag {0:?} encodes to no tokens")]
    EmptyTag(String),
    /// Truncation would drop a labelled step tag.
    #[error(
        "step {step}'s tag sits at token {position}, past max_len {max_len}: its label would be \
         lost to truncation (raise max_len or set Truncation::DropSteps)"
    )]
    TagTruncated {
        /// 0-based step index.
        step: usize,
        /// The tag's token position.
        position: usize,
        /// The length limit.
        max_len: usize,
    },
    /// Steps and labels disagree in number.
    #[error("{steps} steps but {labels} labels")]
    LabelCount {
        /// Steps.
        steps: usize,
        /// Labels.
        labels: usize,
    },
    /// A tensor could not be read back.
    #[error("tensor read: {0}")]
    TensorRead(#[from] trainer::host::TensorReadError),
    /// The tokenizer failed.
    #[error(transparent)]
    Data(#[from] textdata::Error),
    /// A backbone failed.
    #[error(transparent)]
    Plm(#[from] plm::Error),
    /// The training loop failed.
    #[error(transparent)]
    Train(#[from] trainer::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for trainer::Error {
    fn from(e: Error) -> Self {
        trainer::Error::task(e)
    }
}
