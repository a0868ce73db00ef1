//! Errors of the ESFT crate.

use std::path::PathBuf;

/// What can go wrong while scoring, selecting, training or applying experts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An expert config names a layer that is not an MoE layer of the model.
    #[error(
        "expert config names layer {layer}, which is not an MoE layer of the model (MoE layers: {moe_layers:?})"
    )]
    UnknownLayer {
        /// The layer named.
        layer: usize,
        /// The model's MoE layers.
        moe_layers: Vec<usize>,
    },
    /// An expert config names an expert id beyond the layer's routed experts.
    #[error(
        "expert config names expert {expert} of layer {layer}, which has {n_experts} routed experts"
    )]
    UnknownExpert {
        /// Layer.
        layer: usize,
        /// Expert named.
        expert: usize,
        /// Routed experts in that layer.
        n_experts: usize,
    },
    /// An expert is listed twice for one layer.
    #[error("expert config lists expert {expert} of layer {layer} twice")]
    DuplicateExpert {
        /// Layer.
        layer: usize,
        /// Expert.
        expert: usize,
    },
    /// An adapter tensor does not exist in the base model.
    #[error("adapter {file}: tensor '{tensor}' does not exist in the base model")]
    UnknownTensor {
        /// Tensor name.
        tensor: String,
        /// Adapter file.
        file: PathBuf,
    },
    /// An adapter tensor has another shape than the base model's.
    #[error("adapter {file}: {detail}")]
    ShapeMismatch {
        /// What burn-store reported (names the tensor and both shapes).
        detail: String,
        /// Adapter file.
        file: PathBuf,
    },
    /// An adapter tensor is not covered by its `expert_cfg.json`.
    #[error("adapter {file}: tensor '{tensor}' is not trainable under its expert_cfg.json")]
    NotInExpertConfig {
        /// Tensor name.
        tensor: String,
        /// Adapter file.
        file: PathBuf,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: {reason}")]
    Json {
        /// File.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// An I/O error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// An invalid setting.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A tensor could not be read back to the host.
    #[error("tensor read: {0}")]
    TensorRead(#[from] trainer::host::TensorReadError),
    /// The MoE crate failed.
    #[error(transparent)]
    Moe(#[from] moe_arch::Error),
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

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
