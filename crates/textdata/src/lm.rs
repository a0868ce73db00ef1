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

/// A small English text written for this project (paragraphs are the documents): the offline
/// fallback corpus of the byte-level LM experiments.
pub const EMBEDDED_TEXT: &str = include_str!("../data/embedded_corpus.txt");

/// A byte-level LM corpus: the training and validation token streams of a document split.
#[derive(Clone, Debug)]
pub struct ByteCorpus {
    /// Where the text came from (`embedded` or the folder).
    pub name: String,
    /// Documents in the training split.
    pub train_docs: usize,
    /// Documents held out.
    pub valid_docs: usize,
    /// Training bytes (documents joined by newlines, cut at `max_train_bytes` when > 0).
    pub train: Vec<u32>,
    /// Validation bytes.
    pub valid: Vec<u32>,
}

impl ByteCorpus {
    /// The `.txt` documents under `dir` (or [`EMBEDDED_TEXT`] when `None`), every k-th one held
    /// out for validation (see [`crate::split_every_kth`]).
    pub fn load(
        dir: Option<&std::path::Path>,
        valid_fraction: f64,
        max_train_bytes: usize,
    ) -> Result<Self> {
        let (docs, name) = match dir {
            Some(d) => {
                if !d.is_dir() {
                    return Err(Error::CorpusNotFound(d.to_path_buf()));
                }
                (crate::read_text_dir(d, "txt")?, d.display().to_string())
            }
            None => (
                EMBEDDED_TEXT
                    .split("\n\n")
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| crate::Document {
                        path: "embedded".into(),
                        text: p.to_string(),
                    })
                    .collect(),
                "embedded".to_string(),
            ),
        };
        let (train, valid) = crate::split_every_kth(&docs, valid_fraction);
        if valid.is_empty() {
            return Err(Error::EmptyCorpus {
                dir: name.clone().into(),
                ext: "txt (too few documents for a validation split)".into(),
            });
        }
        let bytes = |docs: &[crate::Document], limit: usize| {
            let mut out = Vec::new();
            for d in docs {
                out.extend(ByteTokenizer.encode(&d.text));
                out.push(u32::from(b'\n'));
                if limit > 0 && out.len() >= limit {
                    out.truncate(limit);
                    break;
                }
            }
            out
        };
        Ok(Self {
            name,
            train_docs: train.len(),
            valid_docs: valid.len(),
            train: bytes(&train, max_train_bytes),
            valid: bytes(&valid, 0),
        })
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
    fn the_embedded_corpus_splits_and_a_missing_folder_is_named() {
        let c = ByteCorpus::load(None, 0.1, 0).unwrap();
        assert_eq!(c.name, "embedded");
        assert!(c.valid_docs >= 1 && c.train_docs > c.valid_docs);
        assert!(!c.train.is_empty() && !c.valid.is_empty());
        let capped = ByteCorpus::load(None, 0.1, 100).unwrap();
        assert_eq!(capped.train.len(), 100);
        let err =
            ByteCorpus::load(Some(std::path::Path::new("/nonexistent/bbc")), 0.1, 0).unwrap_err();
        assert!(matches!(err, Error::CorpusNotFound(_)), "{err}");
    }

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
