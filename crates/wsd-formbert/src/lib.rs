//! FormBERT (Zheng et al., Findings EMNLP 2021): word-formation knowledge for Chinese word sense
//! disambiguation.
//!
//! The paper's dataset (FiCLS) was never released and no Chinese BERT is on the registries, so
//! the crate builds both from real Chinese resources:
//!
//! - [`formation`]: the 18 word-formation classes of the official code (Chinese names, English
//!   glosses, official order) and documented rules that derive a two-character word's formation
//!   from the parts of speech of its characters in jieba's dictionary;
//! - [`data`]: the official TSV pair format (context, definition, label, formation) both ways,
//!   and a lexical-sample WSD set of pseudo-words built from HIT Cilin senses and Chinese text,
//!   with its coverage statistics;
//! - [`chartok`] and [`mlm`]: a character vocabulary and masked-LM pretraining of a small
//!   character BERT (plm's encoder) on fortunes-zh and the Tang/Song poems, and a probe asking
//!   the masked LM itself which real word fills a pseudo-word's place;
//! - [`model`]: the gloss-matching classifier (Gloss-BERT) and FormBERT: formation embedding on
//!   the pooled output, formation predictor over the embedding layer (masked mean by default,
//!   the official all-positions mean as an option), joint loss with weight 0.5, formation
//!   parameters named so `trainer::Trainer::with_lr_scale` gives them their own rate;
//! - [`synthetic`]: the offline corpus of the experiment's embedded default;
//! - `experiment` (feature `experiment`): `wsd-formbert`, Gloss-BERT against FormBERT with gold and predicted
//!   formations over seeds.
//!
//! Features: the default is the library alone (what you import into your own Burn model; it
//! pulls no tokenizers, plotters, hashing or compression crates). `experiment` adds the
//! experiment runner that `cargo xtask run` drives, with its data, reports and plots;
//! `examples/` shows the library on its own (`cargo run --release -p wsd-formbert --example …`).

pub mod chartok;
pub mod data;
mod error;
#[cfg(feature = "experiment")]
pub mod experiment;
pub mod formation;
pub mod mlm;
pub mod model;
pub mod synthetic;

pub use error::{Error, Result};
