//! A character vocabulary for Chinese text: one token per character, as Chinese BERTs tokenise
//! Han characters, with BERT's special tokens.
//!
//! Ids 0–4 are `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`; characters follow by descending
//! frequency in the text the vocabulary was built from (ties by code point, so the same text
//! always gives the same ids). Whitespace is dropped.

use std::collections::HashMap;
use std::path::Path;

use crate::{Error, Result};

/// Padding.
pub const PAD: u32 = 0;
/// A character outside the vocabulary.
pub const UNK: u32 = 1;
/// Sequence start.
pub const CLS: u32 = 2;
/// Segment end.
pub const SEP: u32 = 3;
/// Masked-LM mask.
pub const MASK: u32 = 4;
/// Number of special tokens (the first character id).
pub const N_SPECIAL: u32 = 5;
const SPECIAL_NAMES: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Character ↔ id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl CharVocab {
    /// The characters of `texts` seen at least `min_count` times, the `max_chars` most frequent.
    pub fn build<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        min_count: usize,
        max_chars: usize,
    ) -> Self {
        let mut counts: HashMap<char, usize> = HashMap::new();
        for t in texts {
            for c in t.chars().filter(|c| !c.is_whitespace()) {
                *counts.entry(c).or_insert(0) += 1;
            }
        }
        let mut by_freq: Vec<(char, usize)> = counts
            .into_iter()
            .filter(|&(_, n)| n >= min_count.max(1))
            .collect();
        by_freq.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        by_freq.truncate(max_chars);
        Self::from_chars(by_freq.into_iter().map(|(c, _)| c).collect())
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32 + N_SPECIAL))
            .collect();
        Self { chars, index }
    }

    /// Vocabulary size, special tokens included.
    pub fn len(&self) -> usize {
        self.chars.len() + N_SPECIAL as usize
    }

    /// Whether it holds no character (only the special tokens).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The id of `c` ([`UNK`] when unknown).
    pub fn id(&self, c: char) -> u32 {
        self.index.get(&c).copied().unwrap_or(UNK)
    }

    /// The character of a non-special id.
    pub fn char_of(&self, id: u32) -> Option<char> {
        id.checked_sub(N_SPECIAL)
            .and_then(|i| self.chars.get(i as usize).copied())
    }

    /// The ids of the characters of `s` (whitespace dropped), without special tokens.
    pub fn encode(&self, s: &str) -> Vec<u32> {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| self.id(c))
            .collect()
    }

    /// `[CLS] a [SEP]`, cut to `max_len` tokens (the end of `a` is dropped).
    pub fn encode_single(&self, a: &str, max_len: usize) -> Vec<u32> {
        let mut ids = self.encode(a);
        ids.truncate(max_len.saturating_sub(2));
        let mut out = Vec::with_capacity(ids.len() + 2);
        out.push(CLS);
        out.extend(ids);
        out.push(SEP);
        out
    }

    /// `[CLS] a [SEP] b [SEP]` with segment ids 0 then 1, cut to `max_len` tokens by removing
    /// from the end of the longer part, one token at a time (BERT's longest-first rule).
    pub fn encode_pair(&self, a: &str, b: &str, max_len: usize) -> (Vec<u32>, Vec<u32>) {
        let (mut x, mut y) = (self.encode(a), self.encode(b));
        let budget = max_len.saturating_sub(3);
        while x.len() + y.len() > budget {
            if x.len() >= y.len() {
                x.pop();
            } else {
                y.pop();
            }
        }
        let mut ids = Vec::with_capacity(x.len() + y.len() + 3);
        ids.push(CLS);
        ids.extend(&x);
        ids.push(SEP);
        let first = ids.len();
        ids.extend(&y);
        ids.push(SEP);
        let mut seg = vec![0u32; first];
        seg.resize(ids.len(), 1);
        (ids, seg)
    }

    /// Writes the vocabulary, one token per line (special tokens first), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = SPECIAL_NAMES.join("\n");
        for c in &self.chars {
            text.push('\n');
            text.push(*c);
        }
        text.push('\n');
        Ok(trainer::fs::write_atomic(path, text.as_bytes())?)
    }

    /// Reads a vocabulary written by [`CharVocab::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() < SPECIAL_NAMES.len() || lines[..SPECIAL_NAMES.len()] != SPECIAL_NAMES {
            return Err(Error::Format {
                source_name: path.display().to_string(),
                line: 1,
                reason: format!("a vocabulary starts with {}", SPECIAL_NAMES.join(", ")),
            });
        }
        let mut chars = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate().skip(SPECIAL_NAMES.len()) {
            let mut it = l.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => chars.push(c),
                _ => {
                    return Err(Error::Format {
                        source_name: path.display().to_string(),
                        line: i + 1,
                        reason: format!("expected one character, found {l:?}"),
                    });
                }
            }
        }
        Ok(Self::from_chars(chars))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequent_characters_come_first_and_unknowns_map_to_unk() {
        let v = CharVocab::build(["天天向上", "天下 大同"], 1, 100);
        assert_eq!(v.id('天'), N_SPECIAL);
        assert_eq!(v.char_of(N_SPECIAL), Some('天'));
        assert_eq!(v.id('猫'), UNK);
        assert_eq!(v.len(), N_SPECIAL as usize + 6);
        let small = CharVocab::build(["天天向上"], 2, 100);
        assert_eq!(small.len(), N_SPECIAL as usize + 1);
    }

    #[test]
    fn pairs_are_cut_longest_first_with_segments() {
        let v = CharVocab::build(["一二三四五六七八九十"], 1, 100);
        let (ids, seg) = v.encode_pair("一二三四五六", "七八", 8);
        assert_eq!(ids.len(), 8);
        assert_eq!(ids[0], CLS);
        assert_eq!(ids.iter().filter(|&&i| i == SEP).count(), 2);
        // 5 content tokens: the longer context gives up 3, the definition keeps both
        assert_eq!(&ids[1..4], &v.encode("一二三")[..]);
        assert_eq!(seg, vec![0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(
            v.encode_single("一二三四五", 4),
            vec![CLS, v.id('一'), v.id('二'), SEP]
        );
    }

    #[test]
    fn save_and_load_round_trip_and_bad_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let v = CharVocab::build(["春眠不觉晓，处处闻啼鸟"], 1, 100);
        let p = dir.path().join("vocab.txt");
        v.save(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(CharVocab::load(&p).ok(), Some(v));
        std::fs::write(&p, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nab\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = CharVocab::load(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 6"), "{err}");
    }
}
