//! Math-Shepherd (Wang et al., ACL 2024): process supervision without human labels.
//!
//! - [`format`](mod@format): Math-Shepherd rows (`ки` step tags, `+`/`-` labels), TRL's stepwise rows and
//!   GSM8K JSONL, read and written.
//! - [`answer`]: final-answer extraction and numeric comparison robust to commas, units,
//!   trailing periods and `The answer is:` variants.
//! - [`tags`]: a tokenizer interface and tokenizer-aware step-tag positions, with typed errors
//!   when a tag cannot be found or would be lost to truncation.
//! - [`sample`]: seeded batched sampling (temperature, top-p) with the KV cache of any plm
//!   Llama-style LM, and the [`sample::Policy`] interface (an LM, or a scripted policy).
//! - [`annotate`]: hard (any completion correct) and soft (fraction correct) step labels.
//! - [`model`]: the reward model — a causal LM read at the tags through the two label tokens
//!   (as the released PRM) or a 2-class head — trained with cross-entropy at the tags; the ORM is
//!   the same model with one tag after the whole solution.
//! - [`verify`]: best-of-N with min / product / last-step aggregation, self-consistency and
//!   reward-weighted self-consistency.
//! - [`ppo`]: step-level PPO with PRM rewards at the end of each step, a KL penalty to the
//!   reference policy and GAE, and ORM-PPO as the baseline; every choice the paper leaves open
//!   is documented there and exposed in [`ppo::PpoConfig`].
//! - [`wordtok`]: a word-level tokenizer with byte fallback for models trained from scratch.
//! - [`synthetic`]: multi-step arithmetic word problems whose step correctness is known.
//! - `experiment` (feature `experiment`): the `math-shepherd` experiment (`cargo xtask run math-shepherd`).
//!
//! ```
//! use prm::verify::{Aggregate, Candidate, aggregate, best_of_n, weighted_vote};
//! let cands = vec![
//!     Candidate { answer: Some("12".into()), score: aggregate(&[0.9, 0.2], Aggregate::Min) },
//!     Candidate { answer: Some("14".into()), score: aggregate(&[0.8, 0.7], Aggregate::Min) },
//! ];
//! assert_eq!(best_of_n(&cands), Some(1));
//! assert_eq!(weighted_vote(&cands).as_deref(), Some("14"));
//! ```
//!
//! Features: the default is the library alone (what you import into your own Burn model; it
//! pulls no tokenizers, plotters, hashing or compression crates). `experiment` adds the
//! experiment runner that `cargo xtask run` drives, with its data, reports and plots;
//! `examples/` shows the library on its own (`cargo run --release -p prm --example …`).

pub mod annotate;
pub mod answer;
mod error;
#[cfg(feature = "experiment")]
pub mod experiment;
pub mod format;
pub mod model;
pub mod ppo;
pub mod sample;
pub mod synthetic;
pub mod tags;
pub mod verify;
pub mod wordtok;

pub use error::{Error, Result};
