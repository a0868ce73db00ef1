//! Llama-style causal decoder: RMSNorm, rotary position embedding (rotate-half, as HF
//! `LlamaForCausalLM`), grouped-query attention and a SwiGLU feed-forward. The same module is
//! Mistral (sliding-window attention, a `head_dim` that may differ from `hidden / heads`) and
//! Qwen2 (q/k/v biases, tied embeddings, sliding window from `max_window_layers`), set by
//! `LlamaHfConfig::to_config` from `model_type`.
//!
//! Field names follow HF's `LlamaForCausalLM`, so checkpoints map one to one:
//!
//! | HF key (safetensors)                          | GGUF tensor                 | module path                       |
//! |-----------------------------------------------|-----------------------------|-----------------------------------|
//! | `model.embed_tokens.weight`                   | `token_embd.weight`         | `embed_tokens.weight`             |
//! | `model.layers.N.self_attn.{q,k,v,o}_proj.weight` | `blk.N.attn_{q,k,v,output}.weight` | `layers.N.self_attn.{q,k,v,o}_proj.weight` |
//! | `model.layers.N.self_attn.{q,k,v,o}_proj.bias` (Qwen2: q/k/v; Llama `attention_bias`) | — | `layers.N.self_attn.*_proj.bias` |
//! | `model.layers.N.mlp.{gate,up,down}_proj.weight` | `blk.N.ffn_{gate,up,down}.weight` | `layers.N.mlp.*`            |
//! | `model.layers.N.input_layernorm.weight`       | `blk.N.attn_norm.weight`    | `layers.N.input_layernorm.gamma`  |
//! | `model.layers.N.post_attention_layernorm.weight` | `blk.N.ffn_norm.weight`  | `layers.N.post_attention_layernorm.gamma` |
//! | `model.norm.weight`                           | `output_norm.weight`        | `norm.gamma`                      |
//! | `lm_head.weight` (absent when tied)           | `output.weight`             | `lm_head.weight`                  |
//!
//! llama.cpp's converter stores the rows of `attn_q` / `attn_k` interleaved per head for its
//! pairwise RoPE (`[heads, head_dim/2, 2]` instead of HF's `[heads, 2, head_dim/2]`); the GGUF
//! loader undoes that permutation so one rotate-half RoPE serves both formats.

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use std::path::Path;
use std::sync::Arc;

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::Deserialize;

use crate::Error;
use crate::checkpoint::{LoadDtype, LoadOptions};
use crate::gguf::{Gguf, Value};
use crate::hooks::AttentionHooks;
use crate::kernels::{self, QuantMatrix};

