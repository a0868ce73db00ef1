//! WSD data: the official TSV pair format, and a lexical-sample set of pseudo-words built from
//! HIT Cilin, Chinese text and jieba's dictionary.
//!
//! FiCLS, the paper's data set, was never released. [`build_pseudo_words`] makes a set whose
//! senses are recoverable by construction (the classic pseudo-word evaluation): two
//! two-character words that Cilin lists under one sense code each, from different major classes,
//! are merged into one surface form `〈w1|w2〉`; every sentence of the text that contains `w1`
//! (or `w2`) becomes a context of the pseudo-word with `w1` (or `w2`) replaced by the surface
//! form, labelled with `w1`'s (or `w2`'s) sense. A sentence counts only where the word stands
//! as a word: no more frequent jieba word crosses either of its ends (`包管` inside `软件包管理`
//! is not a use of `包管`; [`BuildConfig::word_boundaries`]). A sense's definition is the
//! synonym set of its Cilin code: the word itself, then up to `synonyms` other words listed
//! there (`允许：容许、同意、…`; [`BuildConfig::definition_with_word`] switches the word off).
//! Its word formation is derived from jieba's dictionary by
//! [`crate::formation::derive_formation`]. Contexts are balanced between the two senses of a
//! pseudo-word.
//!
//! Each instance gives one gloss-matching pair per candidate sense (label 1 for the right one);
//! the `formation` column of every pair is the formation of the word actually used in the
//! context (the gold sense), as FormBERT conditions the context, not the candidate, on it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use textdata::readers::CilinEntry;
use trainer::Rng;

use crate::formation::{
    MorphemeLexicon, N_FORMATIONS, derive_formation, formation_id, formation_name,
};
use crate::{Error, Result};

/// One row of the official TSV: a (context, definition) pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRow {
    /// The context sentence.
    pub context: String,
    /// A candidate sense's definition.
    pub definition: String,
    /// 1 when the definition is the sense used in the context.
    pub label: u8,
    /// The formation class id (see [`crate::formation::FORMATIONS`]).
    pub formation: usize,
}

const HEADER: &str = "context\tdefinition\tlabel\tformation";

/// Writes pairs as the official TSV (header, tab-separated, formation by its Chinese name),
/// atomically.
pub fn write_tsv(path: &Path, rows: &[PairRow]) -> Result<()> {
    let mut out = String::from(HEADER);
    out.push('\n');
    for r in rows {
        if [&r.context, &r.definition]
            .iter()
            .any(|f| f.contains(['\t', '\n']))
        {
            return Err(Error::InvalidConfig(format!(
                "a TSV field holds a tab or newline: {:?}",
                r.context
            )));
        }
        let name = formation_name(r.formation)
            .ok_or_else(|| Error::UnknownFormation(r.formation.to_string()))?;
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            r.context, r.definition, r.label, name
        ));
    }
    Ok(trainer::fs::write_atomic(path, out.as_bytes())?)
}

/// Reads the official TSV (formation by name or by numeric id).
pub fn read_tsv(path: &Path) -> Result<Vec<PairRow>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, reason: String| Error::Format {
        source_name: path.display().to_string(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim_end_matches('\r') == HEADER => {}
        other => return Err(bad(1, format!("expected header {HEADER:?}, got {other:?}"))),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 4 {
            return Err(bad(i + 1, format!("{} fields, expected 4", f.len())));
        }
        let label = f[2]
            .parse::<u8>()
            .map_err(|_| bad(i + 1, format!("label {:?}", f[2])))?;
        let formation = match f[3].parse::<usize>() {
            Ok(n) if n < N_FORMATIONS && !["10", "00", "01"].contains(&f[3]) => n,
            _ => formation_id(f[3]).map_err(|e| bad(i + 1, e.to_string()))?,
        };
        out.push(PairRow {
            context: f[0].to_string(),
            definition: f[1].to_string(),
            label,
            formation,
        });
    }
    Ok(out)
}

