//! A word vocabulary for the news encoder (plm's BERT trained here: no English word-level
//! checkpoint is on the registries, and the role labels are per word).

use std::collections::HashMap;

use burn::prelude::*;

use crate::events::Token;

/// Padding id.
pub const PAD: u32 = 0;
/// Unknown-word id.
pub const UNK: u32 = 1;
/// Sequence-start id (the `[CLS]` position).
pub const CLS: u32 = 2;
/// Numbers share one id (their value is a role, not a word).
pub const NUM: u32 = 3;

/// Lower-cased words seen at least `min_count` times in the training texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Builds the vocabulary from tokenised texts, most frequent first (ties by word), capped
    /// at `max_size` entries including the four specials.
    pub fn build<'a>(
        texts: impl IntoIterator<Item = &'a [Token]>,
        min_count: usize,
        max_size: usize,
    ) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for t in texts {
            for w in t {
                if !w.is_number() {
                    *counts.entry(w.lower.as_str()).or_default() += 1;
                }
            }
        }
        let mut v: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_count.max(1))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut words: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[NUM]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        words.extend(
            v.into_iter()
                .take(max_size.saturating_sub(4))
                .map(|(w, _)| w.to_string()),
        );
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Self { words, index }
    }

    /// Entries, specials included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether only the specials are present.
    pub fn is_empty(&self) -> bool {
        self.words.len() <= 4
    }

    /// Id of a token.
    pub fn id(&self, t: &Token) -> u32 {
        if t.is_number() {
            NUM
        } else {
            self.index.get(&t.lower).copied().unwrap_or(UNK)
        }
    }
}

/// Token ids `[b, s]`, mask `[b, s]` and tags `[b, s]` of texts with a leading `[CLS]`
/// (tag 0), cut to `max_len` positions, padded.
pub fn encode_batch(
    vocab: &Vocab,
    texts: &[(&[Token], &[usize])],
    max_len: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2, Int>) {
    let b = texts.len();
    let s = texts
        .iter()
        .map(|(t, _)| (t.len() + 1).min(max_len))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ids = vec![i64::from(PAD); b * s];
    let mut mask = vec![0i64; b * s];
    let mut tags = vec![0i64; b * s];
    for (i, (toks, tg)) in texts.iter().enumerate() {
        ids[i * s] = i64::from(CLS);
        mask[i * s] = 1;
        for (j, t) in toks.iter().take(s - 1).enumerate() {
            ids[i * s + j + 1] = i64::from(vocab.id(t));
            mask[i * s + j + 1] = 1;
            tags[i * s + j + 1] = tg.get(j).copied().unwrap_or(0) as i64;
        }
    }
    let t = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [b, s]), device);
    (t(ids), t(mask), t(tags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tokenize;

    #[test]
    fn vocabulary_and_batches() {
        let a = tokenize("Oil prices fell 3 pct. Oil rose.");
        let b = tokenize("Gold rose");
        let v = Vocab::build([a.as_slice(), b.as_slice()], 1, 100);
        assert_eq!(v.id(&a[0]), 4 + 1); // "."(2) ... ties: "oil"(2) and "."(2), "." sorts first
        assert_eq!(v.id(&a[3]), NUM);
        assert_eq!(v.id(&tokenize("Silver")[0]), UNK);
        let tags_a = vec![1usize; a.len()];
        let d = Device::flex();
        let (ids, mask, tags) = encode_batch(&v, &[(&a, &tags_a), (&b, &[])], 5, &d);
        assert_eq!(ids.dims(), [2, 5]);
        let m: Vec<i64> = mask.into_data().try_to_vec_as::<i64>().unwrap_or_default();
        assert_eq!(m, vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
        let t: Vec<i64> = tags.into_data().try_to_vec_as::<i64>().unwrap_or_default();
        assert_eq!(t, vec![0, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
        let capped = Vocab::build([a.as_slice()], 2, 100);
        assert_eq!(capped.len(), 4 + 2); // "oil" and "." appear twice
    }
}
