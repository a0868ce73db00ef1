//! DeepSeekMoE causal LM, v1 (`model_type: "deepseek"`, the 16B release): Llama attention (MHA or
//! GQA, rotate-half RoPE) and MoE feed-forwards, except the first `first_k_dense_replace` layers
//! and those off the `moe_layer_freq` grid, which keep a dense SwiGLU.
//!
//! | HF key                                         | module path                          |
//! |------------------------------------------------|--------------------------------------|
//! | `model.embed_tokens.weight`                    | `embed_tokens.weight`                |
//! | `model.layers.l.self_attn.{q,k,v,o}_proj`      | `layers.l.self_attn.*`               |
//! | `model.layers.l.mlp.{gate,up,down}_proj` (dense) | `layers.l.mlp.<Dense>.*`           |
//! | `model.layers.l.mlp.gate.weight` (MoE router)  | `layers.l.mlp.<Moe>.gate.weight`     |
//! | `model.layers.l.mlp.experts.j.*`, `shared_experts.*` | `layers.l.mlp.<Moe>.…`         |
//! | `model.layers.l.{input,post_attention}_layernorm.weight` | `….gamma`                  |
//! | `model.norm.weight`, `lm_head.weight`          | `norm.gamma`, `lm_head.weight`       |
//!
//! The enum variant segment (`Dense`/`Moe`) is skipped when loading, so HF names apply as they are.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use plm::hooks::AttentionHooks;
use plm::layers::Init;
use plm::llama::{Attention, Rope, RopeScaling, SwiGlu};
use serde::Deserialize;

use crate::{Error, MoeConfig, MoeLayer};

/// The feed-forward of one layer.
// One per layer, so the size difference between the variants costs nothing worth a Box (which
// burn's Module derive would also have to see through).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Ffn {
    /// A dense SwiGLU MLP.
    Dense(SwiGlu),
    /// A DeepSeekMoE layer.
    Moe(MoeLayer),
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct DeepseekLayer {
    /// Attention.
    pub self_attn: Attention,
    /// Feed-forward.
    pub mlp: Ffn,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the feed-forward.
    pub post_attention_layernorm: RmsNorm,
}

/// DeepSeekMoE causal LM (v1).
#[derive(Module, Debug)]
pub struct DeepseekLm {
    /// Token embedding.
    pub embed_tokens: Embedding,
    /// Layers.
    pub layers: Vec<DeepseekLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection.
    pub lm_head: Linear,
    rope: Rope,
}

/// HF `config.json` of a `deepseek` (v1) checkpoint.
#[derive(Deserialize, Debug, Clone)]
pub struct DeepseekHfConfig {
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: usize,
    /// `num_key_value_heads`.
    pub num_key_value_heads: Option<usize>,
    /// `intermediate_size` (dense layers).
    pub intermediate_size: usize,
    /// `moe_intermediate_size`.
    pub moe_intermediate_size: usize,
    /// `n_routed_experts` (null: no MoE layer).
    pub n_routed_experts: Option<usize>,
    /// `n_shared_experts`.
    #[serde(default)]
    pub n_shared_experts: Option<usize>,
    /// `num_experts_per_tok`.
    pub num_experts_per_tok: usize,
    /// `first_k_dense_replace`.
    #[serde(default)]
    pub first_k_dense_replace: usize,
    /// `moe_layer_freq`.
    #[serde(default = "one")]
    pub moe_layer_freq: usize,
    /// `norm_topk_prob`.
    #[serde(default)]
    pub norm_topk_prob: bool,
    /// `aux_loss_alpha`.
    #[serde(default = "alpha")]
    pub aux_loss_alpha: f64,
    /// `seq_aux`.
    #[serde(default = "yes")]
    pub seq_aux: bool,
    /// `rms_norm_eps`.
    #[serde(default = "eps")]
    pub rms_norm_eps: f64,
    /// `rope_theta`.
    #[serde(default = "theta")]
    pub rope_theta: f64,
    /// `max_position_embeddings`.
    #[serde(default = "ctx")]
    pub max_position_embeddings: usize,
    /// `scoring_func`; only softmax.
    #[serde(default = "softmax")]
    pub scoring_func: String,
}

fn one() -> usize {
    1
}
fn alpha() -> f64 {
    0.001
}
fn yes() -> bool {
    true
}
fn eps() -> f64 {
    1e-6
}
fn theta() -> f64 {
    10000.0
}
fn ctx() -> usize {
    4096
}
fn softmax() -> String {
    "softmax".into()
}

impl DeepseekHfConfig {
    /// Whether layer `l` is an MoE layer (HF: experts configured, `l >= first_k_dense_replace`
    /// and `l % moe_layer_freq == 0`).
    pub fn is_moe(&self, l: usize) -> bool {
        self.n_routed_experts.is_some()
            && l >= self.first_k_dense_replace
            && l.is_multiple_of(self.moe_layer_freq.max(1))
    }

