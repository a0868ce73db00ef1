//! GPT-2 decoder: learned positions, pre-LN blocks, tanh-GELU (`gelu_new`), tied output
//! embedding. Loads HF `gpt2` checkpoints (`GPT2Model` or `GPT2LMHeadModel`).
//!
//! | HF key                                  | module path                 |
//! |-----------------------------------------|-----------------------------|
//! | `[transformer.]wte.weight`, `wpe.weight`| `wte.weight`, `wpe.weight`  |
//! | `h.N.ln_1.{weight,bias}`                | `h.N.ln_1.{gamma,beta}`     |
//! | `h.N.attn.c_attn.{weight,bias}`         | `h.N.attn.c_attn.*`         |
//! | `h.N.attn.c_proj.{weight,bias}`         | `h.N.attn.c_proj.*`         |
//! | `h.N.ln_2.{weight,bias}`                | `h.N.ln_2.{gamma,beta}`     |
//! | `h.N.mlp.c_fc`, `h.N.mlp.c_proj`        | same                        |
//! | `ln_f.{weight,bias}`                    | `ln_f.{gamma,beta}`         |
//!
//! GPT-2 stores its projections as `Conv1D` with weights `[in, out]` — burn's `Linear` layout —
//! so, unlike BERT and Llama, nothing is transposed on load.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::gelu_approximate;
use serde::Deserialize;

use crate::Error;
use crate::checkpoint::{LoadDtype, LoadOptions};
use crate::hooks::AttentionHooks;

/// Configuration of a [`Gpt2`] decoder.
#[derive(Config, Debug)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward width (HF `n_inner`, default 4 · d_model).
    pub d_ff: usize,
    /// Learned positions. Default 1024.
    #[config(default = 1024)]
    pub max_positions: usize,
    /// LayerNorm epsilon. Default 1e-5.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Normal initialisation std. Default 0.02.
    #[config(default = 0.02)]
    pub initializer_range: f64,
}

/// HF `config.json` of a GPT-2 checkpoint.
#[derive(Deserialize, Debug, Clone)]
pub struct Gpt2HfConfig {
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `n_embd`.
    pub n_embd: usize,
    /// `n_layer`.
    pub n_layer: usize,
    /// `n_head`.
    pub n_head: usize,
    /// `n_inner` (null = 4 · n_embd).
    pub n_inner: Option<usize>,
    /// `n_positions`.
    pub n_positions: usize,
    /// `layer_norm_epsilon`.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `activation_function`; `gelu_new` (tanh) only.
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// `scale_attn_by_inverse_layer_idx`; unsupported when true.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

impl Gpt2HfConfig {
    /// The burn configuration.
    pub fn to_config(&self) -> crate::Result<Gpt2Config> {
        if self.activation_function != "gelu_new" {
            return Err(Error::Unsupported(format!(
                "activation_function '{}'",
                self.activation_function
            )));
        }
        if self.scale_attn_by_inverse_layer_idx {
            return Err(Error::Unsupported("scale_attn_by_inverse_layer_idx".into()));
        }
        Ok(Gpt2Config::new(
            self.vocab_size,
            self.n_embd,
            self.n_layer,
            self.n_head,
            self.n_inner.unwrap_or(4 * self.n_embd),
        )
        .with_max_positions(self.n_positions)
        .with_layer_norm_eps(self.layer_norm_epsilon))
    }
}

/// Causal self-attention with a fused QKV projection.
#[derive(Module, Debug)]
pub struct Gpt2Attention {
    /// `d → 3d` (q, k, v).
    pub c_attn: Linear,
    /// `d → d`.
    pub c_proj: Linear,
    n_heads: usize,
}

/// The feed-forward block.
#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    /// `d → d_ff`.
    pub c_fc: Linear,
    /// `d_ff → d`.
    pub c_proj: Linear,
}

/// One pre-LN block.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// Attention.
    pub attn: Gpt2Attention,
    /// Norm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP.
    pub mlp: Gpt2Mlp,
}

/// GPT-2 language model (output embedding tied to `wte`).
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embedding.
    pub wte: Embedding,
    /// Position embedding.
    pub wpe: Embedding,
    /// Blocks.
    pub h: Vec<Gpt2Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
}

/// What [`Gpt2::forward_with`] returns.
#[derive(Debug)]
pub struct Gpt2Output {
    /// Logits `[batch, seq, vocab]`.
    pub logits: Tensor<3>,
    /// Attention probabilities per layer (after hooks) `[batch, heads, seq, seq]`.
    pub attentions: Vec<Tensor<4>>,
    /// As HF returns them: the embedding output, each block's output, and the last one after
    /// `ln_f` (`n_layers + 1` tensors `[batch, seq, d_model]`).
    pub hidden_states: Vec<Tensor<3>>,
    /// Keys and values per layer `[batch, heads, seq, head_dim]`.
    pub kv: Vec<(Tensor<4>, Tensor<4>)>,
}

