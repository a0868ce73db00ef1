//! The tokenizer interface every tokenizer of the workspace implements.

use crate::Result;

/// What consumers need from any tokenizer: plain-text encoding (no special tokens added),
/// decoding (special tokens skipped) and the vocabulary size. Implemented for both tokenizers
/// here; a crate with its own tokenizer (prm's word-level one) implements it too, so code written
/// against it works with all of them.
pub trait Tokenizer {
    /// Token ids of `text` (no special tokens added).
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Text of `ids` (special tokens skipped).
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Vocabulary size.
    fn vocab_size(&self) -> usize;
}

impl Tokenizer for crate::ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(crate::ByteTokenizer::encode(self, text))
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(crate::ByteTokenizer::decode(self, ids))
    }
    fn vocab_size(&self) -> usize {
        crate::ByteTokenizer::VOCAB
    }
}

#[cfg(feature = "tokenizers")]
impl Tokenizer for crate::TextTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        crate::TextTokenizer::encode(self, text, false)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        crate::TextTokenizer::decode(self, ids, true)
    }
    fn vocab_size(&self) -> usize {
        crate::TextTokenizer::vocab_size(self)
    }
}
