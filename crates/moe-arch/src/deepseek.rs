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
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use plm::checkpoint::{LoadDtype, LoadOptions};
use plm::hooks::AttentionHooks;
use plm::layers::Init;
use plm::llama::{Attention, Rope, RopeScaling, SwiGlu};
use serde::{Deserialize, Serialize};

use crate::{Error, HashRouter, MoeConfig, MoeLayer, TopkMethod};

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

/// The routing of the MoE layers: `(layer, top-k ids [tokens, k], weights [tokens, k])`.
pub type Routing = Vec<(usize, Tensor<2, Int>, Tensor<2>)>;

impl Ffn {
    /// Sets the [`crate::Dispatch`] of an MoE layer (a dense layer has none).
    pub fn set_dispatch(&mut self, dispatch: crate::Dispatch) {
        if let Ffn::Moe(m) = self {
            m.set_dispatch(dispatch);
        }
    }

    /// Runs the feed-forward of layer `l`: returns its output and balance loss (zero for a
    /// dense layer) and appends an MoE layer's routing to `routing`.
    pub fn forward_routed(
        &self,
        l: usize,
        x: Tensor<3>,
        token_mask: Option<Tensor<2, Int>>,
        routing: &mut Routing,
    ) -> crate::Result<(Tensor<3>, Tensor<1>)> {
        self.forward_routed_by(l, x, token_mask, None, routing)
    }

    /// [`Ffn::forward_routed`], an MoE layer routing by `hash` (the token ids `[batch, seq]`
    /// and the map; see [`MoeLayer::forward_hash`]) when given.
    pub fn forward_routed_by(
        &self,
        l: usize,
        x: Tensor<3>,
        token_mask: Option<Tensor<2, Int>>,
        hash: Option<(&Tensor<2, Int>, &HashRouter)>,
        routing: &mut Routing,
    ) -> crate::Result<(Tensor<3>, Tensor<1>)> {
        Ok(match self {
            Ffn::Dense(mlp) => {
                let device = x.device();
                (mlp.forward(x), Tensor::zeros([1], &device))
            }
            Ffn::Moe(moe) => {
                let out = match hash {
                    Some((ids, router)) => moe.forward_hash(x, ids.clone(), router)?,
                    None => moe.forward(x, token_mask)?,
                };
                routing.push((l, out.topk_idx, out.topk_weight));
                (out.output, out.aux_loss)
            }
        })
    }
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
    /// Token-hash routing of every MoE layer ([`DeepseekLm::with_hash_routing`]).
    #[module(skip)]
    hash: Option<HashRouter>,
}

/// The MoE keys shared by the `deepseek` and `deepseek_v2` `config.json` files.
#[derive(Deserialize, Serialize, Debug, Clone)]
pub struct MoeHfFields {
    /// `n_routed_experts` (null: no MoE layer).
    pub n_routed_experts: Option<usize>,
    /// `n_shared_experts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_shared_experts: Option<usize>,
    /// `num_experts_per_tok`.
    pub num_experts_per_tok: usize,
    /// `moe_intermediate_size`.
    pub moe_intermediate_size: usize,
    /// `first_k_dense_replace`.
    #[serde(default)]
    pub first_k_dense_replace: usize,
    /// `moe_layer_freq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe_layer_freq: Option<usize>,
    /// `norm_topk_prob`.
    #[serde(default)]
    pub norm_topk_prob: bool,
    /// `routed_scaling_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed_scaling_factor: Option<f64>,
    /// `topk_method` (`greedy` | `group_limited_greedy` | `noaux_tc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_method: Option<String>,
    /// `n_group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_group: Option<usize>,
    /// `topk_group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_group: Option<usize>,
    /// `aux_loss_alpha` (default 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux_loss_alpha: Option<f64>,
    /// `seq_aux` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_aux: Option<bool>,
    /// `scoring_func`: `softmax` (default) or `sigmoid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_func: Option<String>,
}

impl MoeHfFields {
    /// `n_routed_experts` routed (`None`: no MoE layer) plus `n_shared` shared experts of width
    /// `moe_intermediate_size`, `num_experts_per_tok` active; every other key at HF's default
    /// (every layer MoE, `moe_layer_freq` 1 written out, softmax greedy routing, no
    /// renormalisation, the default balance loss). Set the rest with struct-update syntax.
    pub fn new(
        n_routed_experts: Option<usize>,
        n_shared: usize,
        num_experts_per_tok: usize,
        moe_intermediate_size: usize,
    ) -> Self {
        Self {
            n_routed_experts,
            n_shared_experts: Some(n_shared),
            num_experts_per_tok,
            moe_intermediate_size,
            first_k_dense_replace: 0,
            moe_layer_freq: Some(1),
            norm_topk_prob: false,
            routed_scaling_factor: None,
            topk_method: None,
            n_group: None,
            topk_group: None,
            aux_loss_alpha: None,
            seq_aux: None,
            scoring_func: None,
        }
    }

