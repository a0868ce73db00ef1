//! Expert-Specialized Fine-Tuning (Wang et al., EMNLP 2024) for the DeepSeekMoE models of
//! `moe-arch`.
//!
//! - [`scores`]: relevance of each routed expert to a task (ESFT-Gate, ESFT-Token), computed
//!   from the routing of ordinary forward passes, normalised per sequence and per layer.
//! - [`select`]: experts by descending score until the cumulative score reaches p; the
//!   official expert-config JSON, read and written; random and shared-only controls.
//! - Training only the selected experts goes through `trainer`'s freezing
//!   (`Trainer::with_trainable(|p| cfg.is_trainable(p))`): every routed expert is its own
//!   parameter set in `moe-arch`, so frozen experts are bit-identical after training (no
//!   slices of a stacked tensor to mask); routing and the balance loss keep working.
//! - [`adapter`]: trained tensors only, under HF names, plus `expert_cfg.json`; apply,
//!   undo, merge.
//! - [`lora`]: the LoRA baseline on the same models; full fine-tuning is the trainer without
//!   a predicate.
//! - `experiment` (feature `experiment`): the `esft` experiment.
//!
//! Choices where the paper leaves room (each a config option):
//! - Gate scores are used raw with p = 0.1, as the official script does
//!   ([`SelectionConfig::normalise_gate`] divides by the layer's mass instead).
//! - A "sequence" for the per-sequence normalisation is one row of the scoring batch.
//!
//! Features: the default is the library alone (what you import into your own Burn model; it
//! pulls no tokenizers, plotters, hashing or compression crates). `experiment` adds the
//! experiment runner that `cargo xtask run` drives, with its data, reports and plots;
//! `examples/` shows the library on its own (`cargo run --release -p esft --example …`).

pub mod adapter;
mod error;
#[cfg(feature = "experiment")]
pub mod experiment;
pub mod lora;
pub mod model;
pub mod scores;
pub mod select;
pub mod tasks;

pub use adapter::{Adapter, AdapterStats, save_adapter};
pub use error::{Error, Result};
pub use lora::{Lora, LoraConfig};
pub use model::{MoeLayerInfo, MoeModel};
pub use scores::{RelevanceScores, ScoreAccumulator, ScoreFunction};
pub use select::{ExpertConfig, SelectionConfig};