/// One sense of a pseudo-word.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sense {
    /// The real word behind the sense.
    pub word: String,
    /// Its Cilin code.
    pub code: String,
    /// The definition (synonyms from Cilin, joined by `、`).
    pub definition: String,
    /// Its formation class id.
    pub formation: usize,
}

/// One lexical-sample instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The pseudo-word's surface form.
    pub surface: String,
    /// The context, with the surface form in place of the real word.
    pub context: String,
    /// The candidate senses.
    pub senses: Vec<Sense>,
    /// Index of the right sense.
    pub gold: usize,
    /// The sentence the context was cut from, with the real word (empty when unknown): what a
    /// pretraining corpus must not hold for a held-out instance.
    #[serde(default)]
    pub source: String,
}

impl Instance {
    /// One gloss-matching pair per candidate sense.
    pub fn pairs(&self) -> Vec<PairRow> {
        let formation = self.senses[self.gold].formation;
        self.senses
            .iter()
            .enumerate()
            .map(|(k, s)| PairRow {
                context: self.context.clone(),
                definition: s.definition.clone(),
                label: u8::from(k == self.gold),
                formation,
            })
            .collect()
    }
}

/// Instance accuracy from one score per (instance, candidate) in [`Instance::pairs`] order: the
/// share of instances whose gold sense scores highest (the first of equal scores wins).
pub fn instance_accuracy(instances: &[Instance], scores: &[f64]) -> Result<f64> {
    let want: usize = instances.iter().map(|i| i.senses.len()).sum();
    if instances.is_empty() || scores.len() != want {
        return Err(Error::InvalidConfig(format!(
            "{} scores for {} instances with {want} candidates",
            scores.len(),
            instances.len()
        )));
    }
    let mut right = 0usize;
    let mut at = 0usize;
    for inst in instances {
        let s = &scores[at..at + inst.senses.len()];
        let best = (0..s.len()).fold(0, |b, k| if s[k] > s[b] { k } else { b });
        right += usize::from(best == inst.gold);
        at += s.len();
    }
    Ok(right as f64 / instances.len() as f64)
}

/// Settings of [`build_pseudo_words`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildConfig {
    /// Pseudo-words to build at most.
    pub n_pairs: usize,
    /// Sentences a word needs to be used.
    pub min_contexts: usize,
    /// Contexts kept per sense at most.
    pub max_contexts: usize,
    /// Characters kept on each side of the target.
    pub window: usize,
    /// Synonyms in a definition at most.
    pub synonyms: usize,
    /// Seed of the context sampling.
    pub seed: u64,
    /// Start a definition with the sense's own word (`w：syn、syn…`), as Cilin lists it in its
    /// synonym set and as GlossBERT's weak supervision puts the target word before the gloss;
    /// false gives the other synonyms only. Both words of a pseudo-word are in every context,
    /// so the word in a definition names its sense without revealing which one is used.
    pub definition_with_word: bool,
    /// Use a sentence for a word only where the word stands as a word by jieba's dictionary
    /// ([`MorphemeLexicon::stands_alone`]; `包管` inside `软件包管理` does not).
    pub word_boundaries: bool,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            n_pairs: 80,
            min_contexts: 12,
            max_contexts: 40,
            window: 40,
            synonyms: 6,
            seed: 1234,
            word_boundaries: true,
            definition_with_word: true,
        }
    }
}

/// What the builder found, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildStats {
    /// Distinct words in Cilin.
    pub cilin_words: usize,
    /// Words listed under more than one sense code (truly ambiguous in Cilin).
    pub ambiguous_words: usize,
    /// Two-character words with one sense code and at least two synonyms.
    pub monosemous_candidates: usize,
    /// Of those, the ones with at least `min_contexts` sentences.
    pub frequent_candidates: usize,
    /// Pseudo-words built.
    pub pairs: usize,
    /// Instances.
    pub instances: usize,
    /// Senses per formation class (Chinese name → count).
    pub formations: Vec<(String, usize)>,
    /// Share of senses whose formation no rule covers (`01`, `10`, `00`).
    pub unanalysed_share: f64,
}