    /// Builds the model with random weights (std 0.02).
    pub fn init(&self, device: &Device) -> crate::Result<DeepseekLm> {
        if self.scoring_func != "softmax" {
            return Err(Error::InvalidConfig(format!(
                "scoring_func '{}' (only softmax)",
                self.scoring_func
            )));
        }
        plm::layers::check_heads(self.hidden_size, self.num_attention_heads)?;
        let init = Init { std: 0.02, device };
        let d = self.hidden_size;
        let kv = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        let norm = || {
            RmsNormConfig::new(d)
                .with_epsilon(self.rms_norm_eps)
                .init(device)
        };
        let mut layers = Vec::with_capacity(self.num_hidden_layers);
        for l in 0..self.num_hidden_layers {
            let mlp = if self.is_moe(l) {
                let moe = MoeConfig::new(
                    d,
                    self.n_routed_experts.unwrap_or(0),
                    self.num_experts_per_tok,
                    self.moe_intermediate_size,
                )
                .with_n_shared(self.n_shared_experts.unwrap_or(0))
                .with_norm_topk_prob(self.norm_topk_prob)
                .with_aux_alpha(self.aux_loss_alpha)
                .with_seq_aux(self.seq_aux)
                .init(device)?;
                Ffn::Moe(moe)
            } else {
                Ffn::Dense(SwiGlu {
                    gate_proj: init.linear(d, self.intermediate_size, false),
                    up_proj: init.linear(d, self.intermediate_size, false),
                    down_proj: init.linear(self.intermediate_size, d, false),
                })
            };
            layers.push(DeepseekLayer {
                self_attn: Attention::new(d, self.num_attention_heads, kv, &init),
                mlp,
                input_layernorm: norm(),
                post_attention_layernorm: norm(),
            });
        }
        Ok(DeepseekLm {
            embed_tokens: init.embedding(self.vocab_size, d),
            layers,
            norm: norm(),
            lm_head: init.linear(d, self.vocab_size, false),
            rope: Rope::new(
                d / self.num_attention_heads,
                self.max_position_embeddings,
                self.rope_theta,
                &RopeScaling::None,
            ),
        })
    }
}

/// What [`DeepseekLm::forward`] returns.
#[derive(Debug)]
pub struct DeepseekOutput {
    /// Logits `[batch, seq, vocab]`.
    pub logits: Tensor<3>,
    /// Sum of the MoE layers' balance losses (add it to the LM loss; log it apart).
    pub aux_loss: Tensor<1>,
    /// Routing per MoE layer: `(layer, top-k ids [tokens, k], weights [tokens, k])`.
    pub routing: Vec<(usize, Tensor<2, Int>, Tensor<2>)>,
    /// Attention probabilities per layer.
    pub attentions: Vec<Tensor<4>>,
}

impl DeepseekLm {
    /// # Shapes
    /// `tokens` `[batch, seq]`, `token_mask` `[batch, seq]` (1 = real; padding is left out of the
    /// balance losses) → [`DeepseekOutput`].
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        token_mask: Option<Tensor<2, Int>>,
    ) -> crate::Result<DeepseekOutput> {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        let (cos, sin) = self.rope.tables(0, s, &device);
        // burn's `tril_mask` is true strictly above the diagonal: the future positions.
        let mask = Tensor::<2, Bool>::tril_mask([s, s], 0, &device).reshape([1, 1, s, s]);
        let hooks = AttentionHooks::none();
        let mut h = self.embed_tokens.forward(tokens);
        let mut aux = Tensor::<1>::zeros([1], &device);
        let mut routing = Vec::new();
        let mut attentions = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let n = layer.self_attn.n_heads();
            let (a, probs, _) = layer.self_attn.forward(
                layer.input_layernorm.forward(h.clone()),
                &self.rope,
                cos.clone(),
                sin.clone(),
                mask.clone().expand([b, n, s, s]),
                None,
                &hooks,
                l,
            );
            h = h + a;
            let x = layer.post_attention_layernorm.forward(h.clone());
            let f = match &layer.mlp {
                Ffn::Dense(mlp) => mlp.forward(x),
                Ffn::Moe(moe) => {
                    let out = moe.forward(x, token_mask.clone())?;
                    aux = aux + out.aux_loss;
                    routing.push((l, out.topk_idx, out.topk_weight));
                    out.output
                }
            };
            h = h + f;
            attentions.push(probs);
        }
        let logits = self.lm_head.forward(self.norm.forward(h));
        Ok(DeepseekOutput {
            logits,
            aux_loss: aux,
            routing,
            attentions,
        })
    }

    /// Loads an HF `deepseek` folder (`config.json` + `model.safetensors`).
    pub fn load_hf(dir: &Path, device: &Device) -> crate::Result<Self> {
        let (hf, path) = plm::layers::read_hf_folder::<DeepseekHfConfig>(dir)?;
        let mut model = hf.init(device)?;
        let mut store = SafetensorsStore::from_file(&path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^model\.", "")
            .skip_enum_variants(true)
            .allow_partial(true);
        let res = model
            .load_from(&mut store)
            .map_err(|e| plm::Error::Weights(format!("{}: {e}", path.display())))?;
        plm::safetensors::check_apply(&path, &res)?;
        Ok(model)
    }
}