    /// Whether layer `l` is an MoE layer (HF: experts configured, `l >= first_k_dense_replace`
    /// and `l % moe_layer_freq == 0`).
    pub fn is_moe(&self, l: usize) -> bool {
        self.n_routed_experts.is_some()
            && l >= self.first_k_dense_replace
            && l.is_multiple_of(self.moe_layer_freq.unwrap_or(1).max(1))
    }

    /// The MoE layer configuration for hidden size `d_model`.
    pub fn moe_config(&self, d_model: usize) -> crate::Result<MoeConfig> {
        let scoring = match self.scoring_func.as_deref() {
            None | Some("softmax") => crate::Scoring::Softmax,
            Some("sigmoid") => crate::Scoring::Sigmoid,
            Some(f) => {
                return Err(Error::InvalidConfig(format!(
                    "scoring_func '{f}' (softmax or sigmoid)"
                )));
            }
        };
        let topk_method = match (self.topk_method.as_deref(), self.n_group, self.topk_group) {
            (Some("noaux_tc"), n_group, topk_group) => TopkMethod::NoAuxTc {
                n_group: n_group.unwrap_or(1),
                topk_group: topk_group.unwrap_or(1),
            },
            (Some("group_limited_greedy"), Some(n_group), Some(topk_group)) => {
                TopkMethod::GroupLimited {
                    n_group,
                    topk_group,
                }
            }
            (None | Some("greedy"), _, _) => TopkMethod::Greedy,
            (Some(other), _, _) => {
                return Err(Error::InvalidConfig(format!(
                    "topk_method '{other}' (with n_group/topk_group)"
                )));
            }
        };
        Ok(MoeConfig::new(
            d_model,
            self.n_routed_experts.unwrap_or(0),
            self.num_experts_per_tok,
            self.moe_intermediate_size,
        )
        .with_n_shared(self.n_shared_experts.unwrap_or(0))
        .with_norm_topk_prob(self.norm_topk_prob)
        .with_routed_scaling_factor(self.routed_scaling_factor.unwrap_or(1.0))
        .with_topk_method(topk_method)
        .with_aux_alpha(self.aux_loss_alpha.unwrap_or(0.001))
        .with_seq_aux(self.seq_aux.unwrap_or(true))
        .with_scoring(scoring))
    }

    /// The feed-forward of layer `l`: MoE or a dense SwiGLU of width `d_ff`.
    pub fn ffn(
        &self,
        l: usize,
        d_model: usize,
        d_ff: usize,
        init: &Init<'_>,
    ) -> crate::Result<Ffn> {
        Ok(if self.is_moe(l) {
            Ffn::Moe(self.moe_config(d_model)?.init(init.device)?)
        } else {
            Ffn::Dense(SwiGlu {
                gate_proj: init.linear(d_model, d_ff, false),
                up_proj: init.linear(d_model, d_ff, false),
                down_proj: init.linear(d_ff, d_model, false),
            })
        })
    }
}

/// HF `config.json` of a `deepseek` (v1) checkpoint.
#[derive(Deserialize, Serialize, Debug, Clone)]
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
    /// The MoE keys.
    #[serde(flatten)]
    pub moe: MoeHfFields,
    /// `rms_norm_eps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    /// `rope_theta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// `max_position_embeddings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
}

