//! CascadeBERT (Li et al., Findings of EMNLP 2021): cascades of complete BERT classifiers of
//! increasing depth with calibrated exits, trained with a difficulty-aware margin, and run
//! with real dynamic inference (exited examples leave the batch before the next member).
//!
//! - [`member`]: one complete classifier (any `plm` BERT, optionally truncated) with its head.
//! - [`cascade`]: the cascade, its batch-compacting inference, and the layer-count speed-up.
//! - [`dar`]: difficulty labels from the small model over several seeds, and the DAR loss.
//! - [`calibration`]: ECE and reliability diagrams.
//! - [`early_exit`]: DeeBERT (entropy) and PABEE (patience) exits inside one model.
//! - `experiment` (feature `experiment`): the `cascade` experiment.
//!
//! Choices (each a config option): the member head pools by mean over real tokens for the
//! sentence-transformers MiniLM checkpoints (`Pooling::Cls` is the paper's pooler head);
//! difficulty is "right under a strict majority of seeds"; DAR applies to every member but
//! the last, as the authors answered in their issue #1.
//!
//! Features: the default is the library alone (what you import into your own Burn model; it
//! pulls no tokenizers, plotters, hashing or compression crates). `experiment` adds the
//! experiment runner that `cargo xtask run` drives, with its data, reports and plots;
//! `examples/` shows the library on its own (`cargo run --release -p cascade --example …`).

pub mod calibration;
pub mod cascade;
pub mod dar;
pub mod early_exit;
mod error;
#[cfg(feature = "experiment")]
pub mod experiment;
pub mod member;

pub use cascade::{Cascade, ExitOutput};
pub use error::{Error, Result};
pub use member::{Member, Pooling};
