//! Pretrained backbones for the paper crates.
//!
//! Today this crate holds a Llama-style causal decoder ([`llama`]: RMSNorm, rotate-half RoPE,
//! grouped-query attention, SwiGLU, tied embeddings) whose forward pass returns the attention
//! probabilities of every layer, and the `hello-lm` experiment ([`hello_lm`]) that trains it from
//! scratch on real news text through the shared trainer. BERT, GPT-2, HF safetensors / GGUF /
//! ONNX weight loading and KV caching are the subject of the backbone issue and build on the same
//! module layout (field names follow HF's `LlamaForCausalLM`).
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
pub mod checkpoint;
mod error;
pub mod gguf;
pub mod gpt2;
pub mod hello_lm;
pub mod hooks;
pub mod layers;
pub mod llama;
pub mod onnx;
pub mod safetensors;

pub use error::{Error, Result};
