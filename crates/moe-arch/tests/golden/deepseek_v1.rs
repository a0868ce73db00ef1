//! A tiny random DeepSeekMoE v1 (Llama attention + MoE MLPs, layer 0 dense) loads from HF-named
//! safetensors and gives the reference logits (fixture `fixtures/deepseek_v1_tiny`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use burn::prelude::*;
use moe_arch::Dispatch;
use moe_arch::deepseek::{DeepseekLm, Ffn};
use plm::safetensors::{read_f32, read_i64};

use crate::max_diff;

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
    let diff = max_diff(&logits.into_data().try_to_vec::<f32>().unwrap(), &want);
    assert!(diff < 1e-4, "padded dispatch: logits differ by {diff}");
    let out = model.forward(x, None).unwrap();
    let diff = max_diff(&out.logits.into_data().try_to_vec::<f32>().unwrap(), &want);
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

#[test]
fn a_v1_checkpoint_resharded_in_bf16_loads_as_its_bf16_rounding() {
    // The fixture re-published as the hub does (bf16, 3 shards) gives exactly what the f32
    // checkpoint gives once its weights are rounded to bf16.
    let d = crate::device();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/deepseek_v1_tiny/model");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let w = plm::checkpoint::Weights::open(&src).unwrap();
    let names: Vec<String> = w.names().map(str::to_string).collect();
    let mut map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(3)).enumerate() {
        let file = format!("model-0000{}-of-00003.safetensors", i + 1);
        let tensors: Vec<plm::safetensors::RawTensor> = part
            .iter()
            .map(|n| {
                let t = read_f32(&w.shards[0].path, n).unwrap();
                let bytes = t
                    .data
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect();
                map.insert(n.clone(), file.clone().into());
                (n.clone(), "BF16".to_string(), t.shape, bytes)
            })
            .collect();
        std::fs::write(
            tmp.path().join(&file),
            plm::safetensors::to_bytes_raw(&tensors),
        )
        .unwrap();
    }
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    let sharded = DeepseekLm::load_hf(tmp.path(), &d).unwrap();
    let rounded = trainer::params::cast_where(
        trainer::params::cast_where(
            DeepseekLm::load_hf(&src, &d).unwrap(),
            burn::tensor::DType::BF16,
            |_| true,
        ),
        burn::tensor::DType::F32,
        |_| true,
    );
    let x = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 2, 7], [1, 5]), &d);
    let a = sharded
        .forward(x.clone(), None)
        .unwrap()
        .logits
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let b = rounded
        .forward(x, None)
        .unwrap()
        .logits
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert!(max_diff(&a, &b) < 1e-6);
}
