//! Label Words are Anchors (Wang et al., EMNLP 2023) for every decoder of `plm`: in-context
//! demonstrations in the paper's templates, saliency flows (S_wp, S_pq, S_ww), isolation of
//! label words with loyalty metrics, the deep-layer AUC, anchor re-weighting, and anchor-only
//! context compression — through `plm`'s attention hooks (pre-softmax bias, post-softmax
//! scale, dL/dA probes) instead of monkey-patching one model's attention.
//!
//! Choices: label words count by their first token (`LabelTokens::All` uses every token);
//! compression keeps the query's positions after the full demonstration part.
//! Optional contextual calibration ([`calibrate`], Zhao et al. 2021; not in the paper) reads the
//! label-word probabilities relative to a content-free query's, for small models that answer
//! one label for every input.
//!
//! Features: the default is the library alone (what you import into your own Burn model; it
//! pulls no tokenizers, plotters, hashing or compression crates). `experiment` adds the
//! experiment runner that `cargo xtask run` drives, with its data, reports and plots;
//! `examples/` shows the library on its own (`cargo run --release -p icl-anchors --example …`).

pub mod analysis;
pub mod calibrate;
pub mod compress;
pub mod diagnose;
mod error;
#[cfg(feature = "experiment")]
pub mod experiment;
pub mod model;
pub mod prompt;
pub mod reweight;

pub use calibrate::Calibration;
pub use error::{Error, Result};
pub use model::CausalLm;
pub use prompt::{LabelTokens, Prompt, Template};
