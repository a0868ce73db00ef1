//! A tiny random HF GPT-2 (made by `fixtures/gpt2_tiny/generate.py`) gives the same logits,
//! attention probabilities and hidden states in burn.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use plm::gpt2::Gpt2;
use plm::hooks::AttentionHooks;
use plm::safetensors::{read_f32, read_i64};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gpt2_tiny")
}

fn close(got: Tensor<3>, want: &[f32], what: &str) {
    let shape = got.dims();
    testkit::assert_tensor_close(got, want, &shape, 1e-5, what);
}

#[test]
fn tiny_gpt2_matches_transformers() {
    let d = crate::device();
    let model = Gpt2::load_hf(&dir().join("model"), &d).unwrap();
    let exp = dir().join("expected.safetensors");
    let ids = read_i64(&exp, "input_ids").unwrap();
    let x =
        Tensor::<2, Int>::from_data(TensorData::new(ids.data, [ids.shape[0], ids.shape[1]]), &d);
    // The fused attention op (forward) and the step-by-step path that returns the
    // probabilities (forward_with) both match HF.
    close(
        model.forward(x.clone()).logits,
        &read_f32(&exp, "logits").unwrap().data,
        "logits (fused attention)",
    );
    let out = model.forward_with(x, &AttentionHooks::none());
    close(
        out.logits,
        &read_f32(&exp, "logits").unwrap().data,
        "logits",
    );
    assert_eq!(out.attentions.len(), model.n_layers());

    let att = read_f32(&exp, "attentions").unwrap();
    let per = att.data.len() / att.shape[0];
    for (l, a) in out.attentions.into_iter().enumerate() {
        let [b, h, q, k] = a.dims();
        close(
            a.reshape([b * h, q, k]),
            &att.data[l * per..(l + 1) * per],
            "attentions",
        );
    }
    let hid = read_f32(&exp, "hidden").unwrap();
    let per = hid.data.len() / hid.shape[0];
    assert_eq!(out.hidden_states.len(), hid.shape[0]);
    for (l, h) in out.hidden_states.into_iter().enumerate() {
        close(h, &hid.data[l * per..(l + 1) * per], "hidden states");
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir().join("model/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let src = dir().join("model/model.safetensors");
    let header = plm::safetensors::read_header(&src).unwrap();
    let kept: Vec<plm::safetensors::NamedTensor> = header
        .keys()
        .filter(|k| !k.ends_with("h.1.mlp.c_fc.weight"))
        .map(|k| {
            let t = read_f32(&src, k).unwrap();
            (k.clone(), t.shape, t.data)
        })
        .collect();
    std::fs::write(
        tmp.path().join("model.safetensors"),
        plm::safetensors::to_bytes(&kept),
    )
    .unwrap();
    let err = Gpt2::load_hf(tmp.path(), &crate::device()).err().unwrap();
    match err {
        plm::Error::MissingTensor { tensor, .. } => assert_eq!(tensor, "h.1.mlp.c_fc.weight"),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn a_tensor_of_the_wrong_shape_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir().join("model/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let src = dir().join("model/model.safetensors");
    let header = plm::safetensors::read_header(&src).unwrap();
    let tensors: Vec<plm::safetensors::NamedTensor> = header
        .keys()
        .map(|k| {
            let mut t = read_f32(&src, k).unwrap();
            if k.ends_with("h.0.mlp.c_fc.weight") {
                // [32, 128] stored as [64, 64]: same size, wrong shape.
                t.shape = vec![64, 64];
            }
            (k.clone(), t.shape, t.data)
        })
        .collect();
    std::fs::write(
        tmp.path().join("model.safetensors"),
        plm::safetensors::to_bytes(&tensors),
    )
    .unwrap();
    let err = Gpt2::load_hf(tmp.path(), &crate::device()).err().unwrap();
    let msg = err.to_string();
    match &err {
        plm::Error::ShapeMismatch {
            tensor,
            expected,
            found,
        } => {
            assert!(tensor.contains("c_fc"), "{msg}");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                ([32, 128].as_slice(), [64, 64].as_slice())
            );
        }
        other => panic!("{other}"),
    }
}
