//! The 18 word-formation classes of FormBERT and rules that derive them from morpheme POS.
//!
//! The inventory and its order are those of the official code (`TobiasLee/FormBERT`), which
//! names them in Chinese; the English glosses are ours. Three classes are bare codes there
//! (`10`, `00`, `01`) with no documented meaning; this crate uses them for words the rules do
//! not analyse: `00` a single morpheme (one character), `01` a two-character word whose
//! morphemes match no rule, `10` a word of three or more characters.
//!
//! [`derive_formation`] classifies a two-character word from the part of speech jieba's
//! dictionary gives each of its characters as a word on its own (the most frequent entry), with
//! closed lists for affixes, localisers and resultative complements, in this order:
//!
//! | rule | class |
//! |---|---|
//! | both characters equal | 重叠 reduplication |
//! | first is a prefix (阿 老 第 初) before a noun, numeral or pronoun | 前缀 prefix |
//! | preposition + noun / pronoun | 介宾 preposition-object |
//! | second is a suffix (子 儿 头 者 性 化 们 家 员 手) | 后缀 suffix |
//! | second is a localiser (POS `f`, or 上 下 里 外 中 内 前 后 边) | 方位 locative |
//! | numeral + classifier (`m` + `q`) | 数量 numeral-classifier |
//! | noun + classifier | 名量 noun-classifier |
//! | classifier + classifier | 复量 compound classifier |
//! | adverb + verb / adjective | 状中 adverbial-head |
//! | verb + resultative (完 到 见 成 住 掉 走 开 出 起 好 破 倒 死 懂 清 光), or verb + adjective | 述补 verb-complement |
//! | verb + noun / pronoun | 述宾 verb-object |
//! | noun + verb / adjective | 主谓 subject-predicate |
//! | same POS (n, v, a) and the same Cilin major class | 联合 coordinate |
//! | verb + verb | 连谓 serial-verb |
//! | noun or adjective + noun | 定中 attributive-head |
//! | anything else | `01` |

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The 18 classes in the official order: (Chinese name, English gloss).
pub const FORMATIONS: [(&str, &str); 18] = [
    ("状中", "adverbial-head"),
    ("方位", "locative"),
    ("前缀", "prefix"),
    ("后缀", "suffix"),
    ("连谓", "serial-verb"),
    ("定中", "attributive-head"),
    ("主谓", "subject-predicate"),
    ("名量", "noun-classifier"),
    ("述补", "verb-complement"),
    ("介宾", "preposition-object"),
    ("复量", "compound classifier"),
    ("述宾", "verb-object"),
    (
        "10",
        "code 10 (here: three or more characters, not analysed)",
    ),
    ("重叠", "reduplication"),
    ("联合", "coordinate"),
    ("00", "code 00 (here: a single morpheme)"),
    ("01", "code 01 (here: two characters no rule covers)"),
    ("数量", "numeral-classifier"),
];

/// Number of classes.
pub const N_FORMATIONS: usize = FORMATIONS.len();

/// The id of a class given by its Chinese name or code.
pub fn formation_id(name: &str) -> Result<usize> {
    FORMATIONS
        .iter()
        .position(|(n, _)| *n == name)
        .ok_or_else(|| Error::UnknownFormation(name.to_string()))
}

/// The Chinese name of class `id` (`None` outside the inventory).
pub fn formation_name(id: usize) -> Option<&'static str> {
    FORMATIONS.get(id).map(|(n, _)| *n)
}

const PREFIXES: &[char] = &['阿', '老', '第', '初'];
const SUFFIXES: &[char] = &['子', '儿', '头', '者', '性', '化', '们', '家', '员', '手'];
const LOCALISERS: &[char] = &['上', '下', '里', '外', '中', '内', '前', '后', '边'];
const RESULTS: &[char] = &[
    '完', '到', '见', '成', '住', '掉', '走', '开', '出', '起', '好', '破', '倒', '死', '懂', '清',
    '光',
];

/// The part of speech of single characters, from jieba's `dict.txt` (`word freq pos` lines).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MorphemeLexicon {
    pos: HashMap<char, (u64, String)>,
    /// Frequencies of the two- and three-character words (word-boundary checks).
    words: HashMap<String, u64>,
}