/// Configuration of a [`Llama`] decoder.
#[derive(Config, Debug)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Number of decoder layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention); must divide `n_heads`.
    pub n_kv_heads: usize,
    /// SwiGLU inner width.
    pub d_ff: usize,
    /// RoPE base θ. Default 10000.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// Longest sequence the rotary tables are built for. Default 2048.
    #[config(default = 2048)]
    pub max_seq_len: usize,
    /// RMSNorm epsilon. Default 1e-5.
    #[config(default = 1e-5)]
    pub rms_norm_eps: f64,
    /// Share the input embedding with the output projection. Default true.
    #[config(default = true)]
    pub tie_embeddings: bool,
    /// Standard deviation of the normal initialisation of every weight matrix (HF's
    /// `initializer_range`). Default 0.02.
    #[config(default = 0.02)]
    pub initializer_range: f64,
    /// RoPE frequency scaling for context extension. Default none.
    #[config(default = "RopeScaling::None")]
    pub rope_scaling: RopeScaling,
    /// Width of one attention head when it is not `d_model / n_heads` (Mistral-Nemo's
    /// `head_dim`). Default none (`d_model / n_heads`).
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// Biases on the q, k and v projections (Qwen2; Llama's `attention_bias`). Default false.
    #[config(default = false)]
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias`). Default false.
    #[config(default = false)]
    pub o_bias: bool,
    /// Sliding-window attention (Mistral, Qwen2): a query at position `i` sees keys at
    /// positions `j` with `i - W < j ≤ i`. Default none (full causal attention).
    #[config(default = "None")]
    pub sliding_window: Option<usize>,
    /// First layer that uses the sliding window; earlier layers attend fully (Qwen2's
    /// `max_window_layers`; 0 for Mistral). Default 0.
    #[config(default = 0)]
    pub sliding_window_from: usize,
}

/// RoPE frequency scaling (HF `rope_scaling` / `rope_parameters`).
#[derive(Config, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (HF `linear`).
    Linear {
        /// Divisor.
        factor: f64,
    },
    /// Llama 3.1's band-wise scaling (HF `llama3`): low frequencies divided by `factor`, high
    /// ones kept, the band between interpolated.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length of pre-training.
        original_max_position_embeddings: f64,
    },
}

impl RopeScaling {
    /// Scales the inverse frequency of one rotary pair (HF `_compute_*_parameters`).
    pub fn scale(&self, inv_freq: f64) -> f64 {
        match *self {
            Self::None => inv_freq,
            Self::Linear { factor } => inv_freq / factor,
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                if wavelen > low_wavelen {
                    inv_freq / factor
                } else if wavelen < high_wavelen {
                    inv_freq
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
                }
            }
        }
    }
}

impl LlamaConfig {
    /// Head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.d_model / self.n_heads.max(1))
    }

    /// Checks divisibility constraints.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.vocab_size == 0 || self.d_model == 0 || self.n_heads == 0 || self.n_kv_heads == 0 {
            return bad("vocab_size, d_model, n_heads and n_kv_heads must be positive".into());
        }
        if self.head_dim.is_none() {
            crate::layers::check_heads(self.d_model, self.n_heads)?;
        }
        if self.head_dim() == 0 {
            return bad("head_dim must be positive".into());
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window must be positive".into());
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "n_heads {} is not divisible by n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        Ok(())
    }

    /// Builds the decoder with random weights on `device`.
    pub fn init(&self, device: &Device) -> crate::Result<Llama> {
        self.validate()?;
        let hd = self.head_dim();
        let init = crate::layers::Init {
            std: self.initializer_range,
            device,
        };
        let linear = |i: usize, o: usize| init.linear(i, o, false);
        let layers = (0..self.n_layers)
            .map(|_| DecoderLayer {
                self_attn: Attention::with_layout(
                    self.d_model,
                    self.n_heads,
                    self.n_kv_heads,
                    hd,
                    (self.qkv_bias, self.o_bias),
                    &init,
                ),
                mlp: SwiGlu {
                    gate_proj: linear(self.d_model, self.d_ff),
                    up_proj: linear(self.d_model, self.d_ff),
                    down_proj: linear(self.d_ff, self.d_model),
                },
                input_layernorm: RmsNormConfig::new(self.d_model)
                    .with_epsilon(self.rms_norm_eps)
                    .init(device),
                post_attention_layernorm: RmsNormConfig::new(self.d_model)
                    .with_epsilon(self.rms_norm_eps)
                    .init(device),
            })
            .collect();
        let lm_head = (!self.tie_embeddings).then(|| linear(self.d_model, self.vocab_size));
        Ok(Llama {
            embed_tokens: init.embedding(self.vocab_size, self.d_model),
            layers,
            norm: RmsNormConfig::new(self.d_model)
                .with_epsilon(self.rms_norm_eps)
                .init(device),
            lm_head,
            rope: Rope::new(hd, self.max_seq_len, self.rope_theta, &self.rope_scaling),
            sliding_window: self.sliding_window.unwrap_or(0),
            sliding_window_from: self.sliding_window_from,
            quant: None,
        })
    }
}

/// Rotary tables, computed on the host and moved to the device per forward.
#[derive(Module, Debug)]
pub struct Rope {
    head_dim: usize,
    max_seq_len: usize,
    theta: f64,
    // RopeScaling flattened into constants: kind 0 none, 1 linear, 2 llama3.
    scale_kind: usize,
    scale_factor: f64,
    scale_low: f64,
    scale_high: f64,
    scale_orig: f64,
}

impl Rope {
    /// Rotary embedding for heads of `head_dim`, base `theta`, optional scaling.
    pub fn new(head_dim: usize, max_seq_len: usize, theta: f64, scaling: &RopeScaling) -> Self {
        let (scale_kind, scale_factor, scale_low, scale_high, scale_orig) = match *scaling {
            RopeScaling::None => (0, 1.0, 0.0, 0.0, 0.0),
            RopeScaling::Linear { factor } => (1, factor, 0.0, 0.0, 0.0),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => (
                2,
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            ),
        };
        Self {
            head_dim,
            max_seq_len,
            theta,
            scale_kind,
            scale_factor,
            scale_low,
            scale_high,
            scale_orig,
        }
    }

    fn scaling(&self) -> RopeScaling {
        match self.scale_kind {
            1 => RopeScaling::Linear {
                factor: self.scale_factor,
            },
            2 => RopeScaling::Llama3 {
                factor: self.scale_factor,
                low_freq_factor: self.scale_low,
                high_freq_factor: self.scale_high,
                original_max_position_embeddings: self.scale_orig,
            },
            _ => RopeScaling::None,
        }
    }

    /// `cos` and `sin` tables `[seq, head_dim]` for positions `start..start + seq`, laid out as
    /// HF's rotate-half convention expects (the half-width table repeated twice).
    pub fn tables(&self, start: usize, seq: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let half = self.head_dim / 2;
        let scaling = self.scaling();
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| scaling.scale(self.theta.powf(-((2 * i) as f64) / self.head_dim as f64)))
            .collect();
        let mut cos = Vec::with_capacity(seq * self.head_dim);
        let mut sin = Vec::with_capacity(seq * self.head_dim);
        for pos in start..start + seq {
            for _ in 0..2 {
                for &f in &inv_freq {
                    let angle = pos as f64 * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let shape = [seq, self.head_dim];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }

    /// Applies the rotation to `x` `[batch, heads, seq, head_dim]`.
    pub fn apply(&self, x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().slice(s![.., .., .., 0..half]);
        let x2 = x.clone().slice(s![.., .., .., half..d]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3); // [b, h, s, d]
        let cos = cos.reshape([1, 1, s, d]).expand([b, h, s, d]);
        let sin = sin.reshape([1, 1, s, d]).expand([b, h, s, d]);
        x * cos + rotated * sin
    }
}

/// Multi-head attention with grouped key/value heads.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
}

impl Attention {
    /// Q/K/V/O projections without bias for `n_heads` query and `n_kv_heads` key/value heads.
    pub fn new(
        d_model: usize,
        n_heads: usize,
        n_kv_heads: usize,
        init: &crate::layers::Init<'_>,
    ) -> Self {
        Self::with_layout(
            d_model,
            n_heads,
            n_kv_heads,
            d_model / n_heads,
            (false, false),
            init,
        )
    }

    /// Q/K/V/O projections with heads of `head_dim` and `(qkv, o)` biases.
    pub fn with_layout(
        d_model: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        (qkv_bias, o_bias): (bool, bool),
        init: &crate::layers::Init<'_>,
    ) -> Self {
        let hd = head_dim;
        Self {
            q_proj: init.linear(d_model, n_heads * hd, qkv_bias),
            k_proj: init.linear(d_model, n_kv_heads * hd, qkv_bias),
            v_proj: init.linear(d_model, n_kv_heads * hd, qkv_bias),
            o_proj: init.linear(n_heads * hd, d_model, o_bias),
            n_heads,
            n_kv_heads,
        }
    }

    /// Query heads.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// # Shapes
    /// `x` `[batch, seq, d_model]`, `past` K/V `[batch, kv_heads, past, head_dim]`, `mask`
    /// `[batch, heads, seq, past + seq]` (true = hide; `None`: every key visible) → (output
    /// `[batch, seq, d_model]`, attention `[batch, heads, seq, past + seq]` unless the hooks skip
    /// it, this call's full K/V including `past`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        cos: Tensor<2>,
        sin: Tensor<2>,
        mask: Option<Tensor<4, Bool>>,
        past: Option<(Tensor<4>, Tensor<4>)>,
        hooks: &AttentionHooks,
        layer: usize,
    ) -> (Tensor<3>, Option<Tensor<4>>, (Tensor<4>, Tensor<4>)) {
        self.forward_q(x, rope, (cos, sin), mask, past, hooks, layer, None)
    }

    /// [`Attention::forward`] with the projections' quantised weights, when held.
    #[allow(clippy::too_many_arguments)]
    fn forward_q(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        (cos, sin): (Tensor<2>, Tensor<2>),
        mask: Option<Tensor<4, Bool>>,
        past: Option<(Tensor<4>, Tensor<4>)>,
        hooks: &AttentionHooks,
        layer: usize,
        quant: Option<&LayerQuant>,
    ) -> (Tensor<3>, Option<Tensor<4>>, (Tensor<4>, Tensor<4>)) {
        let [b, s, _] = x.dims();
        let hd = self.q_proj.weight.dims()[1] / self.n_heads;
        let qm = |i: usize| quant.and_then(|q| q[i].as_ref());
        let heads = |t: Tensor<3>, n: usize| t.reshape([b, s, n, hd]).swap_dims(1, 2); // [b, n, s, hd]
        let q = heads(project(&self.q_proj, qm(0), x.clone()), self.n_heads);
        let k = heads(project(&self.k_proj, qm(1), x.clone()), self.n_kv_heads);
        let v = heads(project(&self.v_proj, qm(2), x), self.n_kv_heads);
        let q = rope.apply(q, cos.clone(), sin.clone());
        let k = rope.apply(k, cos, sin);
        let (k, v) = match past {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        }; // [b, kv, t, hd]
        let t = k.dims()[2];
        let group = self.n_heads / self.n_kv_heads;
        let repeat = |x: Tensor<4>| {
            if group == 1 {
                x
            } else {
                // [b, kv, t, hd] -> [b, kv, group, t, hd] -> [b, heads, t, hd]
                x.unsqueeze_dim::<5>(2)
                    .expand([b, self.n_kv_heads, group, t, hd])
                    .reshape([b, self.n_heads, t, hd])
            }
        };
        let (kr, vr) = (repeat(k.clone()), repeat(v.clone()));
        let (ctx, probs) = hooks.attend(layer, q, kr, vr, mask); // [b, h, s, hd]
        let ctx = ctx.swap_dims(1, 2).reshape([b, s, self.n_heads * hd]);
        (project(&self.o_proj, qm(3), ctx), probs, (k, v))
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct SwiGlu {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
}

impl SwiGlu {
    /// # Shapes
    /// `[batch, seq, d_model]` → `[batch, seq, d_model]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_q(x, None)
    }

    /// [`SwiGlu::forward`] with the quantised weights of a [`LayerQuant`], when held.
    fn forward_q(&self, x: Tensor<3>, quant: Option<&LayerQuant>) -> Tensor<3> {
        let qm = |i: usize| quant.and_then(|q| q[i].as_ref());
        let g = project(&self.gate_proj, qm(4), x.clone());
        let h = kernels::silu_mul(g, project(&self.up_proj, qm(5), x));
        project(&self.down_proj, qm(6), h)
    }
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Attention.
    pub self_attn: Attention,
    /// Feed-forward.
    pub mlp: SwiGlu,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the feed-forward.
    pub post_attention_layernorm: RmsNorm,
}