impl DeepseekHfConfig {
    /// Builds the model with random weights (std 0.02).
    pub fn init(&self, device: &Device) -> crate::Result<DeepseekLm> {
        plm::layers::check_heads(self.hidden_size, self.num_attention_heads)?;
        let init = Init { std: 0.02, device };
        let d = self.hidden_size;
        let kv = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        let eps = self.rms_norm_eps.unwrap_or(1e-6);
        let norm = || RmsNormConfig::new(d).with_epsilon(eps).init(device);
        let mut layers = Vec::with_capacity(self.num_hidden_layers);
        for l in 0..self.num_hidden_layers {
            layers.push(DeepseekLayer {
                self_attn: Attention::new(d, self.num_attention_heads, kv, &init),
                mlp: self.moe.ffn(l, d, self.intermediate_size, &init)?,
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
                self.max_position_embeddings.unwrap_or(4096),
                self.rope_theta.unwrap_or(10000.0),
                &RopeScaling::None,
            ),
            hash: None,
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
    pub routing: Routing,
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
        let ids = self.hash.as_ref().map(|r| (tokens.clone(), r));
        let mut h = self.embed_tokens.forward(tokens);
        // The tables are built in f32; weights held in bf16/f16 make the activations that dtype.
        let (cos, sin) = (
            plm::layers::to_dtype(cos, h.dtype()),
            plm::layers::to_dtype(sin, h.dtype()),
        );
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
                Some(mask.clone().expand([b, n, s, s])),
                None,
                &hooks,
                l,
            );
            h = h + a;
            let x = layer.post_attention_layernorm.forward(h.clone());
            let (f, a) = layer.mlp.forward_routed_by(
                l,
                x,
                token_mask.clone(),
                ids.as_ref().map(|(t, r)| (t, *r)),
                &mut routing,
            )?;
            aux = aux + a;
            h = h + f;
            attentions.extend(probs);
        }
        let logits = self.lm_head.forward(self.norm.forward(h));
        Ok(DeepseekOutput {
            logits,
            aux_loss: aux,
            routing,
            attentions,
        })
    }

    /// Chooses how every MoE layer runs its routed experts ([`crate::Dispatch::Padded`] is the
    /// faster one on a GPU).
    pub fn with_dispatch(mut self, dispatch: crate::Dispatch) -> Self {
        for layer in &mut self.layers {
            layer.mlp.set_dispatch(dispatch);
        }
        self
    }

    /// Routes every MoE layer by a fixed map from token id to expert (the Hash Layer baseline
    /// of DeepSeekMoE Table 1, Roller et al. 2021): top-1 with weight 1, no balance loss; the
    /// routers' weights go unused. The map is not part of the weights ([`DeepseekLm::save_hf`]
    /// writes none): rebuild it from its seed.
    pub fn with_hash_routing(mut self, router: HashRouter) -> crate::Result<Self> {
        for layer in &self.layers {
            if let Ffn::Moe(m) = &layer.mlp
                && router.n_experts() != m.n_experts()
            {
                return Err(Error::InvalidConfig(format!(
                    "the hash map has {} experts, an MoE layer {}",
                    router.n_experts(),
                    m.n_experts()
                )));
            }
        }
        self.hash = Some(router);
        Ok(self)
    }

    /// The token-hash routing, when set ([`DeepseekLm::with_hash_routing`]).
    pub fn hash_routing(&self) -> Option<&HashRouter> {
        self.hash.as_ref()
    }

