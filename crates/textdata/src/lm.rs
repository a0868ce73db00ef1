//! Language-model windows over a token stream, and a byte-level tokenizer.

use burn::prelude::*;

use crate::{Error, Result};

/// Byte-level tokenizer: a token is one UTF-8 byte (vocabulary 256). Lossless and needs no
/// vocabulary file, which makes it the embedded default for small from-scratch LMs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Vocabulary size.
    pub const VOCAB: usize = 256;

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    /// Text of token ids (ids above 255 are skipped; invalid UTF-8 is replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter_map(|&i| u8::try_from(i).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Fixed-length next-token windows over one token stream: window `i` starts at `i · stride`,
/// its input is `seq_len` tokens and its target the same tokens shifted by one.
#[derive(Clone, Debug)]
pub struct LmWindows {
    tokens: Vec<u32>,
    seq_len: usize,
    stride: usize,
}

impl LmWindows {
    /// Windows of `seq_len` tokens, `stride` apart (`stride == seq_len` for non-overlapping ones).
    pub fn new(tokens: Vec<u32>, seq_len: usize, stride: usize) -> Result<Self> {
        let needed = seq_len + 1;
        if seq_len == 0 || stride == 0 || tokens.len() < needed {
            return Err(Error::TooShort {
                tokens: tokens.len(),
                needed,
            });
        }
        Ok(Self {
            tokens,
            seq_len,
            stride,
        })
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        (self.tokens.len() - self.seq_len - 1) / self.stride + 1
    }

    /// Whether there are no windows (never true for a constructed value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens per window.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Total tokens in the stream.
    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Input and target tensors `[batch, seq_len]` of the given windows.
    pub fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
        let n = self.len();
        let mut inputs = Vec::with_capacity(indices.len() * self.seq_len);
        let mut targets = Vec::with_capacity(indices.len() * self.seq_len);
        for &i in indices {
            if i >= n {
                return Err(Error::OutOfRange { index: i, count: n });
            }
            let s = i * self.stride;
            inputs.extend(self.tokens[s..s + self.seq_len].iter().map(|&t| t as i64));
            targets.extend(
                self.tokens[s + 1..s + self.seq_len + 1]
                    .iter()
                    .map(|&t| t as i64),
            );
        }
        let shape = [indices.len(), self.seq_len];
        Ok((
            Tensor::from_data(TensorData::new(inputs, shape), device),
            Tensor::from_data(TensorData::new(targets, shape), device),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_unicode() {
        let t = ByteTokenizer;
        let s = "naïve 中文 text";
        assert_eq!(t.decode(&t.encode(s)), s);
    }

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let w = LmWindows::new((0..20).collect(), 4, 4).unwrap();
        assert_eq!(w.len(), 4);
        let d = Device::flex();
        let (x, y) = w.batch(&[1, 3], &d).unwrap();
        let x = x.into_data().try_to_vec_as::<i64>().unwrap();
        let y = y.into_data().try_to_vec_as::<i64>().unwrap();
        assert_eq!(x, vec![4, 5, 6, 7, 12, 13, 14, 15]);
        assert_eq!(y, vec![5, 6, 7, 8, 13, 14, 15, 16]);
    }

    #[test]
    fn short_streams_and_bad_indices_are_typed_errors() {
        assert!(matches!(
            LmWindows::new(vec![1, 2], 4, 4),
            Err(Error::TooShort { .. })
        ));
        let w = LmWindows::new((0..10).collect(), 4, 4).unwrap();
        assert!(matches!(
            w.batch(&[9], &Device::flex()),
            Err(Error::OutOfRange { .. })
        ));
    }
}