/// What a forward pass returns.
#[derive(Debug)]
pub struct LlamaOutput {
    /// Next-token logits `[batch, seq, vocab]`.
    pub logits: Tensor<3>,
    /// Attention probabilities per layer (after hooks), `[batch, heads, seq, past + seq]`;
    /// empty when the hooks skip them ([`AttentionHooks::fast`], what [`Llama::forward`] uses).
    pub attentions: Vec<Tensor<4>>,
    /// Embedding output and every layer's output: `n_layers + 1` tensors `[batch, seq, d_model]`.
    pub hidden_states: Vec<Tensor<3>>,
    /// Keys and values per layer after RoPE, `[batch, kv_heads, past + seq, head_dim]`.
    pub kv: Vec<(Tensor<4>, Tensor<4>)>,
}

/// Keys and values of the tokens seen so far, for incremental decoding.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<(Tensor<4>, Tensor<4>)>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys (and values) held per layer: `len()` unless [`KvCache::retain`] dropped some.
    pub fn n_keys(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Repeats a batch-1 cache `n` times along the batch axis, so `n` continuations of one
    /// prefix are decoded together after a single prefill. Errors unless the batch is 1.
    pub fn repeat_batch(&self, n: usize) -> crate::Result<Self> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for (k, v) in &self.layers {
            let [b, h, t, d] = k.dims();
            if b != 1 {
                return Err(Error::ShapeMismatch {
                    tensor: "KvCache keys (repeat_batch needs batch 1)".into(),
                    expected: vec![1, h, t, d],
                    found: vec![b, h, t, d],
                });
            }
            let [_, hv, tv, dv] = v.dims();
            layers.push((
                k.clone().expand([n, h, t, d]),
                v.clone().expand([n, hv, tv, dv]),
            ));
        }
        Ok(Self {
            layers,
            len: self.len,
        })
    }

    /// Keeps only the batch rows `rows` (in that order), e.g. the sequences still being decoded.
    pub fn select_batch(&self, rows: &[usize]) -> Self {
        self.select(0, rows)
    }

    /// The cache with only the indices `idx` along axis `dim` of every layer's keys and values.
    fn select(&self, dim: usize, idx: &[usize]) -> Self {
        let Some((k0, _)) = self.layers.first() else {
            return self.clone();
        };
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(
                idx.iter().map(|&p| p as i64).collect::<Vec<_>>(),
                [idx.len()],
            ),
            &k0.device(),
        );
        Self {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone().select(dim, idx.clone()),
                        v.clone().select(dim, idx.clone()),
                    )
                })
                .collect(),
            len: self.len,
        }
    }

    /// Keeps only the cached positions `keep` (indices into the cached keys) in every layer.
    /// The position counter is unchanged, so new tokens continue after the full context
    /// (anchor-only context compression).
    pub fn retain(&self, keep: &[usize]) -> Self {
        self.select(2, keep)
    }
}

/// Llama-style causal LM.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding.
    pub embed_tokens: Embedding,
    /// Decoder blocks.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection (absent when tied to `embed_tokens`).
    pub lm_head: Option<Linear>,
    rope: Rope,
    /// Sliding window W (0: none).
    sliding_window: usize,
    /// First layer with the sliding window.
    sliding_window_from: usize,
    /// GGUF blocks of the linear weights for decoding ([`Llama::with_quantized`]).
    #[module(skip)]
    quant: Option<Arc<QuantWeights>>,
}

/// Projections per decoder layer in [`QuantWeights`]: q, k, v, o, gate, up, down.
type LayerQuant = [Option<QuantMatrix>; 7];

/// The linear weights of a GGUF checkpoint kept in their block format (see
/// [`Llama::with_quantized`]). A projection whose type the kernel does not take (F32, F16,
/// Q6_K) is `None` and runs in f32.
#[derive(Clone, Debug, Default)]
pub struct QuantWeights {
    layers: Vec<LayerQuant>,
    head: Option<QuantMatrix>,
}

impl QuantWeights {
    /// Projections held quantised, of all (7 per layer and the output head).
    pub fn count(&self) -> (usize, usize) {
        let held = self
            .layers
            .iter()
            .flatten()
            .chain(std::iter::once(&self.head))
            .filter(|m| m.is_some())
            .count();
        (held, self.layers.len() * 7 + 1)
    }
}

/// Activation rows up to which a projection with quantised weights takes the quantised kernel
/// (decoding steps, small batched decodes, short prompts); longer inputs run the f32 GEMM,
/// which is faster once each weight is reused across many rows.
pub const QUANT_MAX_ROWS: usize = 16;

/// `x · Wᵀ + b` through the quantised kernel when it applies, else the f32 layer.
fn project(lin: &Linear, q: Option<&QuantMatrix>, x: Tensor<3>) -> Tensor<3> {
    if let Some(w) = q {
        let bias = lin.bias.as_ref().map(|b| b.val());
        if let Some(y) = kernels::linear_quant(&x, w, bias.as_ref(), QUANT_MAX_ROWS) {
            return y;
        }
    }
    kernels::linear(lin, x)
}

