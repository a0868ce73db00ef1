//! Tiny random HF Llama models (GQA, untied head; plain, linear and llama3 RoPE scaling) load from
//! safetensors and give transformers' logits (fixture: `fixtures/llama_tiny`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use burn::prelude::*;
use plm::llama::Llama;
use plm::safetensors::{read_f32, read_i64};

#[test]
fn tiny_llamas_match_transformers_with_and_without_rope_scaling() {
    let d = crate::device();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/llama_tiny");
    for variant in ["plain", "linear", "llama3"] {
        let dir = root.join(variant);
        let model = Llama::load_hf(&dir, &d).unwrap();
        let exp = dir.join("expected.safetensors");
        let ids = read_i64(&exp, "input_ids").unwrap();
        let x = Tensor::<2, Int>::from_data(
            TensorData::new(ids.data, [ids.shape[0], ids.shape[1]]),
            &d,
        );
        let got = model
            .forward(x)
            .logits
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let want = read_f32(&exp, "logits").unwrap().data;
        let diff = crate::max_diff(&got, &want);
        assert!(diff < 1e-4, "{variant}: logits differ by {diff}");
    }
}
