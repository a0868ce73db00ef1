//! Financial news for market movement prediction: two FinNLP 2019 papers by Chen et al.
//!
//! - "Incorporating Fine-grained Events in Stock Movement Prediction": a finance event
//!   dictionary and rule-based extractor with BIO role labels ([`events`]), SSPM (news +
//!   event roles + trade data with co-attention and gates) and MSSPM (a CRF role tagger trained
//!   jointly, [`crf`]) in [`model`].
//! - "Group, Extract and Aggregate": grouping a window's news by time, topic or category,
//!   extracting the most central items of each group and aggregating them with trade-queried
//!   attention ([`forex`]).
//!
//! Neither paper released code and both used proprietary data, so the value here is an open,
//! leakage-safe pipeline: trade windows and labels that never read a price after the news
//! ([`trade`], tested by property), chronological splits that purge overlapping labels,
//! accuracy / MCC / a backtest ([`metrics`]), and synthetic markets with known event effects
//! ([`synthetic`]) next to the real Reuters-1987 + WTI, GOOG, EURUSD and S&P 500 data of the
//! `fin-news` experiment (`experiment` (feature `experiment`)).
//!
//! Features: the default is the library alone (what you import into your own Burn model; it
//! pulls no tokenizers, plotters, hashing or compression crates). `experiment` adds the
//! experiment runner that `cargo xtask run` drives, with its data, reports and plots;
//! `examples/` shows the library on its own (`cargo run --release -p fin-news --example …`).

pub mod crf;
mod error;
pub mod events;
#[cfg(feature = "experiment")]
pub mod experiment;
pub mod forex;
pub mod metrics;
pub mod model;
pub mod synthetic;
pub mod text;
pub mod time;
pub mod trade;

pub use error::{Error, Result};
