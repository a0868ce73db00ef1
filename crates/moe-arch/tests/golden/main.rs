//! Golden numerics of moe-arch against PyTorch / HF transformers (`fixtures/`), one test binary.
//!
//! The device comes from `PAPERS_DEVICE` (`trainer::device::from_env`, default flex), so the same
//! checks run on a GPU: `PAPERS_DEVICE=wgpu cargo test --release -p moe-arch --features
//! trainer/wgpu --test golden`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deepseek_bf16;
mod deepseek_v1;
mod deepseek_v2;
mod moe_layer;

/// The device under test: `PAPERS_DEVICE` or flex.
pub fn device() -> burn::prelude::Device {
    trainer::device::from_env()
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// Largest absolute difference of two equally long value lists (lengths checked first).
pub use testkit::max_abs_diff as max_diff;
