//! Tiny random DeepSeek-V2 models made with transformers' native `deepseek_v2` (MLA with
//! decoupled interleaved RoPE; YaRN with mscale; low-rank queries with group-limited routing)
//! give the same logits (fixture `fixtures/deepseek_v2_tiny`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use burn::prelude::*;
use moe_arch::deepseek_v2::DeepseekV2Lm;
use plm::safetensors::{read_f32, read_i64};

#[test]
fn tiny_deepseek_v2_models_match_transformers() {
    let d = crate::device();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/deepseek_v2_tiny");
    for variant in ["yarn", "qlora"] {
        let dir = root.join(variant);
        let model = DeepseekV2Lm::load_hf(&dir, &d).unwrap();
        let exp = dir.join("expected.safetensors");
        let ids = read_i64(&exp, "input_ids").unwrap();
        let x = Tensor::<2, Int>::from_data(
            TensorData::new(ids.data, [ids.shape[0], ids.shape[1]]),
            &d,
        );
        let logits = model.forward(x, None).unwrap().logits;
        let got = logits.into_data().try_to_vec::<f32>().unwrap();
        let want = read_f32(&exp, "logits").unwrap().data;
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{variant}: max |logit diff| {diff:e}");
        assert!(diff < 1e-4, "{variant}: logits differ by {diff}");
    }
}