impl Llama {
    /// Number of decoder layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Attention heads per layer.
    pub fn n_heads(&self) -> usize {
        self.layers.first().map_or(0, |l| l.self_attn.n_heads())
    }

    /// # Shapes
    /// `tokens` `[batch, seq]` → logits `[batch, seq, vocab]`.
    ///
    /// Runs the fused attention op and returns no `attentions`; [`Llama::forward_with`] with
    /// [`AttentionHooks::none`] returns them.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> LlamaOutput {
        self.forward_with(tokens, &AttentionHooks::fast(), None)
    }

    /// Forward pass with attention hooks and, optionally, a KV cache: `tokens` are the new
    /// tokens, placed after the `cache.len()` cached ones, and the cache is extended by them.
    ///
    /// # Shapes
    /// `tokens` `[batch, seq]` → logits `[batch, seq, vocab]`.
    pub fn forward_with(
        &self,
        tokens: Tensor<2, Int>,
        hooks: &AttentionHooks,
        mut cache: Option<&mut KvCache>,
    ) -> LlamaOutput {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        // Positions continue after everything seen; the keys held may be fewer (a retained
        // cache).
        let past = cache.as_ref().map_or(0, |c| c.len);
        let past_keys = cache.as_ref().map_or(0, |c| c.n_keys());
        let t = past_keys + s;
        let (cos, sin) = self.rope.tables(past, s, &device);
        // burn's `tril_mask(.., k)` is true right of the diagonal shifted by `k`: the future
        // positions a query must not see. A single new token sees every key: no mask.
        let mask = (s > 1).then(|| {
            Tensor::<2, Bool>::tril_mask([s, t], past_keys as i64, &device).reshape([1, 1, s, t])
        });
        // Sliding window: also hide keys W or more positions back, i.e. `j - i ≤ past_keys - W`
        // (the complement of the band `tril_mask` leaves). The cached keys are taken to be the
        // most recent ones (true of a cache that was never retained).
        let w = self.sliding_window;
        let sliding_mask = (w > 0 && t > w).then(|| {
            let far = Tensor::<2, Bool>::tril_mask([s, t], past_keys as i64 - w as i64, &device)
                .bool_not()
                .reshape([1, 1, s, t]);
            match &mask {
                Some(m) => m.clone().bool_or(far),
                None => far,
            }
        });
        let mut h = self.embed_tokens.forward(tokens); // [b, s, d]
        // The tables are built in f32; weights held in bf16/f16 make the activations that dtype.
        let (cos, sin) = (
            crate::layers::to_dtype(cos, h.dtype()),
            crate::layers::to_dtype(sin, h.dtype()),
        );
        let mut attentions = Vec::with_capacity(self.layers.len());
        let mut hidden_states = vec![h.clone()];
        let mut kv = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let n = layer.self_attn.n_heads;
            let past_kv = cache.as_ref().and_then(|c| c.layers.get(l).cloned());
            let layer_mask = match &sliding_mask {
                Some(m) if l >= self.sliding_window_from => Some(m.clone()),
                _ => mask.clone(),
            };
            let lq = self.quant.as_ref().and_then(|q| q.layers.get(l));
            let (a, probs, layer_kv) = layer.self_attn.forward_q(
                layer.input_layernorm.forward(h.clone()),
                &self.rope,
                (cos.clone(), sin.clone()),
                layer_mask.map(|m| m.expand([b, n, s, t])),
                past_kv,
                hooks,
                l,
                lq,
            );
            h = h + a;
            h = h.clone()
                + layer
                    .mlp
                    .forward_q(layer.post_attention_layernorm.forward(h), lq);
            attentions.extend(probs);
            hidden_states.push(h.clone());
            kv.push(layer_kv);
        }
        if let Some(c) = cache.as_mut() {
            c.layers = kv.clone();
            c.len = past + s;
        }
        let h = self.norm.forward(h);
        let quant_head = self.quant.as_ref().and_then(|q| q.head.as_ref());
        let logits = match quant_head.and_then(|w| {
            let bias = self
                .lm_head
                .as_ref()
                .and_then(|l| l.bias.as_ref())
                .map(|b| b.val());
            kernels::linear_quant(&h, w, bias.as_ref(), QUANT_MAX_ROWS)
        }) {
            Some(logits) => logits,
            None => match &self.lm_head {
                Some(head) => head.forward(h),
                None => crate::layers::tied_logits(h, self.embed_tokens.weight.val()),
            },
        };
        LlamaOutput {
            logits,
            attentions,
            hidden_states,
            kv,
        }
    }

    /// Mean next-token cross-entropy (nats) of `targets` `[batch, seq]` under the logits of `tokens`.
    pub fn lm_loss(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        cross_entropy(self.forward(tokens).logits, targets)
    }

    /// Greedy decoding of `n` tokens after `prompt` (batch 1) with the KV cache. An empty
    /// prompt is an error (there is no position to continue from).
    pub fn generate_greedy(
        &self,
        prompt: &[i64],
        n: usize,
        device: &Device,
    ) -> crate::Result<Vec<i64>> {
        if prompt.is_empty() {
            return Err(Error::InvalidConfig(
                "greedy decoding needs a non-empty prompt".into(),
            ));
        }
        let mut cache = KvCache::new();
        let mut out = Vec::with_capacity(n);
        let mut input = prompt.to_vec();
        for _ in 0..n {
            let len = input.len();
            let x = Tensor::<2, Int>::from_data(TensorData::new(input, [1, len]), device);
            let logits = self
                .forward_with(x, &AttentionHooks::fast(), Some(&mut cache))
                .logits;
            let next: i64 = logits
                .slice(s![.., len - 1..len, ..])
                .argmax(2)
                .flatten::<1>(0, 2)
                .into_scalar();
            out.push(next);
            input = vec![next];
        }
        Ok(out)
    }
}

