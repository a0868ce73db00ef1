//! Small builders shared by the architectures: HF-style normal initialisation and the reading
//! of an HF checkpoint folder's `config.json`.

use std::path::Path;

use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::prelude::*;
use serde::de::DeserializeOwned;

use crate::Error;

/// Builds layers with weights drawn from `N(0, std²)` (HF's `initializer_range`).
#[derive(Clone, Debug)]
pub struct Init<'a> {
    /// Standard deviation of the weights.
    pub std: f64,
    /// Device.
    pub device: &'a Device,
}

impl Init<'_> {
    fn normal(&self) -> Initializer {
        Initializer::Normal {
            mean: 0.0,
            std: self.std,
        }
    }

    /// `in → out` linear layer, with or without bias.
    pub fn linear(&self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        LinearConfig::new(d_in, d_out)
            .with_bias(bias)
            .with_initializer(self.normal())
            .init(self.device)
    }

    /// `n × d` embedding table.
    pub fn embedding(&self, n: usize, d: usize) -> Embedding {
        EmbeddingConfig::new(n, d)
            .with_initializer(self.normal())
            .init(self.device)
    }

    /// LayerNorm over `d` features.
    pub fn layer_norm(&self, d: usize, eps: f64) -> LayerNorm {
        LayerNormConfig::new(d).with_epsilon(eps).init(self.device)
    }
}

/// `x` in `dtype` (no copy when it already is). Weights held in bf16/f16 make activations that
/// dtype; the few places that compute in f32 whatever the weights (attention softmax, routers)
/// go through this.
pub fn to_dtype<const D: usize>(x: Tensor<D>, dtype: burn::tensor::DType) -> Tensor<D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// Logits of a head tied to an embedding matrix: `h · Wᵀ` for `h` `[batch, seq, d]` and
/// `W` `[vocab, d]`, as one 2-D product over the strided transpose of `W`. Spelling it
/// `h.matmul(W.transpose().unsqueeze_dim(0))` makes flex copy the whole transposed matrix on
/// every call (the unsqueeze of a transposed view is a reshape that needs contiguous data),
/// which was half of a SmolLM2 decoding step.
pub fn tied_logits(h: Tensor<3>, w: Tensor<2>) -> Tensor<3> {
    let [b, s, d] = h.dims();
    let vocab = w.dims()[0];
    h.reshape([b * s, d])
        .matmul(w.transpose())
        .reshape([b, s, vocab])
}

/// Checks that `n_heads` divides `d_model`.
pub fn check_heads(d_model: usize, n_heads: usize) -> crate::Result<()> {
    if n_heads == 0 || !d_model.is_multiple_of(n_heads) {
        return Err(Error::InvalidConfig(format!(
            "d_model {d_model} is not divisible by n_heads {n_heads}"
        )));
    }
    Ok(())
}

/// RoPE base and scaling entry of an HF config, across transformers versions: `rope_theta` and
/// `rope_scaling` (< 5) or `rope_parameters` (≥ 5, holding both). Returns θ (default 10000),
/// the scaling entry if any, and its type (`"default"` when none).
pub fn rope_settings<'a>(
    rope_theta: Option<f64>,
    rope_scaling: Option<&'a serde_json::Value>,
    rope_parameters: Option<&'a serde_json::Value>,
) -> (f64, Option<&'a serde_json::Value>, String) {
    let params = rope_parameters.filter(|v| !v.is_null());
    let theta = rope_theta
        .or_else(|| params.and_then(|p| p["rope_theta"].as_f64()))
        .unwrap_or(10000.0);
    let scaling = rope_scaling.filter(|v| !v.is_null()).or(params);
    let kind = scaling
        .and_then(|v| v["rope_type"].as_str().or(v["type"].as_str()))
        .unwrap_or("default")
        .to_string();
    (theta, scaling, kind)
}

/// Reads `dir/config.json` into an HF config type and opens the folder's weights (one
/// `model.safetensors` or a sharded index), every header checked.
pub fn read_hf_folder<T: DeserializeOwned>(
    dir: &Path,
) -> crate::Result<(T, crate::checkpoint::Weights)> {
    let hf = crate::checkpoint::read_config(dir)?;
    let weights = crate::checkpoint::Weights::open(dir)?;
    Ok((hf, weights))
}
