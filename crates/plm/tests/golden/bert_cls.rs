//! A tiny random HF BertForSequenceClassification gives transformers' logits on sentence pairs
//! (token types, padding); fixture `fixtures/bert_cls_tiny`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use burn::prelude::*;
use plm::bert::BertClassifier;
use plm::safetensors::{read_f32, read_i64};

#[test]
fn tiny_bert_classifier_matches_transformers_on_pairs() {
    let d = crate::device();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/bert_cls_tiny");
    let model = BertClassifier::load_hf(&root.join("model"), &d)
        .unwrap()
        .valid();
    let exp = root.join("expected.safetensors");
    let t = |name: &str| {
        let v = read_i64(&exp, name).unwrap();
        Tensor::<2, Int>::from_data(TensorData::new(v.data, [v.shape[0], v.shape[1]]), &d)
    };
    let logits = model.forward(
        t("input_ids"),
        Some(t("token_type_ids")),
        Some(t("attention_mask")),
    );
    assert_eq!(logits.dims(), [2, 3]);
    let got = logits.into_data().try_to_vec::<f32>().unwrap();
    let want = read_f32(&exp, "logits").unwrap().data;
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "logits differ by {diff}");
}
