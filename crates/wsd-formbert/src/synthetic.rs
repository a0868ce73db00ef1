//! The embedded default of the `wsd-formbert` experiment: a synthetic Chinese-like lexicon and
//! text, fed through the same pseudo-word builder as the real assets, so the experiment runs
//! offline.
//!
//! Characters are CJK code points with parts of speech drawn at random (a jieba-style
//! dictionary is written for them); Cilin-style sense codes group four two-character words and
//! own six "topic" characters; each word gets sentences made of its code's topic characters,
//! filler characters, one cue character tied to the word's formation (the derivation rules of
//! [`crate::formation::derive_formation`] on the drawn parts of speech) and the word itself. The
//! sense of a pseudo-word is then recoverable from the topic characters of its context, and its
//! formation from the cue: by construction, formation knowledge can help.

use textdata::readers::CilinEntry;
use trainer::Rng;

use crate::Result;
use crate::formation::{MorphemeLexicon, N_FORMATIONS, derive_formation};

/// A synthetic lexicon and text in the shapes of the real assets.
#[derive(Clone, Debug)]
pub struct SyntheticCorpus {
    /// Cilin-style entries (`=` synonym sets).
    pub cilin: Vec<CilinEntry>,
    /// A jieba-style dictionary of single characters (`char freq pos` lines).
    pub jieba: String,
    /// Passages (sentences joined with `。`).
    pub passages: Vec<String>,
}

/// Draws a corpus of `n_codes` sense codes (4 words each) and `sentences` sentences per word.
pub fn synthetic_corpus(n_codes: usize, sentences: usize, seed: u64) -> Result<SyntheticCorpus> {
    let mut rng = Rng::seed_from(seed);
    // Content characters from the CJK block, and their parts of speech.
    let n_chars = 1200;
    let chars: Vec<char> = (0..n_chars)
        .filter_map(|k| char::from_u32(0x4E00 + 7 * k as u32))
        .collect();
    let tags = [
        'n', 'n', 'n', 'n', 'v', 'v', 'v', 'a', 'a', 'd', 'm', 'q', 'f', 'p',
    ];
    let mut jieba = String::new();
    for &c in &chars {
        let t = tags[rng.below(tags.len())];
        jieba.push_str(&format!("{c} 100 {t}\n"));
    }
    let lex = MorphemeLexicon::from_jieba(&jieba)?;
    let (word_chars, rest) = chars.split_at(chars.len() / 2);
    let (cue_chars, pool) = rest.split_at(N_FORMATIONS);
    let (topic_chars, filler) = pool.split_at(pool.len() * 2 / 3);
    let mut cilin = Vec::with_capacity(n_codes);
    let mut passages = Vec::new();
    let mut used = std::collections::HashSet::new();
    for code_i in 0..n_codes {
        let major = (b'A' + (code_i % 12) as u8) as char;
        let code = format!("{major}a{:02}A{:02}", code_i / 12 % 100, code_i % 100);
        let topic: Vec<char> = (0..6)
            .map(|_| topic_chars[rng.below(topic_chars.len())])
            .collect();
        let mut words = Vec::with_capacity(4);
        while words.len() < 4 {
            let (a, b) = (
                word_chars[rng.below(word_chars.len())],
                word_chars[rng.below(word_chars.len())],
            );
            let w: String = [a, b].iter().collect();
            if a != b && used.insert(w.clone()) {
                words.push(w);
            }
        }
        for w in &words {
            let formation = derive_formation(w, &lex, &|_| None);
            let mut text = String::new();
            for _ in 0..sentences {
                let mut s: Vec<String> = Vec::with_capacity(12);
                for _ in 0..3 {
                    s.push(topic[rng.below(topic.len())].to_string());
                }
                for _ in 0..5 {
                    s.push(filler[rng.below(filler.len())].to_string());
                }
                rng.shuffle(&mut s);
                let at = rng.below(s.len() + 1);
                s.insert(at, format!("{}{w}", cue_chars[formation]));
                text.push_str(&s.concat());
                text.push('。');
            }
            passages.push(text);
        }
        cilin.push(CilinEntry {
            code,
            marker: '=',
            words,
        });
    }
    Ok(SyntheticCorpus {
        cilin,
        jieba,
        passages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{BuildConfig, build_pseudo_words, sentences};

    #[test]
    fn the_builder_makes_recoverable_instances_from_the_synthetic_corpus() {
        let c = synthetic_corpus(48, 20, 3).unwrap_or_else(|e| panic!("{e}"));
        let lex = MorphemeLexicon::from_jieba(&c.jieba).unwrap_or_else(|e| panic!("{e}"));
        let sents = sentences(&c.passages);
        let cfg = BuildConfig {
            n_pairs: 40,
            ..BuildConfig::default()
        };
        let (inst, stats) =
            build_pseudo_words(&c.cilin, &lex, &sents, &cfg).unwrap_or_else(|e| panic!("{e}"));
        assert!(stats.pairs >= 20, "{stats:?}");
        assert!(stats.formations.len() >= 4, "{stats:?}");
        for i in &inst {
            assert!(i.context.contains(&i.surface));
            assert_eq!(i.senses.len(), 2);
        }
        // the same seed gives the same corpus
        let again = synthetic_corpus(48, 20, 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.passages, c.passages);
    }
}
