//! Event dictionary, rule-based extraction and per-token BIO role labels.
//!
//! A TFED-style dictionary ([`EventDictionary`]) lists event types, each with trigger phrases
//! and roles. The TOPIX Finance Event Dictionary and its POS/dependency constraints are not
//! public; the embedded default ([`EventDictionary::embedded`], `data/tfed.json`, 32 types)
//! was written for this crate, and role patterns ([`RolePattern`]) replace the dependency rules
//! with surface rules that need no parser:
//! - `capitalized`: the nearest run of capitalised words on the given side of the trigger in the
//!   same sentence (company names, places);
//! - `number`: a number within `window` tokens, extended over the unit words that follow it
//!   (`12 pct`, `1.50 dlrs a barrel`);
//! - `lexicon`: one of the listed words or phrases within `window` tokens.
//!
//! Extraction: tokenise ([`tokenize`]), match triggers (longest first, case-insensitive, no
//! overlaps), fill each role, keep the event when every required role was found. Labels per
//! token ([`TagSet`]): fine-grained tags are `B-/I-<event type>` on the trigger and
//! `B-/I-<role>` on role spans; coarse subject–predicate–object tags ([`coarse_tags`]) keep
//! only S/P/O for the same triggers: up to three words before the trigger in the sentence
//! (S), the trigger (P), up to three after (O) — the structure an SPO extractor gives, without
//! types or roles.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A token with its position in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// As written.
    pub text: String,
    /// Lower-cased.
    pub lower: String,
}

impl Token {
    /// Starts with a digit.
    pub fn is_number(&self) -> bool {
        self.text.chars().next().is_some_and(|c| c.is_ascii_digit())
    }

    fn is_capitalized(&self) -> bool {
        self.text.chars().next().is_some_and(char::is_uppercase)
    }

    fn is_sentence_end(&self) -> bool {
        self.text == "."
    }
}

/// Words (letters, digits, `'`, `-`), numbers (with `.` and `,` inside), `%`, and `.` at the end
/// of a sentence; other punctuation is dropped.
pub fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let push = |out: &mut Vec<Token>, s: String| {
        out.push(Token {
            lower: s.to_lowercase(),
            text: s,
        })
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() {
            let mut j = i;
            let numeric = c.is_ascii_digit();
            while j < chars.len() {
                let d = chars[j];
                let inner = j + 1 < chars.len() && chars[j + 1].is_alphanumeric();
                if d.is_alphanumeric()
                    || ((d == '\'' || d == '-') && inner)
                    || (numeric && (d == '.' || d == ',') && inner && chars[j + 1].is_ascii_digit())
                {
                    j += 1;
                } else {
                    break;
                }
            }
            push(&mut out, chars[i..j].iter().collect());
            i = j;
        } else {
            if c == '%' {
                push(&mut out, "%".into());
            } else if matches!(c, '.' | '!' | '?' | ';')
                && out.last().is_some_and(|t: &Token| t.text != ".")
            {
                push(&mut out, ".".into());
            }
            i += 1;
        }
    }
    out
}

/// Where a role is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Before the trigger.
    Before,
    /// After the trigger.
    After,
    /// Nearest on either side.
    Both,
}

/// How a role's span is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolePattern {
    /// A run of capitalised words.
    Capitalized,
    /// A number with its units.
    Number,
    /// A listed word or phrase.
    Lexicon,
}

/// One role of an event type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleSpec {
    /// Role name (shared between types: `company`, `change_rate`, ...).
    pub name: String,
    /// Pattern.
    pub kind: RolePattern,
    /// Side of the trigger.
    pub side: Side,
    /// Tokens searched (within the sentence). Default 8.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Unit words for `number`.
    #[serde(default)]
    pub units: Vec<String>,
    /// Words for `lexicon`.
    #[serde(default)]
    pub words: Vec<String>,
    /// The event is dropped when a required role is missing.
    #[serde(default)]
    pub required: bool,
}

fn default_window() -> usize {
    8
}

/// One event type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventType {
    /// Type name.
    pub name: String,
    /// Trigger phrases.
    pub triggers: Vec<String>,
    /// Roles.
    pub roles: Vec<RoleSpec>,
}