impl MorphemeLexicon {
    /// Reads the single-character entries of a jieba dictionary text, keeping each character's
    /// most frequent tag, and the frequencies of its two- and three-character words.
    pub fn from_jieba(text: &str) -> Result<Self> {
        let mut pos: HashMap<char, (u64, String)> = HashMap::new();
        let mut words: HashMap<String, u64> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let mut it = line.split_whitespace();
            let (Some(w), Some(f), Some(p)) = (it.next(), it.next(), it.next()) else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(Error::Format {
                    source_name: "jieba dict".into(),
                    line: i + 1,
                    reason: format!("expected 'word freq pos', got {line:?}"),
                });
            };
            let f: u64 = f.parse().map_err(|_| Error::Format {
                source_name: "jieba dict".into(),
                line: i + 1,
                reason: format!("frequency {f:?} is not a number"),
            })?;
            let mut chars = w.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                if (2..=3).contains(&w.chars().count()) {
                    let e = words.entry(w.to_string()).or_insert(0);
                    *e = (*e).max(f);
                }
                continue;
            };
            let e = pos.entry(c).or_insert((0, String::new()));
            if f >= e.0 {
                *e = (f, p.to_string());
            }
        }
        Ok(Self { pos, words })
    }

    /// jieba's frequency of a two- or three-character word (0 when it is not listed).
    pub fn word_freq(&self, w: &str) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }

    /// Whether the two-character word at chars `k, k+1` of `chars` stands as a word: no listed
    /// two- or three-character word that crosses one of its ends (starts before it and ends
    /// inside it, or starts inside it and ends after it) is more frequent than the word itself.
    /// `软件包管理` holds the characters of `包管`, but `管理` crosses its end and is far more
    /// frequent, so that `包管` is not a use of the word.
    pub fn stands_alone(&self, chars: &[char], k: usize) -> bool {
        if k + 2 > chars.len() {
            return false;
        }
        let own = self.word_freq(&chars[k..k + 2].iter().collect::<String>());
        let beats =
            |a: usize, b: usize| self.word_freq(&chars[a..b].iter().collect::<String>()) > own;
        // Left-crossing words end at char k; right-crossing ones start at char k + 1.
        let left = (1..=2).any(|m| k >= m && beats(k - m, k + 1));
        let right = (1..=2).any(|m| k + 2 + m <= chars.len() && beats(k + 1, k + 2 + m));
        !(left || right)
    }

    /// The coarse tag (first letter of jieba's tag: `n`, `v`, `a`, `d`, `m`, `q`, `f`, `p`, `r`,
    /// ...) of a character.
    pub fn tag(&self, c: char) -> Option<char> {
        self.pos.get(&c).and_then(|(_, p)| p.chars().next())
    }

    /// Characters known.
    pub fn len(&self) -> usize {
        self.pos.len()
    }

    /// Whether no character is known.
    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }
}