/// HF `config.json` of a Llama checkpoint (the keys this decoder uses).
#[derive(Deserialize, Debug, Clone)]
pub struct LlamaHfConfig {
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (defaults to the query heads).
    pub num_key_value_heads: Option<usize>,
    /// `intermediate_size`.
    pub intermediate_size: usize,
    /// `rope_theta` (transformers < 5; newer files keep it in `rope_parameters`).
    pub rope_theta: Option<f64>,
    /// `rms_norm_eps`.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// `max_position_embeddings`.
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: usize,
    /// `tie_word_embeddings`.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// `hidden_act`; only `silu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// `rope_scaling` (transformers < 5).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// `rope_parameters` (transformers ≥ 5: `rope_theta`, `rope_type` and the scaling keys).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// `head_dim`, when given (Mistral-Nemo's differs from `hidden_size / heads`).
    pub head_dim: Option<usize>,
    /// `model_type`: `llama`, `mistral` or `qwen2` (absent: llama).
    #[serde(default)]
    pub model_type: Option<String>,
    /// `attention_bias` (Llama: biases on q, k, v and o).
    #[serde(default)]
    pub attention_bias: bool,
    /// `sliding_window` (Mistral, Qwen2; null: full attention).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// `use_sliding_window` (Qwen2; false switches the window off).
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    /// `max_window_layers` (Qwen2: layers from this index on use the window).
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// `layer_types` (transformers ≥ 5: `full_attention` / `sliding_attention` per layer).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_ctx() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaHfConfig {
    /// The burn configuration, or an error for features not implemented.
    pub fn to_config(&self) -> crate::Result<LlamaConfig> {
        if self.hidden_act != "silu" {
            return Err(Error::Unsupported(format!(
                "hidden_act '{}'",
                self.hidden_act
            )));
        }
        let (theta, scaling, kind) = crate::layers::rope_settings(
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.rope_parameters.as_ref(),
        );
        let kind = kind.as_str();
        let rope_scaling = match scaling {
            None => RopeScaling::None,
            Some(v) => {
                let num = |k: &str| {
                    v[k].as_f64().ok_or_else(|| {
                        Error::Unsupported(format!("rope scaling '{kind}' without {k}"))
                    })
                };
                match kind {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear {
                        factor: num("factor")?,
                    },
                    "llama3" => RopeScaling::Llama3 {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position_embeddings: num("original_max_position_embeddings")?,
                    },
                    other => return Err(Error::Unsupported(format!("rope scaling '{other}'"))),
                }
            }
        };
        let family = self.model_type.as_deref().unwrap_or("llama");
        let (qkv_bias, o_bias) = match family {
            "llama" => (self.attention_bias, self.attention_bias),
            "mistral" => (false, false),
            "qwen2" => (true, false),
            other => {
                return Err(Error::Unsupported(format!(
                    "model_type '{other}' for the Llama decoder (llama, mistral, qwen2)"
                )));
            }
        };
        let (sliding_window, sliding_window_from) = self.sliding()?;
        Ok(LlamaConfig::new(
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            self.intermediate_size,
        )
        .with_rope_theta(theta)
        .with_rope_scaling(rope_scaling)
        .with_rms_norm_eps(self.rms_norm_eps)
        .with_max_seq_len(self.max_position_embeddings)
        .with_tie_embeddings(self.tie_word_embeddings)
        .with_head_dim(self.head_dim)
        .with_qkv_bias(qkv_bias)
        .with_o_bias(o_bias)
        .with_sliding_window(sliding_window)
        .with_sliding_window_from(sliding_window_from))
    }

    /// The sliding window and the first layer using it. Qwen2 switches the window off with
    /// `use_sliding_window: false` and keeps the first `max_window_layers` layers full;
    /// transformers ≥ 5 also spells the result out in `layer_types`, which must then be full
    /// layers followed by sliding ones.
    fn sliding(&self) -> crate::Result<(Option<usize>, usize)> {
        let qwen2 = self.model_type.as_deref() == Some("qwen2");
        let window = match self.sliding_window {
            Some(w) if !(qwen2 && self.use_sliding_window != Some(true)) => w,
            _ => return Ok((None, 0)),
        };
        let from = match &self.layer_types {
            Some(types) => {
                let from = types
                    .iter()
                    .position(|t| t == "sliding_attention")
                    .unwrap_or(types.len());
                if types[from..].iter().any(|t| t != "sliding_attention")
                    || types[..from].iter().any(|t| t != "full_attention")
                {
                    return Err(Error::Unsupported(format!(
                        "layer_types {types:?} (full layers must precede sliding ones)"
                    )));
                }
                from
            }
            None if qwen2 => self.max_window_layers.unwrap_or(0),
            None => 0,
        };
        if from >= self.num_hidden_layers {
            return Ok((None, 0));
        }
        Ok((Some(window), from))
    }
}

/// `rows` of a `[rows, cols]` matrix regrouped from llama.cpp's per-head `[heads, hd/2, 2]`
/// order to HF's `[heads, 2, hd/2]`.
fn unpermute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    unpermute_order(rows, heads)
        .into_iter()
        .flat_map(|r| &data[r * cols..(r + 1) * cols])
        .copied()
        .collect()
}

fn meta_usize(g: &Gguf, key: &str) -> crate::Result<usize> {
    g.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| Error::Weights(format!("GGUF metadata {key} is missing")))
}

impl Llama {
    /// Loads an HF Llama-family folder (`model_type` llama, mistral or qwen2; one
    /// `model.safetensors` or a sharded index) with f32 parameters.
    pub fn load_hf(dir: &Path, device: &Device) -> crate::Result<Self> {
        Self::load_hf_dtype(dir, LoadDtype::F32, device)
    }

    /// Loads an HF Llama-family folder with parameters held in `dtype`.
    pub fn load_hf_dtype(dir: &Path, dtype: LoadDtype, device: &Device) -> crate::Result<Self> {
        let (hf, weights) = crate::layers::read_hf_folder::<LlamaHfConfig>(dir)?;
        let model = hf.to_config()?.init(device)?;
        weights.load_into(
            model,
            &LoadOptions::default()
                .remap(r"^model\.", "")
                .with_dtype(dtype),
        )
    }

    fn load_store(mut self, store: SafetensorsStore, origin: &Path) -> crate::Result<Self> {
        let mut store = store
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^model\.", "")
            .allow_partial(true);
        let res = self
            .load_from(&mut store)
            .map_err(|e| Error::Weights(format!("{}: {e}", origin.display())))?;
        crate::safetensors::check_apply(origin, &res)?;
        Ok(self)
    }