/// Splits passages into sentences at 。！？；and line breaks (blank ones dropped).
pub fn sentences(passages: &[String]) -> Vec<String> {
    passages
        .iter()
        .flat_map(|p| p.split(['。', '！', '？', '；', '\n']))
        .map(str::trim)
        .filter(|s| s.chars().count() >= 4)
        .map(str::to_string)
        .collect()
}

/// `passages` with every sentence of `held_out` instances (their [`Instance::source`]) cut out:
/// the masked-LM pretraining corpus, so the encoder never reads a dev or test sentence with its
/// real word in place. A sentence is found as [`sentences`] finds it; passages left empty are
/// dropped.
pub fn passages_without<'a>(
    passages: &[String],
    held_out: impl IntoIterator<Item = &'a Instance>,
) -> Vec<String> {
    let held: std::collections::HashSet<&str> = held_out
        .into_iter()
        .map(|i| i.source.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    passages
        .iter()
        .filter_map(|p| {
            let mut out = p.clone();
            for s in p.split(['。', '！', '？', '；', '\n']).map(str::trim) {
                if held.contains(s) {
                    out = out.replace(s, "");
                }
            }
            (out.chars()
                .any(|c| !c.is_whitespace() && !"。！？；".contains(c)))
            .then_some(out)
        })
        .collect()
}

fn window(s: &str, target: &str, surface: &str, w: usize) -> Option<String> {
    let i = s.find(target)?;
    let before: Vec<char> = s[..i].chars().collect();
    let after: Vec<char> = s[i + target.len()..].chars().collect();
    let b: String = before[before.len().saturating_sub(w)..].iter().collect();
    let a: String = after[..after.len().min(w)].iter().collect();
    // Later (or earlier) uses of the word in the window become the surface form too.
    Some(format!(
        "{}{surface}{}",
        b.replace(target, surface),
        a.replace(target, surface)
    ))
}

/// Builds the pseudo-word lexical sample (see the module docs).
pub fn build_pseudo_words(
    cilin: &[CilinEntry],
    lex: &MorphemeLexicon,
    sents: &[String],
    cfg: &BuildConfig,
) -> Result<(Vec<Instance>, BuildStats)> {
    if cfg.min_contexts == 0 || cfg.max_contexts == 0 {
        return Err(Error::InvalidConfig(
            "min_contexts and max_contexts must be >= 1".into(),
        ));
    }
    let mut stats = BuildStats::default();
    // Sense codes per word, and synonym lists per code.
    let mut codes: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut synsets: HashMap<&str, &[String]> = HashMap::new();
    for e in cilin {
        for w in &e.words {
            codes.entry(w.as_str()).or_default().insert(e.code.as_str());
        }
        if e.marker == '=' {
            synsets.insert(e.code.as_str(), &e.words);
        }
    }
    stats.cilin_words = codes.len();
    stats.ambiguous_words = codes.values().filter(|c| c.len() > 1).count();
    let major = |c: char| -> Option<char> {
        let s = c.to_string();
        codes
            .get(s.as_str())
            .and_then(|cs| cs.iter().min().and_then(|c| c.chars().next()))
    };
    let mut cands: Vec<(&str, &str)> = codes
        .iter()
        .filter(|(w, c)| w.chars().count() == 2 && c.len() == 1)
        .filter_map(|(w, c)| {
            let code = *c.iter().next()?;
            let syn = synsets.get(code)?;
            (syn.len() >= 3).then_some((*w, code))
        })
        .collect();
    cands.sort_unstable();
    stats.monosemous_candidates = cands.len();
    // Sentences per candidate, through one pass over every character bigram.
    let wanted: HashSet<&str> = cands.iter().map(|(w, _)| *w).collect();
    let mut hits: HashMap<&str, Vec<usize>> = HashMap::new();
    // A sentence counts for a word only when every occurrence stands as a word
    // (`MorphemeLexicon::stands_alone`, with `cfg.word_boundaries`).
    for (si, s) in sents.iter().enumerate() {
        let idx: Vec<usize> = s.char_indices().map(|(b, _)| b).chain([s.len()]).collect();
        let chars: Vec<char> = s.chars().collect();
        let mut found: HashMap<&str, bool> = HashMap::new();
        for k in 0..idx.len().saturating_sub(2) {
            let bi = &s[idx[k]..idx[k + 2]];
            if let Some(&w) = wanted.get(bi) {
                let ok = !cfg.word_boundaries || lex.stands_alone(&chars, k);
                *found.entry(w).or_insert(true) &= ok;
            }
        }
        // Each word's list grows in sentence order whatever order the map yields.
        for (w, _) in found.into_iter().filter(|(_, ok)| *ok) {
            hits.entry(w).or_default().push(si);
        }
    }
    let mut frequent: Vec<(&str, &str, usize)> = cands
        .iter()
        .filter_map(|&(w, c)| {
            let n = hits.get(w).map_or(0, Vec::len);
            (n >= cfg.min_contexts).then_some((w, c, n))
        })
        .collect();
    frequent.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    stats.frequent_candidates = frequent.len();
    // Pair neighbours in frequency from different major classes.
    let mut used = vec![false; frequent.len()];
    let mut pairs = Vec::new();
    for i in 0..frequent.len() {
        if used[i] || pairs.len() >= cfg.n_pairs {
            continue;
        }
        let (wi, ci, _) = frequent[i];
        let j = (i + 1..frequent.len()).find(|&j| {
            let (wj, cj, _) = frequent[j];
            !used[j]
                && ci.chars().next() != cj.chars().next()
                && !wi.contains(wj)
                && wi.chars().all(|c| !wj.contains(c))
        });
        if let Some(j) = j {
            used[i] = true;
            used[j] = true;
            pairs.push((i, j));
        }
    }
    stats.pairs = pairs.len();
    let mut rng = Rng::seed_from(cfg.seed);
    let mut instances = Vec::new();
    let mut formation_counts = [0usize; N_FORMATIONS];
    for (i, j) in pairs {
        let (mut a, mut b) = (frequent[i], frequent[j]);
        if a.0 > b.0 {
            std::mem::swap(&mut a, &mut b);
        }
        let surface = format!("〈{}|{}〉", a.0, b.0);
        let senses: Vec<Sense> = [a, b]
            .iter()
            .map(|&(w, code, _)| {
                let syn: Vec<&str> = synsets
                    .get(code)
                    .map(|s| s.iter().map(String::as_str).filter(|s| *s != w).collect())
                    .unwrap_or_default();
                let formation = derive_formation(w, lex, &major);
                formation_counts[formation] += 1;
                let synonyms = syn[..syn.len().min(cfg.synonyms)].join("、");
                Sense {
                    word: w.to_string(),
                    code: code.to_string(),
                    definition: if cfg.definition_with_word {
                        format!("{w}：{synonyms}")
                    } else {
                        synonyms
                    },
                    formation,
                }
            })
            .collect();
        // Balanced contexts: sentences with one word and not the other.
        let only = |w: &str, other: &str| -> Vec<usize> {
            hits.get(w)
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|&s| !sents[s].contains(other))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (mut sa, mut sb) = (only(a.0, b.0), only(b.0, a.0));
        rng.shuffle(&mut sa);
        rng.shuffle(&mut sb);
        let n = sa.len().min(sb.len()).min(cfg.max_contexts);
        for (gold, (list, w)) in [(&sa, a.0), (&sb, b.0)].into_iter().enumerate() {
            for &s in &list[..n] {
                if let Some(context) = window(&sents[s], w, &surface, cfg.window) {
                    instances.push(Instance {
                        surface: surface.clone(),
                        context,
                        senses: senses.clone(),
                        gold,
                        source: sents[s].clone(),
                    });
                }
            }
        }
    }
    stats.instances = instances.len();
    let total: usize = formation_counts.iter().sum();
    stats.formations = formation_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(k, c)| (formation_name(k).unwrap_or("?").to_string(), *c))
        .collect();
    let unanalysed: usize = ["01", "10", "00"]
        .iter()
        .filter_map(|n| formation_id(n).ok())
        .map(|k| formation_counts[k])
        .sum();
    stats.unanalysed_share = unanalysed as f64 / total.max(1) as f64;
    Ok((instances, stats))
}

