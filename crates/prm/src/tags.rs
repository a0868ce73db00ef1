//! Tokenizers and step-tag positions.
//!
//! A PRM is read at the token of every step tag (`ки` in Math-Shepherd). Tokenizers disagree on
//! what that token is: GPT-2-style BPE folds the leading space into the tag (`Ġки`), others split
//! the tag into pieces or merge it with a following newline. Two ways are offered:
//!
//! - [`encode_tagged`] builds the ids piece by piece (prompt, then each step, then the tag, then
//!   the separator), so the tag tokens are exactly `encode(" " + tag)` and their positions are
//!   known by construction. This is what training and scoring in this crate use.
//! - [`find_tags`] locates the tags in the ids of an already formatted text, trying the token
//!   forms the tag can take (bare, after a space, after a newline), and fails with
//!   [`Error::TagNotFound`] when the count differs from the tags in the text.
//!
//! A tag that spans several tokens is read at its last token. [`truncate`] never silently drops
//! a labelled tag: it fails with [`Error::TagTruncated`] or drops whole trailing steps.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The tokenizer interface lives with the tokenizers, in `textdata`; re-exported here so
/// `prm::tags::Tokenizer` keeps working.
pub use textdata::Tokenizer;

/// Token ids with the position of every step tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaggedIds {
    /// The ids.
    pub ids: Vec<u32>,
    /// The index in `ids` of each step's tag (its last token), increasing.
    pub tag_pos: Vec<usize>,
}

/// The ids of `prompt` followed by the steps, each followed by `" " + tag` and, except the
/// last, by `sep`; every step is tagged, or only the last when `every_step` is false (the ORM
/// input).
pub fn encode_tagged(
    tok: &dyn Tokenizer,
    prompt: &str,
    steps: &[String],
    tag: &str,
    sep: &str,
    every_step: bool,
) -> Result<TaggedIds> {
    let tag_ids = tok.encode(&format!(" {tag}"))?;
    if tag.trim().is_empty() || tag_ids.is_empty() {
        return Err(Error::EmptyTag(tag.to_string()));
    }
    let sep_ids = tok.encode(sep)?;
    let mut ids = tok.encode(prompt)?;
    let mut tag_pos = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        ids.extend(tok.encode(s)?);
        let last = i + 1 == steps.len();
        if every_step || last {
            ids.extend_from_slice(&tag_ids);
            tag_pos.push(ids.len() - 1);
        }
        if !last {
            ids.extend_from_slice(&sep_ids);
        }
    }
    Ok(TaggedIds { ids, tag_pos })
}

/// The token forms a tag can take inside a text, longest first.
pub fn tag_forms(tok: &dyn Tokenizer, tag: &str) -> Result<Vec<Vec<u32>>> {
    let mut forms: Vec<Vec<u32>> = Vec::new();
    for prefix in ["", " ", "\n"] {
        let mut ids = tok.encode(&format!("{prefix}{tag}"))?;
        if !prefix.is_empty() {
            // Strip the prefix's own tokens when the tokenizer kept them apart.
            let p = tok.encode(prefix)?;
            if ids.len() > p.len() && ids.starts_with(&p) {
                ids.drain(..p.len());
            }
        }
        if !ids.is_empty() && !forms.contains(&ids) {
            forms.push(ids);
        }
    }
    if forms.is_empty() {
        return Err(Error::EmptyTag(tag.to_string()));
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    Ok(forms)
}

/// The position (last token) of every occurrence of `tag` in the ids of `text`.
pub fn find_tags(tok: &dyn Tokenizer, text: &str, tag: &str) -> Result<TaggedIds> {
    let ids = tok.encode(text)?;
    let forms = tag_forms(tok, tag)?;
    let expected = text.matches(tag).count();
    let mut tag_pos = Vec::with_capacity(expected);
    let mut i = 0;
    while i < ids.len() {
        match forms.iter().find(|f| ids[i..].starts_with(f)) {
            Some(f) => {
                tag_pos.push(i + f.len() - 1);
                i += f.len();
            }
            None => i += 1,
        }
    }
    if tag_pos.len() != expected {
        return Err(Error::TagNotFound {
            tag: tag.to_string(),
            expected,
            found: tag_pos.len(),
            tried: forms,
        });
    }
    Ok(TaggedIds { ids, tag_pos })
}

/// What [`truncate`] does when a tag lies past the length limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Truncation {
    /// Fail with [`Error::TagTruncated`].
    Error,
    /// Keep only the steps whose tags fit (their labels must be cut to match).
    DropSteps,
}

