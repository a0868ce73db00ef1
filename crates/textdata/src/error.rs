//! Errors of the data layer.

use std::path::PathBuf;

/// What can go wrong while reading or batching text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A corpus folder held no usable document.
    #[error("no documents with extension .{ext} under {dir}")]
    EmptyCorpus {
        /// The folder searched.
        dir: PathBuf,
        /// The extension looked for.
        ext: String,
    },
    /// The token stream is shorter than one training window.
    #[error("corpus has {tokens} tokens, fewer than one window of {needed}")]
    TooShort {
        /// Tokens available.
        tokens: usize,
        /// Tokens one window needs (`seq_len + 1`).
        needed: usize,
    },
    /// A registry asset has not been fetched.
    #[error("asset '{name}' is missing at {path}: run `cargo xtask assets` to fetch it")]
    MissingAsset {
        /// The asset name (see `textdata::assets::ASSETS`).
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A tokenizer file could not be loaded.
    #[error("tokenizer {source_file}: {reason}")]
    Tokenizer {
        /// The file.
        source_file: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Encode(String),
    /// A corpus folder does not exist.
    #[error(
        "corpus folder {0} does not exist (run `cargo xtask assets` to fetch the BBC News corpus)"
    )]
    CorpusNotFound(PathBuf),
    /// A data file is malformed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the problem is not tied to a line).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A window index past the end was asked for.
    #[error("window {index} is out of range (the corpus has {count} windows)")]
    OutOfRange {
        /// The index asked for.
        index: usize,
        /// How many windows exist.
        count: usize,
    },
}

impl Error {
    /// Wraps an io error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
