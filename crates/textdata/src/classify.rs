//! Sentence classification data: a tokenizer for BERT-style inputs (a real WordPiece
//! tokenizer, or a word-level vocabulary for offline runs), tokenised labelled splits, and
//! padded batches with labels.

use std::collections::HashMap;

use burn::prelude::*;

use crate::Result;

/// A word-level vocabulary with BERT's special ids: `[PAD]` 0, `[CLS]` 1, `[SEP]` 2, `[UNK]` 3
/// (for offline runs on generated text, where no pretrained tokenizer exists).
#[derive(Clone, Debug, Default)]
pub struct WordVocab(HashMap<String, u32>);

impl WordVocab {
    /// Every lower-cased whitespace word of `texts`, in order of first appearance.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut m = HashMap::new();
        for t in texts {
            for w in t.split_whitespace() {
                let n = m.len() as u32 + 4;
                m.entry(w.to_lowercase()).or_insert(n);
            }
        }
        Self(m)
    }

    /// `[CLS] words… [SEP]`.
    pub fn encode(&self, t: &str) -> Vec<u32> {
        std::iter::once(1)
            .chain(
                t.split_whitespace()
                    .map(|w| self.0.get(&w.to_lowercase()).copied().unwrap_or(3)),
            )
            .chain(std::iter::once(2))
            .collect()
    }

    /// Vocabulary size including the specials.
    pub fn size(&self) -> usize {
        self.0.len() + 4
    }

    /// The id of a word, if known.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.0.get(&word.to_lowercase()).copied()
    }
}

/// A tokenizer for sentence classifiers (the `Real` variant is the `tokenizers` feature).
#[derive(Clone)]
pub enum SentenceTokenizer {
    /// A real tokenizer (`tokenizer.json`), with its special tokens.
    #[cfg(feature = "tokenizers")]
    Real(Box<crate::TextTokenizer>),
    /// A word-level vocabulary.
    Words(WordVocab),
}

impl std::fmt::Debug for SentenceTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "tokenizers")]
            Self::Real(tk) => write!(f, "SentenceTokenizer::Real({} ids)", tk.vocab_size()),
            Self::Words(v) => write!(f, "SentenceTokenizer::Words({} ids)", v.size()),
        }
    }
}

impl SentenceTokenizer {
    /// Ids with special tokens, at most `max_len` of them (a cut keeps the final `[SEP]`).
    pub fn encode(&self, t: &str, max_len: usize) -> Result<Vec<u32>> {
        let mut ids = match self {
            #[cfg(feature = "tokenizers")]
            Self::Real(tk) => tk.encode(t, true)?,
            Self::Words(v) => v.encode(t),
        };
        if ids.len() > max_len && max_len >= 2 {
            let sep = ids[ids.len() - 1];
            ids.truncate(max_len - 1);
            ids.push(sep);
        }
        Ok(ids)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            #[cfg(feature = "tokenizers")]
            Self::Real(tk) => tk.vocab_size(),
            Self::Words(v) => v.size(),
        }
    }
}

/// Tokenised examples with class labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabeledIds {
    /// Token ids per example.
    pub ids: Vec<Vec<u32>>,
    /// Label per example.
    pub labels: Vec<usize>,
}

impl LabeledIds {
    /// Tokenises `(text, label)` pairs.
    pub fn encode(
        items: &[(String, usize)],
        tok: &SentenceTokenizer,
        max_len: usize,
    ) -> Result<Self> {
        let mut s = Self::default();
        for (t, l) in items {
            s.ids.push(tok.encode(t, max_len)?);
            s.labels.push(*l);
        }
        Ok(s)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Right-padded (pad id 0) examples `idx`: ids and mask `[n, seq]`, labels `[n]`.
    pub fn batch(
        &self,
        idx: &[usize],
        max_len: usize,
        device: &Device,
    ) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<1, Int>) {
        let seqs: Vec<Vec<u32>> = idx.iter().map(|&i| self.ids[i].clone()).collect();
        let pb = crate::batch::pad_batch(&seqs, 0, max_len, device);
        let y: Vec<i64> = idx.iter().map(|&i| self.labels[i] as i64).collect();
        (
            pb.ids,
            pb.mask,
            Tensor::from_data(TensorData::new(y, [idx.len()]), device),
        )
    }

    /// Consecutive index chunks of `size` covering every example (evaluation order).
    pub fn chunks(&self, size: usize) -> Vec<Vec<usize>> {
        let idx: Vec<usize> = (0..self.len()).collect();
        idx.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_vocab_and_truncation_keep_the_specials() {
        let v = WordVocab::build(["a b c", "b d"]);
        assert_eq!(v.size(), 8);
        let t = SentenceTokenizer::Words(v);
        assert_eq!(t.encode("A b zz", 10).unwrap(), vec![1, 4, 5, 3, 2]);
        assert_eq!(t.encode("a b c d", 4).unwrap(), vec![1, 4, 5, 2]);
        let s = LabeledIds::encode(&[("a".into(), 1), ("b c d".into(), 0)], &t, 8).unwrap();
        let (ids, mask, y) = s.batch(&[1, 0], 8, &Device::flex());
        assert_eq!(ids.dims(), [2, 5]);
        assert_eq!(mask.sum().into_scalar::<i64>(), 8);
        assert_eq!(
            y.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(),
            vec![0, 1]
        );
    }
}