    /// Loads any Llama-family decoder and its tokenizer: a llama GGUF file (tokenizer from its
    /// metadata) or an HF folder with `model_type` llama, mistral or qwen2 (tokenizer from its
    /// `tokenizer.json`), parameters held in `dtype` (GGUF: f32 only). The architecture comes
    /// from [`crate::checkpoint::Architecture::detect`]. Feature `tokenizers`.
    #[cfg(feature = "tokenizers")]
    pub fn load_decoder(
        path: &Path,
        dtype: LoadDtype,
        device: &Device,
    ) -> crate::Result<(Self, textdata::TextTokenizer)> {
        let arch = crate::checkpoint::Architecture::detect(path)?;
        if arch == crate::checkpoint::Architecture::GgufLlama {
            if dtype != LoadDtype::F32 {
                return Err(Error::Unsupported(format!(
                    "GGUF files are dequantised to f32, not held in {dtype}"
                )));
            }
            let (m, g) = Self::load_gguf(path, device)?;
            return Ok((m, g.tokenizer()?));
        }
        if !arch.is_llama_family() {
            return Err(Error::Unsupported(format!(
                "{}: architecture {arch} is not a Llama-family decoder (llama, mistral, qwen2, .gguf)",
                path.display()
            )));
        }
        let tok_path = path.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::Unsupported(format!(
                "{} has no tokenizer.json",
                path.display()
            )));
        }
        let tok = textdata::TextTokenizer::from_file(&tok_path)?;
        Ok((Self::load_hf_dtype(path, dtype, device)?, tok))
    }

    /// Loads a llama-architecture GGUF file (F32/F16/BF16/Q4_0/Q4_1/Q8_0/Q6_K tensors are
    /// dequantised to f32). Returns the model and the parsed file (metadata, tokenizer).
    pub fn load_gguf(path: &Path, device: &Device) -> crate::Result<(Self, Gguf)> {
        let g = Gguf::open(path)?;
        let arch = g
            .get("general.architecture")
            .and_then(Value::as_str)
            .unwrap_or("");
        if arch != "llama" {
            return Err(Error::Unsupported(format!(
                "GGUF architecture '{arch}' (only llama)"
            )));
        }
        let n_layers = meta_usize(&g, "llama.block_count")?;
        let d_model = meta_usize(&g, "llama.embedding_length")?;
        let n_heads = meta_usize(&g, "llama.attention.head_count")?;
        let n_kv = g
            .get("llama.attention.head_count_kv")
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .unwrap_or(n_heads);
        let d_ff = meta_usize(&g, "llama.feed_forward_length")?;
        let (vocab, _) = g
            .info("token_embd.weight")
            .map(|t| (t.shape()[0], ()))
            .ok_or_else(|| Error::MissingTensor {
                tensor: "token_embd.weight".into(),
                file: path.to_path_buf(),
            })?;
        let tied = g.info("output.weight").is_none();
        let cfg = LlamaConfig::new(vocab, d_model, n_layers, n_heads, n_kv, d_ff)
            .with_rope_theta(
                g.get("llama.rope.freq_base")
                    .and_then(Value::as_f64)
                    .unwrap_or(10000.0),
            )
            .with_rms_norm_eps(
                g.get("llama.attention.layer_norm_rms_epsilon")
                    .and_then(Value::as_f64)
                    .unwrap_or(1e-5),
            )
            .with_max_seq_len(meta_usize(&g, "llama.context_length").unwrap_or(2048))
            .with_tie_embeddings(tied);
        if g.get("llama.rope.scaling.type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "none")
        {
            return Err(Error::Unsupported("GGUF rope scaling".into()));
        }

        let mut tensors = Vec::new();
        let mut take =
            |gguf_name: &str, hf_name: String, heads: Option<usize>| -> crate::Result<()> {
                let (shape, mut data) = g.tensor_f32(gguf_name).map_err(|e| match e {
                    Error::MissingTensor { tensor, .. } => Error::MissingTensor {
                        tensor,
                        file: path.to_path_buf(),
                    },
                    other => other,
                })?;
                if let Some(h) = heads {
                    data = unpermute_rows(&data, shape[0], shape.iter().skip(1).product(), h);
                }
                tensors.push((hf_name, shape, data));
                Ok(())
            };
        take(
            "token_embd.weight",
            "model.embed_tokens.weight".into(),
            None,
        )?;
        take("output_norm.weight", "model.norm.weight".into(), None)?;
        if !tied {
            take("output.weight", "lm_head.weight".into(), None)?;
        }
        for i in 0..n_layers {
            let p = format!("model.layers.{i}");
            take(
                &format!("blk.{i}.attn_q.weight"),
                format!("{p}.self_attn.q_proj.weight"),
                Some(n_heads),
            )?;
            take(
                &format!("blk.{i}.attn_k.weight"),
                format!("{p}.self_attn.k_proj.weight"),
                Some(n_kv),
            )?;
            take(
                &format!("blk.{i}.attn_v.weight"),
                format!("{p}.self_attn.v_proj.weight"),
                None,
            )?;
            take(
                &format!("blk.{i}.attn_output.weight"),
                format!("{p}.self_attn.o_proj.weight"),
                None,
            )?;
            take(
                &format!("blk.{i}.ffn_gate.weight"),
                format!("{p}.mlp.gate_proj.weight"),
                None,
            )?;
            take(
                &format!("blk.{i}.ffn_up.weight"),
                format!("{p}.mlp.up_proj.weight"),
                None,
            )?;
            take(
                &format!("blk.{i}.ffn_down.weight"),
                format!("{p}.mlp.down_proj.weight"),
                None,
            )?;
            take(
                &format!("blk.{i}.attn_norm.weight"),
                format!("{p}.input_layernorm.weight"),
                None,
            )?;
            take(
                &format!("blk.{i}.ffn_norm.weight"),
                format!("{p}.post_attention_layernorm.weight"),
                None,
            )?;
        }
        let bytes = crate::safetensors::to_bytes(&tensors);
        drop(tensors);
        let model = cfg.init(device)?;
        let model = model.load_store(SafetensorsStore::from_bytes(Some(bytes)), path)?;
        Ok((model, g))
    }
}

impl Llama {
    /// Keeps the linear weights of GGUF file `g` (the one this model was loaded from with
    /// [`Llama::load_gguf`]) in their block format as well: decoding steps and short inputs
    /// (up to [`QUANT_MAX_ROWS`] rows) on flex then multiply by Q4_0/Q4_1/Q8_0 blocks directly
    /// ([`kernels::QuantMatrix`]), reading 4.5–8.5 bits per weight instead of 32; longer
    /// inputs, other devices and autodiff keep the f32 weights, which stay loaded. Tensors of
    /// other types (F32, F16, Q6_K) stay f32-only. A tensor whose shape differs from the
    /// model's is an error.
    pub fn with_quantized(mut self, g: &Gguf) -> crate::Result<Self> {
        let get = |name: &str, heads: Option<usize>, want: [usize; 2]| {
            let (ty, shape, raw) = g.tensor_raw(name)?;
            if shape != want {
                return Err(Error::ShapeMismatch {
                    tensor: name.to_string(),
                    expected: want.to_vec(),
                    found: shape,
                });
            }
            let m = match QuantMatrix::new(ty, want[0], want[1], raw.to_vec()) {
                Ok(m) => m,
                Err(Error::Unsupported(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            Ok(Some(match heads {
                Some(h) => m.permute_rows(&unpermute_order(want[0], h))?,
                None => m,
            }))
        };
        // burn's Linear holds [in, out]; the file holds [out, in].
        let dims = |l: &Linear| {
            let [i, o] = l.weight.dims();
            [o, i]
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let a = &layer.self_attn;
            let f = &layer.mlp;
            let blk = |n: &str| format!("blk.{i}.{n}.weight");
            layers.push([
                get(&blk("attn_q"), Some(a.n_heads), dims(&a.q_proj))?,
                get(&blk("attn_k"), Some(a.n_kv_heads), dims(&a.k_proj))?,
                get(&blk("attn_v"), None, dims(&a.v_proj))?,
                get(&blk("attn_output"), None, dims(&a.o_proj))?,
                get(&blk("ffn_gate"), None, dims(&f.gate_proj))?,
                get(&blk("ffn_up"), None, dims(&f.up_proj))?,
                get(&blk("ffn_down"), None, dims(&f.down_proj))?,
            ]);
        }
        let head = match &self.lm_head {
            Some(l) => get("output.weight", None, dims(l))?,
            None => get("token_embd.weight", None, self.embed_tokens.weight.dims())?,
        };
        self.quant = Some(Arc::new(QuantWeights { layers, head }));
        Ok(self)
    }

    /// The quantised weights held ([`Llama::with_quantized`]).
    pub fn quantized(&self) -> Option<&QuantWeights> {
        self.quant.as_deref()
    }

    /// Drops the quantised weights: every projection runs in f32 again.
    pub fn without_quantized(mut self) -> Self {
        self.quant = None;
        self
    }
}

/// The row order that regroups llama.cpp's per-head `[heads, hd/2, 2]` rows into HF's `[heads,
/// 2, hd/2]`: row `i` of the result is row `order[i]` of the file.
fn unpermute_order(rows: usize, heads: usize) -> Vec<usize> {
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut order = vec![0; rows];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                order[h * hd + j * half + i] = h * hd + i * 2 + j;
            }
        }
    }
    order
}

