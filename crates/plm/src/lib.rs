//! Pretrained backbones for the paper crates.
//!
//! - [`llama`]: the Llama family — Llama, Mistral (sliding window, explicit `head_dim`), Qwen2
//!   (q/k/v biases, tied embeddings) — with a KV cache and attention hooks; HF folders and llama
//!   GGUF files (`llama::Llama::load_decoder`, feature `tokenizers`, loads either with its tokenizer).
//! - [`bert`] (HF safetensors, ONNX initializers) and [`gpt2`].
//! - [`checkpoint`]: checkpoints as they are published — one `model.safetensors` or a sharded
//!   index, tensors stored as F32/F16/BF16, read in chunks; the parameters held in f32 (default)
//!   or bf16/f16 ([`checkpoint::LoadDtype`]); typed errors naming a missing shard, a misplaced or
//!   missing tensor, a shape that disagrees with `config.json`; and the one place that maps a
//!   checkpoint path to its architecture ([`checkpoint::Architecture::detect`]).
//! - [`causal`]: the causal-LM trait every decoder here implements (logits and attentions under
//!   hooks, query/key vectors), for analyses that work with any of them.
//! - [`hooks`]: one attention-hook interface (additive bias, post-softmax scale, dL/dA probes).
//! - [`kernels`]: CPU kernels for hot paths on flex (exact GELU, SwiGLU, packed linear layers with
//!   GELU or add & norm epilogues, multi-head attention on the projections' rows, GGUF-quantised
//!   matrix products), with burn's ops as the fallback on every other device and under autodiff.
//! - `hello_lm` (feature `experiment`): the `hello-lm` experiment (a byte-level Llama trained from
//!   scratch).
//!
//! Features: none by default (the models, loaders and hooks). `tokenizers` adds the tokenizers
//! that come with checkpoints (HF tokenizers with the onig C library); `experiment` adds `hello_lm`
//! and its plots.
//!
//! Dtypes: with weights held in bf16, embeddings, norms, projections and the residual stream are
//! bf16 (burn-flex's bf16 kernels) while attention scores, hooks and softmax run in f32 and the
//! RoPE tables are cast to the activations' dtype; logits come out in bf16. f32 is exact against
//! transformers' f32 forward of the same weights (1e-4); bf16 differs by about 1 % of the logit
//! scale on the tiny golden models.
//!
//! ```
//! use burn::prelude::*;
//! use plm::llama::LlamaConfig;
//! let device = Device::flex();
//! let model = LlamaConfig::new(256, 32, 2, 4, 2, 64).init(&device)?;
//! let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![72i64, 105], [1, 2]), &device);
//! let out = model.forward(tokens);
//! assert_eq!(out.logits.dims(), [1, 2, 256]);
//! # Ok::<(), plm::Error>(())
//! ```

pub mod bert;
pub mod causal;
pub mod checkpoint;
mod error;
pub mod gguf;
pub mod gpt2;
#[cfg(feature = "experiment")]
pub mod hello_lm;
pub mod hooks;
pub mod kernels;
pub mod layers;
pub mod llama;
mod mha;
pub mod onnx;
pub mod safetensors;
mod sgemm;

pub use error::{Error, Result};
