//! Fine-purifying (Zhang et al., "Diffusion Theory as a Scalpel", Findings of ACL 2023): find
//! the dimensions of a fine-tuned model that a poisoning attack moved — drifts too large for
//! their clean-loss curvature — reset them to the pre-trained values, then fine-tune on a small
//! clean set. No official code exists; this crate is a clean-room implementation of the
//! paper's pipeline; what the paper leaves open is a config option documented where it is used
//! (the Fisher's evaluation point in [`fisher::FisherAt`], the ranking scope in [`Scope`], ρ's
//! selection rule in the experiment).
//!
//! - [`params`]: every parameter of any burn module by path (snapshots, drifts, write-back).
//! - [`fisher`]: the empirical-Fisher diagonal of the clean loss, at the fine-tuned point or
//!   averaged along the path from the pre-trained one.
//! - [`purify`](mod@purify): the indicator δ²/(H+ε), its ablations (δ² only, 1/H only, random =
//!   Fine-mixing), global or per-tensor ranking by selection (no full sort), reset.
//! - [`epur`]: E-PUR embedding purification; [`pruning`]: Fine-pruning for BERT encoders.
//! - [`attack`]: rare-word, trigger-sentence and bias-injection poisoning; ASR.
//! - `experiment` (feature `experiment`): the `fine-purify` experiment.
//!
//! Features: the default is the library alone (what you import into your own Burn model; it
//! pulls no tokenizers, plotters, hashing or compression crates). `experiment` adds the
//! experiment runner that `cargo xtask run` drives, with its data, reports and plots;
//! `examples/` shows the library on its own (`cargo run --release -p fine-purify --example …`).

pub mod attack;
pub mod epur;
mod error;
#[cfg(feature = "experiment")]
pub mod experiment;
pub mod fisher;
pub mod params;
pub mod pruning;
pub mod purify;

pub use error::{Error, Result};
pub use params::{Entry, Snapshot};
pub use purify::{PurifyConfig, PurifyStats, Scope, Score, purify};
