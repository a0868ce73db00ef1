//! FormBERT (Zheng et al., Findings EMNLP 2021): word-formation knowledge for Chinese word sense
//! disambiguation.
//!
//! This crate holds, so far, the data side the paper never released:
//!
//! - [`formation`]: the 18 word-formation classes of the official code (Chinese names, English
//!   glosses, official order) and documented rules that derive a two-character word's formation
//!   from the parts of speech of its characters in jieba's dictionary;
//! - [`data`]: the official TSV pair format (context, definition, label, formation) both ways,
//!   and a lexical-sample WSD set of pseudo-words built from HIT Cilin senses and Chinese text,
//!   with its coverage statistics.
//!
//! The encoder (a character-level BERT pretrained with masked-LM on fortunes-zh), the
//! gloss-matching classifier with formation embedding and predictor, and the `wsd-formbert`
//! experiment are the rest of issue 10.

pub mod chartok;
pub mod data;
mod error;
pub mod experiment;
pub mod formation;
pub mod mlm;
pub mod model;
pub mod synthetic;

pub use error::{Error, Result};
