//! A word-level tokenizer with byte fallback, built from a corpus.
//!
//! Text splits into pieces: a run of letters or a run of digits, with the single space before
//! it attached (as GPT-2 does), or any other single character. Pieces seen at least `min_count`
//! times in the corpus get their own id; anything else is spelled out in its UTF-8 bytes, ids
//! 0–255, so every text encodes and decodes losslessly. A number like `17` is then one token,
//! which lets a small model trained from scratch learn multi-step arithmetic in minutes rather
//! than hours of byte-level training.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::tags::Tokenizer;

/// See the module docs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WordTokenizer {
    pieces: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

#[derive(PartialEq, Clone, Copy)]
enum Class {
    Alpha,
    Digit,
    Other,
}

fn class(c: char) -> Class {
    if c.is_ascii_digit() {
        Class::Digit
    } else if c.is_alphabetic() {
        Class::Alpha
    } else {
        Class::Other
    }
}

/// The pieces of `text`, in order (their concatenation is `text`).
pub fn split_pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let idx: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < idx.len() {
        let (start, c) = idx[i];
        let mut j = i;
        // A space glued to the run that follows it.
        if c == ' '
            && idx
                .get(i + 1)
                .is_some_and(|&(_, n)| class(n) != Class::Other)
        {
            j += 1;
        }
        let k = class(idx[j].1);
        j += 1;
        if k != Class::Other {
            while j < idx.len() && class(idx[j].1) == k {
                j += 1;
            }
        }
        let end = idx.get(j).map_or(text.len(), |&(b, _)| b);
        out.push(&text[start..end]);
        i = j;
    }
    out
}

impl WordTokenizer {
    /// Pieces of `corpus` seen at least `min_count` times, plus `extra` pieces, after the 256
    /// byte ids.
    pub fn build<'a>(
        corpus: impl IntoIterator<Item = &'a str>,
        min_count: usize,
        extra: &[&str],
    ) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for text in corpus {
            for p in split_pieces(text) {
                *counts.entry(p).or_default() += 1;
            }
        }
        let mut kept: Vec<&str> = counts
            .into_iter()
            .filter(|&(p, c)| c >= min_count.max(1) && p.len() > 1)
            .map(|(p, _)| p)
            .collect();
        kept.sort_unstable();
        let mut pieces: Vec<String> = Vec::new();
        for p in kept.into_iter().chain(extra.iter().copied()) {
            if p.len() > 1 && !pieces.iter().any(|q| q == p) {
                pieces.push(p.to_string());
            }
        }
        let mut t = Self {
            pieces,
            index: HashMap::new(),
        };
        t.reindex();
        t
    }

    fn reindex(&mut self) {
        self.index = self
            .pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), 256 + i as u32))
            .collect();
    }

    /// Ids of `text`.
    pub fn encode_text(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        for p in split_pieces(text) {
            match self.index.get(p) {
                Some(&id) => out.push(id),
                None => out.extend(p.bytes().map(u32::from)),
            }
        }
        out
    }

    /// Text of `ids` (unknown ids are skipped; invalid UTF-8 is replaced).
    pub fn decode_ids(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 3);
        for &i in ids {
            if i < 256 {
                bytes.push(i as u8);
            } else if let Some(p) = self.pieces.get(i as usize - 256) {
                bytes.extend_from_slice(p.as_bytes());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Tokenizer for WordTokenizer {
    fn encode(&self, text: &str) -> textdata::Result<Vec<u32>> {
        Ok(self.encode_text(text))
    }
    fn decode(&self, ids: &[u32]) -> textdata::Result<String> {
        Ok(self.decode_ids(ids))
    }
    fn vocab_size(&self) -> usize {
        256 + self.pieces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pieces_glue_one_space_to_words_and_numbers() {
        assert_eq!(
            split_pieces("Tom has 12 apples.\nStep 1: 12 + 3 = 15"),
            vec![
                "Tom", " has", " 12", " apples", ".", "\n", "Step", " 1", ":", " 12", " ", "+",
                " 3", " ", "=", " 15"
            ]
        );
        let t = WordTokenizer::build(["Tom has 12 apples. Tom has 12 pens."], 2, &[" ки"]);
        let ids = t.encode_text("Tom has 12 pears ки");
        // "Tom" (seen once without a space) and " pears" fall back to bytes; " has", " 12" and
        // the extra " ки" are pieces.
        assert_eq!(ids[..5], [84, 111, 109, 257, 256]);
        assert_eq!(ids.last().copied(), Some(258));
        assert_eq!(t.vocab_size(), 259);
        assert_eq!(t.decode_ids(&ids), "Tom has 12 pears ки");
    }

    proptest! {
        #[test]
        fn any_text_round_trips(s in "\\PC{0,40}") {
            let t = WordTokenizer::build(["the cat sat on the mat 12 12"], 1, &[]);
            prop_assert_eq!(t.decode_ids(&t.encode_text(&s)), s);
        }
    }
}
