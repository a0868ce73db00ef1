//! Text data shared by the paper crates: corpus readers, tokenizers and batching.
//!
//! Everything here is deterministic (files are read in sorted order, splits are positional) so
//! experiments give the same numbers on every machine. Real corpora are read from a path the user
//! passes (for example the BBC News articles that `cargo xtask assets` unpacks); nothing is
//! downloaded at run time.
//!
//! Features (both off by default, so a library user compiles neither): `tokenizers` adds
//! [`TextTokenizer`] (HF `tokenizer.json`, GPT-2 byte-level BPE; the `tokenizers` crate with the onig
//! C library), `gzip` lets [`readers::read_text`] read `*.gz` files (flate2).
//!
//! ```no_run
//! use textdata::{read_text_dir, ByteTokenizer, LmWindows};
//! # fn main() -> textdata::Result<()> {
//! let docs = read_text_dir(std::path::Path::new("target/assets/bbc"), "txt")?;
//! let tokens: Vec<u32> = docs.iter().flat_map(|d| ByteTokenizer.encode(&d.text)).collect();
//! let windows = LmWindows::new(tokens, 128, 128)?;
//! # Ok(()) }
//! ```

pub mod assets;
pub mod batch;
pub mod classify;
mod corpus;
mod error;
mod lm;
pub mod readers;
pub mod synthetic;
#[cfg(feature = "tokenizers")]
mod tokenize;
mod tokenizer;

pub use corpus::{Document, read_text_dir, split_every_kth};
pub use error::{Error, Result};
pub use lm::{ByteCorpus, ByteTokenizer, EMBEDDED_TEXT, LmWindows};
#[cfg(feature = "tokenizers")]
pub use tokenize::{EncodedBatch, TextTokenizer};
pub use tokenizer::Tokenizer;
