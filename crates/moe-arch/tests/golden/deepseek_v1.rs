//! A tiny random DeepSeekMoE v1 (Llama attention + MoE MLPs, layer 0 dense) loads from HF-named
//! safetensors and gives the reference logits (fixture `fixtures/deepseek_v1_tiny`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use burn::prelude::*;
use moe_arch::Dispatch;
use moe_arch::deepseek::{DeepseekLm, Ffn};
use plm::safetensors::{read_f32, read_i64};

fn max_diff(got: Vec<f32>, want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn tiny_deepseek_v1_matches_the_reference() {
    let d = crate::device();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/deepseek_v1_tiny");
    let model = DeepseekLm::load_hf(&root.join("model"), &d).unwrap();
    assert!(matches!(model.layers[0].mlp, Ffn::Dense(_)));
    assert!(matches!(model.layers[1].mlp, Ffn::Moe(_)));
    let exp = root.join("expected.safetensors");
    let ids = read_i64(&exp, "input_ids").unwrap();
    let x = Tensor::<2, Int>::from_data(TensorData::new(ids.data, [2, 7]), &d);
    let want = read_f32(&exp, "logits").unwrap().data;
    // both dispatch strategies give the reference logits
    let padded = model.clone().with_dispatch(Dispatch::Padded);
    let logits = padded.forward(x.clone(), None).unwrap().logits;
    let diff = max_diff(logits.into_data().try_to_vec::<f32>().unwrap(), &want);
    assert!(diff < 1e-4, "padded dispatch: logits differ by {diff}");
    let out = model.forward(x, None).unwrap();
    let diff = max_diff(out.logits.into_data().try_to_vec::<f32>().unwrap(), &want);
    assert!(diff < 1e-4, "logits differ by {diff}");
    assert_eq!(out.routing.len(), 2);
    let aux: f32 = out.aux_loss.into_scalar();
    assert!(aux > 0.0 && aux.is_finite());
}

#[test]
fn save_hf_writes_the_reference_names_and_loads_back_bit_for_bit() {
    let d = crate::device();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/deepseek_v1_tiny/model");
    let model = DeepseekLm::load_hf(&root, &d).unwrap();
    let text = std::fs::read_to_string(root.join("config.json")).unwrap();
    let cfg: moe_arch::deepseek::DeepseekHfConfig = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save_hf(&cfg, dir.path()).unwrap();
    // Same tensor names and shapes as the reference file.
    let want = plm::safetensors::read_header(&root.join("model.safetensors")).unwrap();
    let got = plm::safetensors::read_header(&dir.path().join("model.safetensors")).unwrap();
    let names = |h: &std::collections::BTreeMap<String, plm::safetensors::TensorInfo>| {
        h.iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&got), names(&want));
    let back = DeepseekLm::load_hf(dir.path(), &d).unwrap();
    let x = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 2], [1, 4]), &d);
    let a = model.forward(x.clone(), None).unwrap().logits.into_data();
    let b = back.forward(x, None).unwrap().logits.into_data();
    assert_eq!(a, b);
}