/// A TFED-style dictionary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventDictionary {
    /// Free text about its provenance.
    #[serde(default)]
    pub about: String,
    /// Event types.
    pub types: Vec<EventType>,
    /// Tokenised triggers and role phrases, built on the first extraction.
    #[serde(skip)]
    compiled: OnceLock<Compiled>,
}

impl PartialEq for EventDictionary {
    fn eq(&self, other: &Self) -> bool {
        self.about == other.about && self.types == other.types
    }
}

/// The dictionary's phrases as token lists.
#[derive(Clone, Debug, Default)]
struct Compiled {
    /// `(trigger tokens, type)`, longest first.
    triggers: Vec<(Vec<String>, usize)>,
    /// Per type and role: the role's index in [`EventDictionary::role_names`].
    role_ids: Vec<Vec<usize>>,
    /// Per type and role: its unit (number roles) or lexicon phrases.
    phrases: Vec<Vec<Vec<Vec<String>>>>,
}

/// An extracted event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Index into the dictionary's types.
    pub type_id: usize,
    /// Trigger token span `[start, end)`.
    pub trigger: (usize, usize),
    /// `(role name index in [`EventDictionary::role_names`], start, end)`.
    pub roles: Vec<(usize, usize, usize)>,
}

/// Tokens with their events.
#[derive(Clone, Debug)]
pub struct Extraction {
    /// The tokens.
    pub tokens: Vec<Token>,
    /// Events in text order.
    pub events: Vec<Event>,
}

fn phrase(s: &str) -> Vec<String> {
    tokenize(s).into_iter().map(|t| t.lower).collect()
}

fn matches_at(tokens: &[Token], at: usize, p: &[String]) -> bool {
    !p.is_empty()
        && at + p.len() <= tokens.len()
        && p.iter().zip(&tokens[at..]).all(|(w, t)| *w == t.lower)
}

impl EventDictionary {
    /// The dictionary shipped with the crate (32 types).
    pub fn embedded() -> Self {
        // The file is part of the crate and is tested to parse.
        Self::from_json(include_str!("../data/tfed.json")).unwrap_or_else(|_| Self {
            about: String::new(),
            types: Vec::new(),
            compiled: OnceLock::new(),
        })
    }

    /// Parses and validates a dictionary.
    pub fn from_json(s: &str) -> Result<Self> {
        let d: Self = serde_json::from_str(s).map_err(|e| Error::Dictionary(e.to_string()))?;
        d.validate()?;
        Ok(d)
    }