/// The formation class of `word` (see the module docs). `major` gives a character's Cilin
/// major class (the first letter of its code), used only to tell coordinate compounds apart.
pub fn derive_formation(
    word: &str,
    lex: &MorphemeLexicon,
    major: &dyn Fn(char) -> Option<char>,
) -> usize {
    let chars: Vec<char> = word.chars().collect();
    let id = |n: &str| formation_id(n).unwrap_or(16);
    match chars.len() {
        0 | 1 => return id("00"),
        2 => {}
        _ => return id("10"),
    }
    let (a, b) = (chars[0], chars[1]);
    let (pa, pb) = (lex.tag(a), lex.tag(b));
    let is = |p: Option<char>, set: &[char]| p.is_some_and(|p| set.contains(&p));
    if a == b {
        return id("重叠");
    }
    if PREFIXES.contains(&a) && is(pb, &['n', 'm', 'r']) {
        return id("前缀");
    }
    if pa == Some('p') && is(pb, &['n', 'r']) {
        return id("介宾");
    }
    if SUFFIXES.contains(&b) {
        return id("后缀");
    }
    if pb == Some('f') || LOCALISERS.contains(&b) {
        return id("方位");
    }
    match (pa, pb) {
        (Some('m'), Some('q')) => id("数量"),
        (Some('n'), Some('q')) => id("名量"),
        (Some('q'), Some('q')) => id("复量"),
        (Some('d'), Some('v' | 'a')) => id("状中"),
        (Some('v'), _) if RESULTS.contains(&b) => id("述补"),
        (Some('v'), Some('a')) => id("述补"),
        (Some('v'), Some('n' | 'r')) => id("述宾"),
        (Some('n'), Some('v' | 'a')) => id("主谓"),
        (Some(x), Some(y))
            if x == y
                && matches!(x, 'n' | 'v' | 'a')
                && major(a).is_some()
                && major(a) == major(b) =>
        {
            id("联合")
        }
        (Some('v'), Some('v')) => id("连谓"),
        (Some('n' | 'a'), Some('n')) => id("定中"),
        _ => id("01"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex() -> MorphemeLexicon {
        MorphemeLexicon::from_jieba(
            "打 33853 v\n球 5650 n\n大 144099 a\n学 1000 v\n不 500000 d\n去 9000 v\n三 9000 m\n\
             个 9000 q\n人 9000 n\n口 100 q\n口 9000 n\n在 9000 p\n家 9000 n\n跑 900 v\n\
             走 900 v\n看 900 v\n书 900 n\n本 900 q\n红 900 a\n花 900 n\n桌 90 n\n头 9 n\n\
             研 50 v\n究 50 v\n天 900 n\n上 9000 f\n",
        )
        .expect("lexicon")
    }

    #[test]
    fn inventory_has_the_official_order() {
        assert_eq!(N_FORMATIONS, 18);
        assert_eq!(formation_id("状中").expect("id"), 0);
        assert_eq!(formation_id("数量").expect("id"), 17);
        assert_eq!(formation_name(11), Some("述宾"));
        assert!(matches!(
            formation_id("xx"),
            Err(Error::UnknownFormation(_))
        ));
    }

    #[test]
    fn rules_cover_the_common_patterns() {
        let l = lex();
        let major = |c: char| match c {
            '研' | '究' => Some('H'),
            _ => None,
        };
        let f = |w: &str| formation_name(derive_formation(w, &l, &major)).unwrap_or("?");
        assert_eq!(f("打球"), "述宾");
        assert_eq!(f("大学"), "01"); // a + v: no rule

        assert_eq!(f("红花"), "定中");
        assert_eq!(f("不去"), "状中");
        assert_eq!(f("三个"), "数量");
        assert_eq!(f("人口"), "定中"); // 口 is mostly a noun

        assert_eq!(f("在家"), "介宾");
        assert_eq!(f("看看"), "重叠");
        assert_eq!(f("桌子"), "后缀");
        assert_eq!(f("老人"), "前缀");
        assert_eq!(f("天上"), "方位");
        assert_eq!(f("跑走"), "述补");
        assert_eq!(f("研究"), "联合");
        assert_eq!(f("看跑"), "连谓");
        assert_eq!(f("人"), "00");
        assert_eq!(f("大学生"), "10");
    }

    #[test]
    fn bad_dictionary_lines_are_errors() {
        assert!(MorphemeLexicon::from_jieba("打 x v\n").is_err());
        assert!(MorphemeLexicon::from_jieba("打球 x v\n").is_err());
        assert!(MorphemeLexicon::from_jieba("打\n").is_err());
        // The most frequent tag of a character wins.
        let l = lex();
        assert_eq!(l.tag('口'), Some('n'));
    }

    #[test]
    fn words_that_cross_a_boundary_reject_the_use() {
        let l = MorphemeLexicon::from_jieba(
            "包管 20 v\n管理 5000 vn\n软件包 300 n\n软件 9000 n\n理 10 n\n他们 8000 r\n",
        )
        .expect("lex");
        assert_eq!(l.word_freq("管理"), 5000);
        assert_eq!(l.word_freq("包管理"), 0);
        let c: Vec<char> = "软件包管理".chars().collect();
        assert!(!l.stands_alone(&c, 2), "管理 crosses the end of 包管");
        assert!(l.stands_alone(&c, 0), "软件 then 包: 件包 is no word");
        let c: Vec<char> = "他们包管".chars().collect();
        assert!(
            l.stands_alone(&c, 2),
            "at the sentence's end nothing crosses"
        );
        assert!(!l.stands_alone(&c, 3), "a word needs two characters");
        // A less frequent crossing word does not reject.
        let l = MorphemeLexicon::from_jieba("包管 20 v\n管理 5 vn\n").expect("lex");
        assert!(l.stands_alone(&"包管理".chars().collect::<Vec<_>>(), 0));
    }
}