    /// DeepSeekMoE §4.5's test of the shared expert: every MoE layer without its shared experts
    /// and with `extra` more routed experts per token (the paper: 1), everything else as trained.
    pub fn with_shared_replaced_by_routed(mut self, extra: usize) -> crate::Result<Self> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for mut layer in self.layers {
            layer.mlp = match layer.mlp {
                Ffn::Moe(m) => {
                    let k = m.top_k() + extra;
                    Ffn::Moe(m.without_shared_experts().with_top_k(k)?)
                }
                dense => dense,
            };
            layers.push(layer);
        }
        self.layers = layers;
        Ok(self)
    }

    /// The redundancy test on every MoE layer: disable each token's `r` best routed experts
    /// (see [`MoeLayer::with_masked_top`]).
    pub fn with_masked_top(mut self, r: usize) -> crate::Result<Self> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for mut layer in self.layers {
            layer.mlp = match layer.mlp {
                Ffn::Moe(m) => Ffn::Moe(m.with_masked_top(r)?),
                dense => dense,
            };
            layers.push(layer);
        }
        self.layers = layers;
        Ok(self)
    }

    /// Writes an HF `deepseek` folder that [`DeepseekLm::load_hf`] (and the official modeling
    /// file) reads back: `config.json` (from `config`, the one the model was built with) and
    /// `model.safetensors` with the official tensor names. Each file is written atomically.
    pub fn save_hf(&self, config: &DeepseekHfConfig, dir: &Path) -> crate::Result<()> {
        let mut json = serde_json::to_value(config)
            .map_err(|e| Error::InvalidConfig(format!("config: {e}")))?;
        if let Some(obj) = json.as_object_mut() {
            obj.insert("model_type".into(), "deepseek".into());
            obj.insert(
                "architectures".into(),
                serde_json::json!(["DeepseekForCausalLM"]),
            );
            obj.insert("tie_word_embeddings".into(), false.into());
        }
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| Error::InvalidConfig(format!("config: {e}")))?;
        trainer::fs::write_atomic(&dir.join("config.json"), text.as_bytes())?;
        let bytes = hf_safetensors_bytes(self, None, &[])?;
        trainer::fs::write_atomic(&dir.join("model.safetensors"), &bytes)?;
        Ok(())
    }

    /// Tokens routed to each expert `[n_experts]`, per MoE layer in order, from a forward's
    /// routing (detached: counts carry no gradient).
    pub fn expert_loads(&self, routing: &Routing) -> Vec<Tensor<1>> {
        let moe = self.layers.iter().filter_map(|l| match &l.mlp {
            Ffn::Moe(m) => Some(m),
            Ffn::Dense(_) => None,
        });
        moe.zip(routing)
            .map(|(m, (_, idx, _))| m.expert_load(idx.clone()))
            .collect()
    }

    /// Auxiliary-loss-free balancing on every MoE layer (see
    /// [`MoeLayer::update_score_bias`]): `loads` per MoE layer in order, as from
    /// [`DeepseekLm::expert_loads`] summed over a step's batches.
    pub fn update_score_biases(mut self, loads: &[Tensor<1>], gamma: f64) -> crate::Result<Self> {
        let mut it = loads.iter();
        for layer in &mut self.layers {
            if let Ffn::Moe(m) = &mut layer.mlp {
                let load = it
                    .next()
                    .ok_or_else(|| Error::InvalidConfig("fewer loads than MoE layers".into()))?;
                m.update_score_bias(load.clone(), gamma)?;
            }
        }
        Ok(self)
    }

    /// Loads an HF `deepseek` folder (one `model.safetensors` or a sharded index) with f32
    /// parameters.
    pub fn load_hf(dir: &Path, device: &Device) -> crate::Result<Self> {
        Self::load_hf_dtype(dir, LoadDtype::F32, device)
    }

    /// Loads an HF `deepseek` folder with parameters held in `dtype`.
    pub fn load_hf_dtype(dir: &Path, dtype: LoadDtype, device: &Device) -> crate::Result<Self> {
        let (hf, weights) = plm::layers::read_hf_folder::<DeepseekHfConfig>(dir)?;
        let model = hf.init(device)?;
        let options = LoadOptions::default()
            .remap(r"^model\.", "")
            .with_skip_enum_variants(true)
            .with_dtype(dtype);
        Ok(weights.load_into(model, &options)?)
    }
}

/// Serialises `module` (a [`DeepseekLm`] or any part of it with the same paths) as safetensors
/// with HF names (`model.` prefix, enum variants dropped, linear weights transposed to
/// `[out, in]`, norm `gamma` → `weight`). `only` limits it to those module paths.
/// `remaps` are further `(regex, replacement)` renames applied to the HF names (see
/// [`crate::deepseek_v2::HF_SAVE_REMAPS`]).
pub fn hf_safetensors_bytes<M: Module>(
    module: &M,
    only: Option<&[String]>,
    remaps: &[(&str, &str)],
) -> crate::Result<Vec<u8>> {
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .with_key_remapping(r"^", "model.")
        .with_key_remapping(r"^model\.lm_head\.", "lm_head.");
    for (from, to) in remaps {
        store = store.with_key_remapping(*from, *to);
    }
    if let Some(paths) = only {
        // The filter sees names after the adapter and the enum skipping: `…Moe.…` loses the
        // variant, a norm's `gamma`/`beta` become `weight`/`bias`.
        let names = paths.iter().map(|p| {
            let mut seg: Vec<&str> = p
                .split('.')
                .filter(|s| !s.starts_with(|c: char| c.is_ascii_uppercase()))
                .collect();
            if let Some(last) = seg.last_mut() {
                *last = match *last {
                    "gamma" => "weight",
                    "beta" => "bias",
                    other => other,
                };
            }
            seg.join(".")
        });
        store = store.with_full_paths(names);
    }
    module
        .save_into(&mut store)
        .map_err(|e| plm::Error::Weights(format!("saving safetensors: {e}")))?;
    Ok(store
        .get_bytes()
        .map_err(|e| plm::Error::Weights(format!("saving safetensors: {e}")))?)
}