/// Cuts `t` to at most `max_len` ids; returns it with the number of tags kept.
pub fn truncate(t: &TaggedIds, max_len: usize, mode: Truncation) -> Result<(TaggedIds, usize)> {
    if t.ids.len() <= max_len {
        return Ok((t.clone(), t.tag_pos.len()));
    }
    let keep = t.tag_pos.iter().take_while(|&&p| p < max_len).count();
    if keep < t.tag_pos.len() && mode == Truncation::Error {
        return Err(Error::TagTruncated {
            step: keep,
            position: t.tag_pos[keep],
            max_len,
        });
    }
    if keep == 0 {
        return Err(Error::TagTruncated {
            step: 0,
            position: t.tag_pos.first().copied().unwrap_or(t.ids.len()),
            max_len,
        });
    }
    let end = t.tag_pos[keep - 1] + 1;
    Ok((
        TaggedIds {
            ids: t.ids[..end.min(max_len)].to_vec(),
            tag_pos: t.tag_pos[..keep].to_vec(),
        },
        keep,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use textdata::ByteTokenizer;

    /// A GPT-2-like word tokenizer: a leading space belongs to the following word, so `" ки"`
    /// is one token and `"ки"` another.
    #[derive(Default)]
    struct WordTok(RefCell<HashMap<String, u32>>);

    impl WordTok {
        fn id(&self, piece: &str) -> u32 {
            let mut m = self.0.borrow_mut();
            let n = m.len() as u32;
            *m.entry(piece.to_string()).or_insert(n)
        }
    }

    impl Tokenizer for WordTok {
        fn encode(&self, text: &str) -> textdata::Result<Vec<u32>> {
            let mut out = Vec::new();
            let mut cur = String::new();
            for c in text.chars() {
                if (c == ' ' || c == '\n') && !cur.trim().is_empty() {
                    out.push(self.id(&cur));
                    cur.clear();
                }
                if c == '\n' {
                    if !cur.is_empty() {
                        out.push(self.id(&cur));
                        cur.clear();
                    }
                    out.push(self.id("\n"));
                    continue;
                }
                cur.push(c);
            }
            if !cur.is_empty() {
                out.push(self.id(&cur));
            }
            Ok(out)
        }
        fn decode(&self, _ids: &[u32]) -> textdata::Result<String> {
            Ok(String::new())
        }
        fn vocab_size(&self) -> usize {
            self.0.borrow().len()
        }
    }

    #[test]
    fn finds_tags_whatever_the_space_handling() {
        let tok = WordTok::default();
        // " ки" (after a step) and "ки" at the start of a line are different tokens here.
        let text = "Q? Step 1: a ки\nки\nStep 2: b ки";
        let t = find_tags(&tok, text, "ки").expect("found");
        assert_eq!(t.tag_pos.len(), 3);
        for &p in &t.tag_pos {
            let f = tag_forms(&tok, "ки").expect("forms");
            assert!(f.iter().any(|f| f.last() == Some(&t.ids[p])));
        }
        let bytes = find_tags(&ByteTokenizer, text, "ки").expect("bytes");
        assert_eq!(bytes.tag_pos.len(), 3);
        // Each position is the last byte of the 4-byte tag.
        for &p in &bytes.tag_pos {
            assert_eq!(bytes.ids[p], u32::from("ки".as_bytes()[3]));
        }
    }

    #[test]
    fn merged_tags_are_a_clear_error() {
        // "xки" is one word: the tag is not a token of its own.
        let tok = WordTok::default();
        match find_tags(&tok, "Step 1: xки", "ки") {
            Err(Error::TagNotFound {
                expected, found, ..
            }) => assert_eq!((expected, found), (1, 0)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn piecewise_encoding_puts_tags_where_they_belong() {
        let steps = vec!["Step 1: 2+3=5".to_string(), "The answer is: 5".to_string()];
        let t = encode_tagged(&ByteTokenizer, "Q?\n", &steps, "ки", "\n", true).expect("enc");
        assert_eq!(t.tag_pos.len(), 2);
        let text = ByteTokenizer.decode(&t.ids);
        assert_eq!(text, "Q?\nStep 1: 2+3=5 ки\nThe answer is: 5 ки");
        let orm = encode_tagged(&ByteTokenizer, "Q?\n", &steps, "ки", "\n", false).expect("enc");
        assert_eq!(orm.tag_pos, vec![orm.ids.len() - 1]);
        assert!(matches!(
            encode_tagged(&ByteTokenizer, "Q", &steps, "", "\n", true),
            Err(Error::EmptyTag(_))
        ));
    }

    #[test]
    fn truncation_never_loses_a_label_silently() {
        let steps: Vec<String> = (0..4).map(|i| format!("step {i}")).collect();
        let t = encode_tagged(&ByteTokenizer, "Q\n", &steps, "ки", "\n", true).expect("enc");
        let cut = t.tag_pos[2] - 1;
        assert!(matches!(
            truncate(&t, cut, Truncation::Error),
            Err(Error::TagTruncated { step: 2, .. })
        ));
        let (short, kept) = truncate(&t, cut, Truncation::DropSteps).expect("drops");
        assert_eq!(kept, 2);
        assert!(short.ids.len() <= cut);
        assert_eq!(short.tag_pos, t.tag_pos[..2].to_vec());
        assert!(truncate(&t, 2, Truncation::DropSteps).is_err());
        assert_eq!(truncate(&t, 10_000, Truncation::Error).expect("fits").1, 4);
    }
}