/// A seeded split of instances into train / dev / test by fractions (the rest is test).
pub fn split(
    mut instances: Vec<Instance>,
    train: f64,
    dev: f64,
    seed: u64,
) -> (Vec<Instance>, Vec<Instance>, Vec<Instance>) {
    Rng::seed_from(seed).shuffle(&mut instances);
    let n = instances.len();
    let a = ((n as f64) * train).round() as usize;
    let b = (a + ((n as f64) * dev).round() as usize).min(n);
    let test = instances.split_off(b);
    let dev = instances.split_off(a.min(b));
    (instances, dev, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: &str, words: &[&str]) -> CilinEntry {
        CilinEntry {
            code: code.into(),
            marker: '=',
            words: words.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn toy() -> (Vec<CilinEntry>, MorphemeLexicon, Vec<String>) {
        let cilin = vec![
            entry("Ba01A01", &["桌子", "台子", "案子", "几子"]),
            entry("Hb01A01", &["打球", "踢球", "玩球"]),
            entry("Hb02A01", &["打球", "击球", "拍球"]), // 打球 is ambiguous: not a candidate
            entry("Ia01A01", &["下雨", "降雨", "落雨"]),
        ];
        let lex =
            MorphemeLexicon::from_jieba("桌 9 n\n子 9 ng\n下 9 f\n雨 9 n\n下雨 50 v\n雨伞 90 n\n")
                .expect("lex");
        let mut sents = Vec::new();
        for i in 0..6 {
            sents.push(format!("我们把书放在桌子上第{i}次"));
            sents.push(format!("今天下雨了我们在家第{i}次"));
            // 下雨 is not a word here: 雨伞 crosses its end and is more frequent
            sents.push(format!("他拿起桌下雨伞第{i}次"));
        }
        sents.push("桌子旁边在下雨".into()); // both words: used by neither
        (cilin, lex, sents)
    }

    #[test]
    fn pseudo_words_are_balanced_and_hide_the_real_word() {
        let (cilin, lex, sents) = toy();
        let cfg = BuildConfig {
            min_contexts: 3,
            max_contexts: 4,
            ..BuildConfig::default()
        };
        let (inst, stats) = build_pseudo_words(&cilin, &lex, &sents, &cfg).expect("build");
        assert_eq!(stats.ambiguous_words, 1);
        assert_eq!(stats.pairs, 1);
        assert_eq!(inst.len(), 8);
        assert_eq!(inst.iter().filter(|i| i.gold == 0).count(), 4);
        for i in &inst {
            assert_eq!(i.surface, "〈下雨|桌子〉");
            assert!(i.context.contains(&i.surface));
            assert!(!i.context.contains("桌子上") && !i.context.contains("天下雨"));
            assert!(!i.context.contains("伞"), "{}", i.context);
            let p = i.pairs();
            assert_eq!(p.iter().map(|r| r.label as usize).sum::<usize>(), 1);
            assert_eq!(p[i.gold].definition, i.senses[i.gold].definition);
        }
        // Definitions are the sense's word, then the other synonyms of its code.
        assert_eq!(inst[0].senses[1].definition, "桌子：台子、案子、几子");
        let bare = BuildConfig {
            definition_with_word: false,
            ..cfg.clone()
        };
        let (plain, _) = build_pseudo_words(&cilin, &lex, &sents, &bare).expect("build");
        assert_eq!(plain[0].senses[1].definition, "台子、案子、几子");
        // Without the boundary check the 雨伞 sentences count for 下雨.
        let loose = BuildConfig {
            word_boundaries: false,
            max_contexts: 20,
            ..cfg.clone()
        };
        let (all, _) = build_pseudo_words(&cilin, &lex, &sents, &loose).expect("build");
        assert!(all.iter().any(|i| i.context.contains("伞")));
        assert_eq!(formation_name(inst[0].senses[1].formation), Some("后缀"));
        assert_eq!(formation_name(inst[0].senses[0].formation), Some("01"));
    }

    #[test]
    fn tsv_round_trips_and_rejects_bad_rows() {
        let rows = vec![
            PairRow {
                context: "我们把书放在〈下雨|桌子〉上".into(),
                definition: "台子、案子".into(),
                label: 1,
                formation: 3,
            },
            PairRow {
                context: "c".into(),
                definition: "d".into(),
                label: 0,
                formation: 15,
            },
        ];
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("train.tsv");
        write_tsv(&p, &rows).expect("write");
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.starts_with("context\tdefinition\tlabel\tformation\n"));
        assert!(text.contains("\t后缀\n") && text.contains("\t00\n"));
        assert_eq!(read_tsv(&p).expect("read"), rows);
        std::fs::write(&p, "context\tdefinition\tlabel\tformation\na\tb\t1\n").expect("w");
        assert!(matches!(read_tsv(&p), Err(Error::Format { line: 2, .. })));
        std::fs::write(&p, "x\n").expect("w");
        assert!(matches!(read_tsv(&p), Err(Error::Format { line: 1, .. })));
        let mut bad = rows.clone();
        bad[0].context.push('\t');
        assert!(write_tsv(&p, &bad).is_err());
    }

    #[test]
    fn instance_accuracy_ranks_the_candidates_of_each_instance() {
        let (cilin, lex, sents) = toy();
        let cfg = BuildConfig {
            min_contexts: 3,
            max_contexts: 4,
            ..BuildConfig::default()
        };
        let (inst, _) = build_pseudo_words(&cilin, &lex, &sents, &cfg).expect("build");
        let oracle: Vec<f64> = inst
            .iter()
            .flat_map(|i| i.pairs().into_iter().map(|r| f64::from(r.label)))
            .collect();
        assert_eq!(instance_accuracy(&inst, &oracle).expect("acc"), 1.0);
        let inverted: Vec<f64> = oracle.iter().map(|s| 1.0 - s).collect();
        assert_eq!(instance_accuracy(&inst, &inverted).expect("acc"), 0.0);
        // Ties go to the first candidate: right exactly for the instances whose gold is 0.
        let flat = vec![0.5; oracle.len()];
        let first = inst.iter().filter(|i| i.gold == 0).count() as f64 / inst.len() as f64;
        assert_eq!(instance_accuracy(&inst, &flat).expect("acc"), first);
        assert!(instance_accuracy(&inst, &oracle[1..]).is_err());
        assert!(instance_accuracy(&[], &[]).is_err());
    }

    #[test]
    fn splits_partition_the_instances() {
        let (cilin, lex, sents) = toy();
        let cfg = BuildConfig {
            min_contexts: 3,
            max_contexts: 5,
            ..BuildConfig::default()
        };
        let (inst, _) = build_pseudo_words(&cilin, &lex, &sents, &cfg).expect("build");
        let n = inst.len();
        let (a, b, c) = split(inst, 0.6, 0.2, 1);
        assert_eq!(a.len() + b.len() + c.len(), n);
        assert_eq!(a.len(), 6);
    }

    #[test]
    fn the_pretraining_passages_hold_no_held_out_sentence() {
        let (cilin, lex, sents) = toy();
        let passages: Vec<String> = sents.chunks(3).map(|c| c.join("。")).collect();
        let (inst, _) = build_pseudo_words(
            &cilin,
            &lex,
            &sentences(&passages),
            &BuildConfig {
                min_contexts: 1,
                ..BuildConfig::default()
            },
        )
        .expect("build");
        assert!(inst.len() >= 4);
        assert!(inst.iter().all(|i| !i.source.is_empty()));
        let (held, kept) = inst.split_at(inst.len() / 2);
        let pre = passages_without(&passages, held);
        for i in held {
            assert!(pre.iter().all(|p| !p.contains(&i.source)), "{}", i.source);
        }
        // the other instances' sentences stay unless they are also held out
        for i in kept {
            if held.iter().all(|h| h.source != i.source) {
                assert!(pre.iter().any(|p| p.contains(&i.source)), "{}", i.source);
            }
        }
        // nothing held out: every passage unchanged
        assert_eq!(passages_without(&passages, &[]), passages);
    }
}