/// Mean next-token cross-entropy over the first `n` windows of `windows` (batches of 16), with
/// `logits` computing `[batch, seq, vocab]` for a `[batch, seq]` input: the validation loss of
/// the byte-LM experiments, whatever the model.
pub fn mean_window_loss<E: From<textdata::Error>>(
    windows: &textdata::LmWindows,
    n: usize,
    device: &Device,
    mut logits: impl FnMut(Tensor<2, Int>) -> std::result::Result<Tensor<3>, E>,
) -> std::result::Result<f64, E> {
    let n = n.min(windows.len()).max(1);
    let idx: Vec<usize> = (0..n).collect();
    let mut total = 0.0;
    for chunk in idx.chunks(16) {
        let (x, y) = windows.batch(chunk, device)?;
        let l: f32 = cross_entropy(logits(x)?, y).into_scalar();
        total += l as f64 * chunk.len() as f64;
    }
    Ok(total / n as f64)
}

/// Mean cross-entropy of integer `targets` `[batch, seq]` under `logits` `[batch, seq, vocab]`.
pub fn cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let logp = log_softmax(logits, 2);
    let picked = logp.gather(2, targets.unsqueeze_dim(2)); // [b, s, 1]
    picked.mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> LlamaConfig {
        LlamaConfig::new(50, 16, 2, 4, 2, 24).with_max_seq_len(32)
    }

    #[test]
    fn logits_have_vocab_width_and_rows_of_attention_sum_to_one() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(0);
        let m = tiny().init(&d).unwrap();
        let toks =
            Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [2, 3]), &d);
        let fused = m.forward(toks.clone());
        assert!(fused.attentions.is_empty());
        let out = m.forward_with(toks, &AttentionHooks::none(), None);
        assert_eq!(out.logits.dims(), [2, 3, 50]);
        let want = testkit::tensor_values(out.logits.clone(), &[2, 3, 50]);
        testkit::assert_tensor_close(fused.logits, &want, &[2, 3, 50], 1e-5, "fused attention");
        assert_eq!(out.attentions.len(), 2);
        let sums = out.attentions[0]
            .clone()
            .sum_dim(3)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(sums.iter().all(|v| (v - 1.0).abs() < 1e-5));
    }

    #[test]
    fn a_bias_alone_takes_the_fused_op_and_gives_the_step_by_step_result() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(4);
        let m = tiny().init(&d).unwrap();
        let toks = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 9, 4, 1, 7], [1, 5]), &d);
        let eager = AttentionHooks::none()
            .block(1, Some(&[0, 2]), &[3, 4], &[1, 2], 4, 5, &d)
            .unwrap();
        let fused = AttentionHooks {
            skip_probs: true,
            ..eager.clone()
        };
        assert!(!fused.needs_probs(1));
        let a = m.forward_with(toks.clone(), &eager, None);
        let b = m.forward_with(toks.clone(), &fused, None);
        assert_eq!(a.attentions.len(), 2);
        assert!(b.attentions.is_empty());
        let want = testkit::tensor_values(a.logits, &[1, 5, 50]);
        testkit::assert_tensor_close(b.logits, &want, &[1, 5, 50], 1e-5, "biased fused attention");
        // The block changes the output (the hook is not lost on the fused path).
        let plain = testkit::tensor_values(m.forward(toks).logits, &[1, 5, 50]);
        assert!(testkit::max_abs_diff(&want, &plain) > 1e-4);
    }

    #[test]
    fn future_tokens_do_not_change_past_logits() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(1);
        let m = tiny().init(&d).unwrap();
        let a = Tensor::<2, Int>::from_data(TensorData::new(vec![7i64, 8, 9, 10], [1, 4]), &d);
        let b = Tensor::<2, Int>::from_data(TensorData::new(vec![7i64, 8, 9, 33], [1, 4]), &d);
        let la = m
            .forward(a)
            .logits
            .slice(s![.., 0..3, ..])
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let lb = m
            .forward(b)
            .logits
            .slice(s![.., 0..3, ..])
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (x, y) in la.iter().zip(&lb) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn rope_preserves_vector_norms() {
        let d = Device::flex();
        let rope = Rope::new(8, 16, 10000.0, &RopeScaling::None);
        let x = Tensor::<4>::random(
            [1, 2, 5, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &d,
        );
        let (c, s) = rope.tables(3, 5, &d);
        let y = rope.apply(x.clone(), c, s);
        let nx = x
            .powi_scalar(2)
            .sum_dim(3)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let ny = y
            .powi_scalar(2)
            .sum_dim(3)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (a, b) in nx.iter().zip(&ny) {
            assert!((a - b).abs() < 1e-4 * a.max(1.0));
        }
    }

    #[test]
    fn uniform_logits_give_log_vocab_cross_entropy() {
        let d = Device::flex();
        let logits = Tensor::<3>::zeros([2, 3, 10], &d);
        let t = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3, 4, 5], [2, 3]), &d);
        let l: f32 = cross_entropy(logits, t).into_scalar();
        assert!((l - (10f32).ln()).abs() < 1e-5);
    }

    fn ids(v: &[i64], d: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), d)
    }

    #[test]
    fn cached_decoding_equals_full_forwards() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(3);
        let m = tiny().init(&d).unwrap();
        let prompt = [3i64, 14, 15, 9, 2];
        let cached = m.generate_greedy(&prompt, 6, &d).unwrap();
        assert!(m.generate_greedy(&[], 6, &d).is_err());
        let mut seq = prompt.to_vec();
        for _ in 0..6 {
            let n = seq.len();
            let next: i64 = m
                .forward(ids(&seq, &d))
                .logits
                .slice(s![.., n - 1..n, ..])
                .argmax(2)
                .flatten::<1>(0, 2)
                .into_scalar();
            seq.push(next);
        }
        assert_eq!(cached, seq[prompt.len()..].to_vec());
        // And the cached logits themselves agree with the full forward.
        let mut cache = KvCache::new();
        m.forward_with(
            ids(&prompt[..3], &d),
            &AttentionHooks::none(),
            Some(&mut cache),
        );
        let step = m.forward_with(
            ids(&prompt[3..], &d),
            &AttentionHooks::none(),
            Some(&mut cache),
        );
        let full = m.forward(ids(&prompt, &d)).logits.slice(s![.., 3..5, ..]);
        let a = step.logits.into_data().try_to_vec::<f32>().unwrap();
        let b = full.into_data().try_to_vec::<f32>().unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
        assert_eq!(cache.len(), 5);
    }

    #[test]
    fn sliding_window_decoding_with_the_cache_equals_full_forwards() {
        let _rng = testkit::device_rng_lock();
        // Window 3 over 9 tokens, fed 4 + 1 + 4: every chunk after the first meets keys the
        // window hides; the second layer alone slides.
        let d = Device::flex();
        d.seed(4);
        let m = tiny()
            .with_sliding_window(Some(3))
            .with_sliding_window_from(1)
            .init(&d)
            .unwrap();
        let seq = [3i64, 14, 15, 9, 2, 6, 5, 3, 5];
        let full = m.forward(ids(&seq, &d)).logits;
        let mut cache = KvCache::new();
        let mut parts = Vec::new();
        for (a, b) in [(0, 4), (4, 5), (5, 9)] {
            let out = m.forward_with(
                ids(&seq[a..b], &d),
                &AttentionHooks::none(),
                Some(&mut cache),
            );
            parts.push(out.logits);
        }
        let a = Tensor::cat(parts, 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = full.into_data().try_to_vec::<f32>().unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
        // The window changes the result: without it the last logits differ.
        let no_window = Llama {
            sliding_window: 0,
            ..m.clone()
        };
        let c = no_window
            .forward(ids(&seq, &d))
            .logits
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(c.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4));
    }

    #[test]
    fn repeated_and_selected_cache_rows_decode_like_their_own_sequences() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(4);
        let m = tiny().init(&d).unwrap();
        let prompt = [3i64, 14, 15];
        let mut cache = KvCache::new();
        m.forward_with(ids(&prompt, &d), &AttentionHooks::none(), Some(&mut cache));
        let mut cache = cache.repeat_batch(3).unwrap();
        // Three different next tokens, then keep rows 2 and 0 (in that order).
        let next = Tensor::<2, Int>::from_data(TensorData::new(vec![4i64, 5, 6], [3, 1]), &d);
        m.forward_with(next, &AttentionHooks::none(), Some(&mut cache));
        let mut kept = cache.select_batch(&[2, 0]);
        let last = Tensor::<2, Int>::from_data(TensorData::new(vec![7i64, 8], [2, 1]), &d);
        let step = m.forward_with(last, &AttentionHooks::none(), Some(&mut kept));
        let got = step.logits.into_data().try_to_vec::<f32>().unwrap();
        let v = got.len() / 2;
        for (row, tail) in [[6i64, 7], [4, 8]].iter().enumerate() {
            let mut seq = prompt.to_vec();
            seq.extend_from_slice(tail);
            let full = m.forward(ids(&seq, &d)).logits.slice(s![.., 4..5, ..]);
            let want = full.into_data().try_to_vec::<f32>().unwrap();
            let max = got[row * v..(row + 1) * v]
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max < 1e-4, "row {row}: {max}");
        }
        assert_eq!(kept.len(), 5);
        assert!(kept.repeat_batch(2).is_err());
    }

    #[test]
    fn a_blocked_key_gets_no_attention_and_scale_one_changes_nothing() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(4);
        let m = tiny().init(&d).unwrap();
        let x = ids(&[1, 2, 3, 4, 5], &d);
        let hooks = AttentionHooks::none()
            .block(1, None, &[2, 3, 4], &[1], 4, 5, &d)
            .unwrap();
        assert!(
            AttentionHooks::none()
                .block(1, None, &[5], &[1], 4, 5, &d)
                .is_err(),
            "a query past the sequence is an error"
        );
        let out = m.forward_with(x.clone(), &hooks, None);
        let a = out.attentions[1].clone().slice(s![.., .., 2..5, 1..2]);
        assert!(
            a.into_data()
                .try_to_vec::<f32>()
                .unwrap()
                .iter()
                .all(|&v| v == 0.0)
        );
        let rows = out.attentions[1]
            .clone()
            .sum_dim(3)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(rows.iter().all(|v| (v - 1.0).abs() < 1e-5));
        let mut ones = AttentionHooks::none();
        ones.scale.insert(0, Tensor::ones([1, 1, 1, 1], &d));
        let a = m
            .forward_with(x.clone(), &ones, None)
            .logits
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = m.forward(x).logits.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn probe_gradients_match_finite_differences() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex().autodiff();
        d.seed(5);
        let m = tiny().init(&d).unwrap();
        let x = ids(&[4, 8, 15, 16], &d);
        let w = Tensor::<3>::random([1, 4, 50], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
        let loss_of = |hooks: &AttentionHooks| {
            (m.forward_with(x.clone(), hooks, None).logits * w.clone()).sum()
        };
        let hooks = AttentionHooks::none().with_probes(2, [1, 4, 4, 4], &d);
        let grads = loss_of(&hooks).backward();
        let g = hooks.probe_grads(&grads);
        let g1 = g[&1].clone().into_data().try_to_vec::<f32>().unwrap();
        let eps = 1e-2f32;
        for &(h, q, k) in &[(0usize, 3usize, 1usize), (2, 2, 0), (3, 3, 3)] {
            let idx = (h * 4 + q) * 4 + k;
            let bump = |sign: f32| {
                let mut p = vec![0f32; 64];
                p[idx] = sign * eps;
                let mut hk = AttentionHooks::none();
                hk.probes
                    .insert(1, Tensor::from_data(TensorData::new(p, [1, 4, 4, 4]), &d));
                loss_of(&hk).into_scalar::<f32>()
            };
            let fd = (bump(1.0) - bump(-1.0)) / (2.0 * eps);
            assert!(
                (fd - g1[idx]).abs() < 2e-2 * fd.abs().max(1.0),
                "({h},{q},{k}): fd {fd} vs {}",
                g1[idx]
            );
        }
        // Parameters still get gradients alongside the probes.
        assert!(m.layers[0].self_attn.q_proj.weight.grad(&grads).is_some());
    }

    #[test]
    fn invalid_head_counts_are_rejected() {
        assert!(LlamaConfig::new(10, 16, 1, 3, 1, 8).validate().is_err());
        assert!(LlamaConfig::new(10, 16, 1, 4, 3, 8).validate().is_err());
    }
}