impl Gpt2Config {
    /// Builds the model with random weights.
    pub fn init(&self, device: &Device) -> crate::Result<Gpt2> {
        crate::layers::check_heads(self.d_model, self.n_heads)?;
        let init = crate::layers::Init {
            std: self.initializer_range,
            device,
        };
        let linear = |i: usize, o: usize| init.linear(i, o, true);
        let ln = || init.layer_norm(self.d_model, self.layer_norm_eps);
        let emb = |n: usize| init.embedding(n, self.d_model);
        Ok(Gpt2 {
            wte: emb(self.vocab_size),
            wpe: emb(self.max_positions),
            h: (0..self.n_layers)
                .map(|_| Gpt2Block {
                    ln_1: ln(),
                    attn: Gpt2Attention {
                        c_attn: linear(self.d_model, 3 * self.d_model),
                        c_proj: linear(self.d_model, self.d_model),
                        n_heads: self.n_heads,
                    },
                    ln_2: ln(),
                    mlp: Gpt2Mlp {
                        c_fc: linear(self.d_model, self.d_ff),
                        c_proj: linear(self.d_ff, self.d_model),
                    },
                })
                .collect(),
            ln_f: ln(),
        })
    }
}

impl Gpt2Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: Tensor<4, Bool>,
        hooks: &AttentionHooks,
        layer: usize,
    ) -> (Tensor<3>, Option<Tensor<4>>, (Tensor<4>, Tensor<4>)) {
        let [b, s, d] = x.dims();
        let hd = d / self.n_heads;
        let qkv = crate::kernels::linear(&self.c_attn, x); // [b, s, 3d]
        let part = |i: usize| {
            qkv.clone()
                .slice(s![.., .., i * d..(i + 1) * d])
                .reshape([b, s, self.n_heads, hd])
                .swap_dims(1, 2) // [b, h, s, hd]
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let (ctx, probs) = hooks.attend(layer, q, k.clone(), v.clone(), Some(mask));
        let ctx = ctx.swap_dims(1, 2).reshape([b, s, d]);
        (crate::kernels::linear(&self.c_proj, ctx), probs, (k, v))
    }
}

impl Gpt2 {
    /// Number of blocks.
    pub fn n_layers(&self) -> usize {
        self.h.len()
    }

    /// Attention heads per block.
    pub fn n_heads(&self) -> usize {
        self.h.first().map_or(0, |b| b.attn.n_heads)
    }

    /// # Shapes
    /// `tokens` `[batch, seq]` → logits `[batch, seq, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Gpt2Output {
        self.forward_with(tokens, &AttentionHooks::fast())
    }

    /// [`Gpt2::forward_with`] that first checks the input against the learned position table:
    /// [`crate::Error::SequenceTooLong`] instead of an out-of-bounds lookup.
    pub fn try_forward_with(
        &self,
        tokens: Tensor<2, Int>,
        hooks: &AttentionHooks,
    ) -> crate::Result<Gpt2Output> {
        let max = self.wpe.weight.dims()[0];
        let len = tokens.dims()[1];
        if len > max {
            return Err(Error::SequenceTooLong { len, max });
        }
        Ok(self.forward_with(tokens, hooks))
    }

    /// Forward pass with attention hooks (see [`crate::hooks`]). `seq` must fit the learned
    /// position table ([`Gpt2::try_forward_with`] checks it).
    pub fn forward_with(&self, tokens: Tensor<2, Int>, hooks: &AttentionHooks) -> Gpt2Output {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..s as i64, &device)
            .reshape([1, s])
            .expand([b, s]);
        let mut h = self.wte.forward(tokens) + self.wpe.forward(positions); // [b, s, d]
        // burn's `tril_mask` is true strictly above the diagonal: the future positions.
        let mask = Tensor::<2, Bool>::tril_mask([s, s], 0, &device).reshape([1, 1, s, s]);
        let mut hidden_states = vec![h.clone()];
        let mut attentions = Vec::with_capacity(self.h.len());
        let mut kv = Vec::with_capacity(self.h.len());
        for (l, block) in self.h.iter().enumerate() {
            let n = block.attn.n_heads;
            let (a, probs, layer_kv) = block.attn.forward(
                block.ln_1.forward(h.clone()),
                mask.clone().expand([b, n, s, s]),
                hooks,
                l,
            );
            h = h + a;
            let m = crate::kernels::linear(
                &block.mlp.c_proj,
                gelu_approximate(crate::kernels::linear(
                    &block.mlp.c_fc,
                    block.ln_2.forward(h.clone()),
                )),
            );
            h = h + m;
            attentions.extend(probs);
            kv.push(layer_kv);
            hidden_states.push(h.clone());
        }
        let h = self.ln_f.forward(h);
        if let Some(last) = hidden_states.last_mut() {
            *last = h.clone();
        }
        let logits = crate::layers::tied_logits(h, self.wte.weight.val());
        Gpt2Output {
            logits,
            attentions,
            hidden_states,
            kv,
        }
    }

    /// Loads an HF GPT-2 folder (`config.json` + `model.safetensors` or a sharded index) with
    /// f32 parameters.
    pub fn load_hf(dir: &Path, device: &Device) -> crate::Result<Self> {
        Self::load_hf_dtype(dir, LoadDtype::F32, device)
    }

    /// Loads an HF GPT-2 folder with parameters held in `dtype`.
    pub fn load_hf_dtype(dir: &Path, dtype: LoadDtype, device: &Device) -> crate::Result<Self> {
        let (hf, weights) = crate::layers::read_hf_folder::<Gpt2HfConfig>(dir)?;
        let model = hf.to_config()?.init(device)?;
        // GPT-2's Conv1D weights are stored `[in, out]` already: no PyTorch transpose.
        let options = LoadOptions::default()
            .with_pytorch_layout(false)
            .remap(r"^transformer\.", "")
            .remap(r"(ln_[12f])\.weight$", "$1.gamma")
            .remap(r"(ln_[12f])\.bias$", "$1.beta")
            .with_dtype(dtype);
        let model = weights.load_into(model, &options)?;
        Ok(model)
    }
}
