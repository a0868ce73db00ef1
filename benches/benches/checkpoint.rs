//! Loading a checkpoint as the hub publishes it: a Llama-architecture HF folder (vocab 32000,
//! hidden 1024, 8 layers, 16 / 4 heads, SwiGLU 2816, untied head: 167 M parameters) stored in
//! bf16 and sharded in two files (334 MB), written to a temporary folder once. Measured: load
//! time with the weights held in bf16 and in f32; criterion's throughput is bytes on disk per
//! second (so GB/s; its reciprocal is the load time per GB).
//!
//! `cargo bench -p benches --bench checkpoint`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plm::checkpoint::{LoadDtype, Weights};
use plm::llama::Llama;
use plm::safetensors::{RawTensor, to_bytes_raw};

const VOCAB: usize = 32000;
const D: usize = 1024;
const LAYERS: usize = 8;
const HEADS: usize = 16;
const KV: usize = 4;
const FF: usize = 2816;

fn bf16_bytes(n: usize, salt: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let v = (((i * 7919 + salt) % 2001) as f32 - 1000.0) * 2e-5;
            half::bf16::from_f32(v).to_le_bytes()
        })
        .collect()
}

fn write_folder(dir: &Path) {
    let hd = D / HEADS;
    let mut tensors: Vec<RawTensor> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| {
        let n = shape.iter().product();
        let salt = tensors.len();
        tensors.push((name, "BF16".into(), shape, bf16_bytes(n, salt)));
    };
    add("model.embed_tokens.weight".into(), vec![VOCAB, D]);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        add(format!("{p}.self_attn.q_proj.weight"), vec![HEADS * hd, D]);
        add(format!("{p}.self_attn.k_proj.weight"), vec![KV * hd, D]);
        add(format!("{p}.self_attn.v_proj.weight"), vec![KV * hd, D]);
        add(format!("{p}.self_attn.o_proj.weight"), vec![D, HEADS * hd]);
        add(format!("{p}.mlp.gate_proj.weight"), vec![FF, D]);
        add(format!("{p}.mlp.up_proj.weight"), vec![FF, D]);
        add(format!("{p}.mlp.down_proj.weight"), vec![D, FF]);
        add(format!("{p}.input_layernorm.weight"), vec![D]);
        add(format!("{p}.post_attention_layernorm.weight"), vec![D]);
    }
    add("model.norm.weight".into(), vec![D]);
    add("lm_head.weight".into(), vec![VOCAB, D]);
    let half = tensors.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [&tensors[..half], &tensors[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        for t in part.iter() {
            map.insert(t.0.clone(), file.clone().into());
        }
        std::fs::write(dir.join(&file), to_bytes_raw(part)).unwrap();
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({
            "model_type": "llama", "vocab_size": VOCAB, "hidden_size": D,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
            "num_key_value_heads": KV, "intermediate_size": FF, "tie_word_embeddings": false
        })
        .to_string(),
    )
    .unwrap();
}

fn load(c: &mut Criterion) {
    let d = benches::bench_device();
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path());
    let bytes = Weights::open(tmp.path()).unwrap().n_bytes();
    let mut g = c.benchmark_group("load_sharded_bf16_167m");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    for dtype in [LoadDtype::Bf16, LoadDtype::F32] {
        g.bench_function(format!("as_{dtype}"), |b| {
            b.iter(|| Llama::load_hf_dtype(tmp.path(), dtype, &d).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