    /// Reads a dictionary file.
    pub fn load(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&s)
    }

    fn validate(&self) -> Result<()> {
        if self.types.is_empty() {
            return Err(Error::Dictionary("no event types".into()));
        }
        let mut names = BTreeSet::new();
        for t in &self.types {
            if !names.insert(&t.name) {
                return Err(Error::Dictionary(format!("type {:?} twice", t.name)));
            }
            if t.triggers.iter().all(|p| phrase(p).is_empty()) {
                return Err(Error::Dictionary(format!(
                    "type {:?} has no trigger",
                    t.name
                )));
            }
            for r in &t.roles {
                if r.name.is_empty() || r.window == 0 {
                    return Err(Error::Dictionary(format!(
                        "type {:?}: role {:?} needs a name and a window ≥ 1",
                        t.name, r.name
                    )));
                }
                if r.kind == RolePattern::Lexicon && r.words.is_empty() {
                    return Err(Error::Dictionary(format!(
                        "type {:?}: lexicon role {:?} lists no words",
                        t.name, r.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Role names, sorted and distinct.
    pub fn role_names(&self) -> Vec<String> {
        self.types
            .iter()
            .flat_map(|t| t.roles.iter().map(|r| r.name.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The fine-grained tag set of this dictionary.
    pub fn fine_tags(&self) -> TagSet {
        let mut names = vec!["O".to_string()];
        for t in &self.types {
            names.push(format!("B-{}", t.name));
            names.push(format!("I-{}", t.name));
        }
        for r in self.role_names() {
            names.push(format!("B-{r}"));
            names.push(format!("I-{r}"));
        }
        TagSet { names }
    }

    fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(|| {
            let mut triggers: Vec<(Vec<String>, usize)> = self
                .types
                .iter()
                .enumerate()
                .flat_map(|(i, t)| t.triggers.iter().map(move |p| (phrase(p), i)))
                .filter(|(p, _)| !p.is_empty())
                .collect();
            triggers.sort_by_key(|x| std::cmp::Reverse(x.0.len()));
            let names = self.role_names();
            let role_ids = self
                .types
                .iter()
                .map(|t| {
                    t.roles
                        .iter()
                        .map(|r| names.iter().position(|n| *n == r.name).unwrap_or(0))
                        .collect()
                })
                .collect();
            let phrases = self
                .types
                .iter()
                .map(|t| {
                    t.roles
                        .iter()
                        .map(|r| {
                            let list = match r.kind {
                                RolePattern::Number => &r.units,
                                RolePattern::Lexicon => &r.words,
                                RolePattern::Capitalized => return Vec::new(),
                            };
                            list.iter().map(|u| phrase(u)).collect()
                        })
                        .collect()
                })
                .collect();
            Compiled {
                triggers,
                role_ids,
                phrases,
            }
        })
    }

    /// Extracts the events of `text`.
    pub fn extract(&self, text: &str) -> Extraction {
        let tokens = tokenize(text);
        let c = self.compiled();
        let triggers = &c.triggers;
        let mut used = vec![false; tokens.len()];
        let mut events = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let hit = triggers
                .iter()
                .find(|(p, _)| matches_at(&tokens, i, p) && !used[i..i + p.len()].contains(&true));
            let Some((p, ty)) = hit else {
                i += 1;
                continue;
            };
            let span = (i, i + p.len());
            let (s0, s1) = sentence(&tokens, i);
            let mut found = Vec::new();
            let mut ok = true;
            for (k, r) in self.types[*ty].roles.iter().enumerate() {
                let role_id = c.role_ids[*ty][k];
                match find_role(&tokens, &used, span, (s0, s1), r, &c.phrases[*ty][k]) {
                    Some((a, b)) => {
                        for u in &mut used[a..b] {
                            *u = true;
                        }
                        found.push((role_id, a, b));
                    }
                    None if r.required => ok = false,
                    None => {}
                }
            }
            if ok {
                for u in &mut used[span.0..span.1] {
                    *u = true;
                }
                events.push(Event {
                    type_id: *ty,
                    trigger: span,
                    roles: found,
                });
                i = span.1;
            } else {
                // release the spans of an event that was not kept
                for (_, a, b) in found {
                    for u in &mut used[a..b] {
                        *u = false;
                    }
                }
                i += 1;
            }
        }
        Extraction { tokens, events }
    }

    /// Fine-grained tag ids of an extraction (see [`EventDictionary::fine_tags`]).
    pub fn tag_ids(&self, x: &Extraction) -> Vec<usize> {
        let n_types = self.types.len();
        let mut tags = vec![0usize; x.tokens.len()];
        let mut mark = |a: usize, b: usize, base: usize| {
            for (k, t) in tags[a..b].iter_mut().enumerate() {
                *t = base + usize::from(k > 0);
            }
        };
        for e in &x.events {
            mark(e.trigger.0, e.trigger.1, 1 + 2 * e.type_id);
            for &(r, a, b) in &e.roles {
                mark(a, b, 1 + 2 * n_types + 2 * r);
            }
        }
        tags
    }
}

/// Capitalised words that start sentences rather than names.
fn is_function_word(t: &Token) -> bool {
    const W: [&str; 24] = [
        "the", "a", "an", "it", "its", "he", "she", "they", "we", "this", "that", "these", "but",
        "and", "in", "on", "at", "for", "of", "to", "as", "if", "said", "reuter",
    ];
    W.contains(&t.lower.as_str())
}

fn sentence(tokens: &[Token], at: usize) -> (usize, usize) {
    let start = tokens[..at]
        .iter()
        .rposition(Token::is_sentence_end)
        .map_or(0, |p| p + 1);
    let end = tokens[at..]
        .iter()
        .position(Token::is_sentence_end)
        .map_or(tokens.len(), |p| at + p);
    (start, end)
}

/// Candidate positions, nearest to the trigger first.
fn candidates(span: (usize, usize), sent: (usize, usize), side: Side, window: usize) -> Vec<usize> {
    let before = (sent.0.max(span.0.saturating_sub(window))..span.0).rev();
    let after = span.1..sent.1.min(span.1 + window);
    match side {
        Side::Before => before.collect(),
        Side::After => after.collect(),
        Side::Both => {
            let (b, a): (Vec<usize>, Vec<usize>) = (before.collect(), after.collect());
            let mut v = Vec::with_capacity(a.len() + b.len());
            for k in 0..a.len().max(b.len()) {
                v.extend(a.get(k));
                v.extend(b.get(k));
            }
            v
        }
    }
}

fn find_role(
    tokens: &[Token],
    used: &[bool],
    span: (usize, usize),
    sent: (usize, usize),
    r: &RoleSpec,
    phrases: &[Vec<String>],
) -> Option<(usize, usize)> {
    let window = match r.kind {
        RolePattern::Capitalized => sent.1 - sent.0,
        _ => r.window,
    };
    for i in candidates(span, sent, r.side, window) {
        if used[i] {
            continue;
        }
        let t = &tokens[i];
        match r.kind {
            RolePattern::Capitalized if t.is_capitalized() && !is_function_word(t) => {
                // grow the run of capitalised words around i, inside the sentence
                let mut a = i;
                let free = |j: usize| {
                    !used[j] && (j < span.0 || j >= span.1) && !is_function_word(&tokens[j])
                };
                while a > sent.0 && free(a - 1) && tokens[a - 1].is_capitalized() {
                    a -= 1;
                }
                let mut b = i + 1;
                while b < sent.1 && free(b) && tokens[b].is_capitalized() {
                    b += 1;
                }
                return Some((a, b));
            }
            RolePattern::Number if t.is_number() => {
                let mut b = i + 1;
                // the longest unit phrase that follows, repeatedly (`mln dlrs`)
                loop {
                    let best = phrases
                        .iter()
                        .filter(|u| matches_at(tokens, b, u) && b + u.len() <= sent.1)
                        .map(Vec::len)
                        .max();
                    match best {
                        Some(k) if (b..b + k).all(|j| !used[j] && (j < span.0 || j >= span.1)) => {
                            b += k
                        }
                        _ => break,
                    }
                }
                return Some((i, b));
            }
            RolePattern::Lexicon => {
                let best = phrases
                    .iter()
                    .filter(|w| {
                        matches_at(tokens, i, w)
                            && i + w.len() <= sent.1
                            && (i..i + w.len()).all(|j| !used[j] && (j < span.0 || j >= span.1))
                    })
                    .map(Vec::len)
                    .max();
                if let Some(k) = best {
                    return Some((i, i + k));
                }
            }
            _ => {}
        }
    }
    None
}

/// Names of the tags of one labelling scheme; id 0 is `O`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagSet {
    /// Tag names.
    pub names: Vec<String>,
}

impl TagSet {
    /// The subject–predicate–object tags.
    pub fn coarse() -> Self {
        Self {
            names: ["O", "B-S", "I-S", "B-P", "I-P", "B-O", "I-O"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set is empty (never).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Coarse S/P/O tags of an extraction: the triggers of its events as predicates, up to three
/// words before (subject) and after (object) inside the sentence.
pub fn coarse_tags(x: &Extraction) -> Vec<usize> {
    let mut tags = vec![0usize; x.tokens.len()];
    let mut taken = vec![false; x.tokens.len()];
    for e in &x.events {
        for t in &mut taken[e.trigger.0..e.trigger.1] {
            *t = true;
        }
    }
    for e in &x.events {
        let (s0, s1) = sentence(&x.tokens, e.trigger.0);
        let mark = |tags: &mut Vec<usize>, idx: &[usize], base: usize| {
            for (k, &i) in idx.iter().enumerate() {
                tags[i] = base + usize::from(k > 0);
            }
        };
        let pred: Vec<usize> = (e.trigger.0..e.trigger.1).collect();
        let subj: Vec<usize> = (s0.max(e.trigger.0.saturating_sub(3))..e.trigger.0)
            .filter(|&i| !taken[i])
            .collect();
        let obj: Vec<usize> = (e.trigger.1..s1.min(e.trigger.1 + 3))
            .filter(|&i| !taken[i])
            .collect();
        mark(&mut tags, &subj, 1);
        mark(&mut tags, &pred, 3);
        mark(&mut tags, &obj, 5);
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_dictionary_parses_with_32_types() {
        let d = EventDictionary::from_json(include_str!("../data/tfed.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.types.len(), 32);
        assert_eq!(EventDictionary::embedded(), d);
        let tags = d.fine_tags();
        assert_eq!(tags.len(), 1 + 2 * 32 + 2 * d.role_names().len());
    }

    #[test]
    fn tokenizer_keeps_numbers_percent_and_sentence_ends() {
        let t: Vec<String> = tokenize("Profit rose 12.5 pct, to 1,200 mln dlrs. Shares fell 3%!")
            .into_iter()
            .map(|t| t.text)
            .collect();
        assert_eq!(
            t,
            vec![
                "Profit", "rose", "12.5", "pct", "to", "1,200", "mln", "dlrs", ".", "Shares",
                "fell", "3", "%", "."
            ]
        );
    }

    #[test]
    fn a_fine_grained_event_with_its_roles() {
        let d = EventDictionary::embedded();
        let x = d.extract(
            "Acme Widgets Corp said its net profit rose 12 pct in the first quarter. Nothing else.",
        );
        assert_eq!(x.events.len(), 1);
        let e = &x.events[0];
        assert_eq!(d.types[e.type_id].name, "earnings_up");
        let roles = d.role_names();
        let span = |name: &str| {
            e.roles
                .iter()
                .find(|r| roles[r.0] == name)
                .map(|&(_, a, b)| {
                    x.tokens[a..b]
                        .iter()
                        .map(|t| t.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
        };
        assert_eq!(span("company").as_deref(), Some("Acme Widgets Corp"));
        assert_eq!(span("change_rate").as_deref(), Some("12 pct"));
        assert_eq!(span("period").as_deref(), Some("first quarter"));
        // BIO tags
        let tags = d.fine_tags();
        let ids = d.tag_ids(&x);
        let names: Vec<&str> = ids.iter().map(|&i| tags.names[i].as_str()).collect();
        assert_eq!(&names[..3], &["B-company", "I-company", "I-company"]);
        assert_eq!(
            &names[5..8],
            &["B-earnings_up", "I-earnings_up", "I-earnings_up"]
        );
        assert_eq!(&names[8..10], &["B-change_rate", "I-change_rate"]);
        // the coarse tags of the same text keep only S/P/O
        let c = coarse_tags(&x);
        let coarse = TagSet::coarse();
        let cn: Vec<&str> = c.iter().map(|&i| coarse.names[i].as_str()).collect();
        assert_eq!(
            &cn[2..11],
            &[
                "B-S", "I-S", "I-S", "B-P", "I-P", "I-P", "B-O", "I-O", "I-O"
            ]
        );
    }

    #[test]
    fn required_roles_and_sentences_bound_the_match() {
        let d = EventDictionary::embedded();
        // earnings_up needs a company in the same sentence
        let x = d.extract("Acme said so. net profit rose 12 pct");
        assert!(x.events.is_empty());
        // a crude price cut from the real Reuters wording
        let x = d.extract("Diamond Shamrock Corp said that effective today it had cut its contract prices for crude oil by 1.50 dlrs a barrel.");
        assert_eq!(x.events.len(), 1);
        assert_eq!(d.types[x.events[0].type_id].name, "price_cut");
        assert!(x.events[0].roles.len() >= 2);
    }

    #[test]
    fn malformed_dictionaries_are_typed_errors() {
        for bad in [
            "{",
            r#"{"types": []}"#,
            r#"{"types": [{"name": "a", "triggers": [], "roles": []}]}"#,
            r#"{"types": [{"name": "a", "triggers": ["x"], "roles": [{"name": "r", "kind": "lexicon", "side": "after"}]}]}"#,
            r#"{"types": [{"name": "a", "triggers": ["x"], "roles": []}, {"name": "a", "triggers": ["y"], "roles": []}]}"#,
        ] {
            assert!(
                matches!(EventDictionary::from_json(bad), Err(Error::Dictionary(_))),
                "{bad}"
            );
        }
    }
}
