//! DeepSeek-V2 causal LM (`model_type: "deepseek_v2"`, the ESFT backbone): multi-head latent
//! attention (MLA) with decoupled RoPE and YaRN, and the MoE layers of [`crate::MoeLayer`].
//!
//! MLA (DeepSeek-V2 §2.1): `q = q_proj(x)` (or `q_b(RMSNorm(q_a(x)))` with `q_lora_rank`) split into
//! `q_nope` and `q_pe`; `[c, k_pe] = kv_a_proj_with_mqa(x)`; `[k_nope, v] = kv_b_proj(RMSNorm(c))`;
//! RoPE only on `q_pe` and the single shared `k_pe`; scores scaled by
//! `qk_head_dim^-½ · mscale(factor, mscale_all_dim)²`.
//! The checkpoint stores the rope dimensions pairwise-interleaved, so the rotation is applied to
//! pairs `(2i, 2i+1)` (transformers' complex multiplication; the remote code de-interleaves and
//! uses rotate-half, which is the same function). YaRN blends interpolated and extrapolated
//! frequencies over the correction range of `beta_fast`/`beta_slow`, and scales cos/sin by
//! `mscale(factor, mscale) / mscale(factor, mscale_all_dim)`.
//!
//! DeepSeek-V3 (`model_type: "deepseek_v3"`) is the same model with V3's router: sigmoid scores,
//! `noaux_tc` group-limited top-k with the per-expert `e_score_correction_bias` (see
//! [`crate::TopkMethod::NoAuxTc`]); its `config.json` from transformers names neither, so they
//! are V3's defaults ([`DeepseekV2HfConfig::moe_fields`]).
//!
//! | HF key (after `model.`)                                   | module path                          |
//! |-----------------------------------------------------------|--------------------------------------|
//! | `layers.l.self_attn.q_proj`                               | `layers.l.self_attn.q` (`Full`)      |
//! | `layers.l.self_attn.{q_a_proj, q_a_layernorm, q_b_proj}`  | `layers.l.self_attn.q.*` (`LowRank`) |
//! | `layers.l.self_attn.{kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj}` | same          |
//! | `layers.l.mlp.gate.weight`                                | `layers.l.mlp.gate.weight`           |
//! | `layers.l.mlp.gate.e_score_correction_bias` (V3)          | `layers.l.mlp.score_bias`            |
//! | `layers.l.mlp.{experts.j, shared_experts}.*` and the v1 names | same                             |

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::softmax;
use plm::checkpoint::{LoadDtype, LoadOptions};
use plm::layers::Init;
use serde::Deserialize;

use crate::Error;
use crate::deepseek::{DeepseekOutput, Ffn, MoeHfFields};

/// HF `config.json` of a `deepseek_v2` checkpoint.
#[derive(Deserialize, Debug, Clone)]
pub struct DeepseekV2HfConfig {
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: usize,
    /// `intermediate_size`.
    pub intermediate_size: usize,
    /// The MoE keys.
    #[serde(flatten)]
    pub moe: MoeHfFields,
    /// `q_lora_rank` (null: plain `q_proj`).
    #[serde(default)]
    pub q_lora_rank: Option<usize>,
    /// `kv_lora_rank`.
    pub kv_lora_rank: usize,
    /// `qk_nope_head_dim`.
    pub qk_nope_head_dim: usize,
    /// `qk_rope_head_dim`.
    pub qk_rope_head_dim: usize,
    /// `v_head_dim`.
    pub v_head_dim: usize,
    /// `rms_norm_eps`.
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    /// `rope_theta` (transformers < 5).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// `rope_scaling` (transformers < 5).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// `rope_parameters` (transformers ≥ 5).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// `model_type`: `deepseek_v2` (default) or `deepseek_v3`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// `rope_interleave` (DeepSeek-V3; only the interleaved layout the checkpoints use).
    #[serde(default)]
    pub rope_interleave: Option<bool>,
}

/// YaRN parameters (all from the checkpoint's rope scaling entry).
#[derive(Config, Debug, PartialEq)]
pub struct Yarn {
    /// Context extension factor.
    pub factor: f64,
    /// Pre-training context.
    pub original_max_position_embeddings: f64,
    /// Fast boundary of the correction range (rotations).
    #[config(default = 32.0)]
    pub beta_fast: f64,
    /// Slow boundary of the correction range.
    #[config(default = 1.0)]
    pub beta_slow: f64,
    /// `mscale` (numerator of the cos/sin factor).
    #[config(default = 1.0)]
    pub mscale: f64,
    /// `mscale_all_dim` (denominator of the cos/sin factor; squared into the softmax scale).
    #[config(default = 0.0)]
    pub mscale_all_dim: f64,
}

fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

/// Inverse frequencies of `dim` rope dimensions and the cos/sin multiplier.
pub fn rope_frequencies(dim: usize, theta: f64, yarn: Option<&Yarn>) -> (Vec<f64>, f64) {
    let extra: Vec<f64> = (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / dim as f64))
        .collect();
    let Some(y) = yarn else {
        return (extra, 1.0);
    };
    let correction = |rot: f64| {
        (dim as f64
            * (y.original_max_position_embeddings / (rot * 2.0 * std::f64::consts::PI)).ln())
            / (2.0 * theta.ln())
    };
    let low = correction(y.beta_fast).floor().max(0.0);
    let high = correction(y.beta_slow).ceil().min(dim as f64 - 1.0);
    let high = if low == high { high + 0.001 } else { high };
    let inv: Vec<f64> = extra
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolate = 1.0 - ramp;
            (e / y.factor) * (1.0 - extrapolate) + e * extrapolate
        })
        .collect();
    let attention = if y.mscale != 0.0 && y.mscale_all_dim != 0.0 {
        yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim)
    } else {
        yarn_mscale(y.factor, 1.0)
    };
    (inv, attention)
}

/// The query path: plain or low-rank.
// One per layer: not worth a Box (which burn's Module derive would also have to see through).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum QueryProj {
    /// `q_proj`.
    Full(Linear),
    /// `q_b_proj(RMSNorm(q_a_proj(x)))`.
    LowRank(LowRankQuery),
}

/// DeepSeek-V2's low-rank query projection.
#[derive(Module, Debug)]
pub struct LowRankQuery {
    /// `q_a_proj`.
    pub q_a_proj: Linear,
    /// `q_a_layernorm`.
    pub q_a_layernorm: RmsNorm,
    /// `q_b_proj`.
    pub q_b_proj: Linear,
}

/// Multi-head latent attention.
#[derive(Module, Debug)]
pub struct MlaAttention {
    /// Query projection(s); loaded from `q_proj` or `q_a_proj`/`q_a_layernorm`/`q_b_proj`.
    pub q: QueryProj,
    /// `kv_a_proj_with_mqa`: `d → kv_lora_rank + rope`.
    pub kv_a_proj_with_mqa: Linear,
    /// `kv_a_layernorm` over the latent.
    pub kv_a_layernorm: RmsNorm,
    /// `kv_b_proj`: latent → heads · (nope + v).
    pub kv_b_proj: Linear,
    /// `o_proj`.
    pub o_proj: Linear,
    n_heads: usize,
    nope: usize,
    rope: usize,
    v_dim: usize,
    kv_rank: usize,
    scale: f64,
}

/// Rotates interleaved pairs `(2i, 2i+1)` of `x` `[b, h, s, d]` by `cos`/`sin` `[s, d/2]`.
fn rope_interleaved(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
    let [b, h, s, d] = x.dims();
    let pairs = x.reshape([b, h, s, d / 2, 2]);
    let even = pairs
        .clone()
        .slice(s![.., .., .., .., 0..1])
        .reshape([b, h, s, d / 2]);
    let odd = pairs
        .slice(s![.., .., .., .., 1..2])
        .reshape([b, h, s, d / 2]);
    let cos = cos.reshape([1, 1, s, d / 2]).expand([b, h, s, d / 2]);
    let sin = sin.reshape([1, 1, s, d / 2]).expand([b, h, s, d / 2]);
    let re = even.clone() * cos.clone() - odd.clone() * sin.clone();
    let im = even * sin + odd * cos;
    Tensor::stack::<5>(vec![re, im], 4).reshape([b, h, s, d])
}

impl MlaAttention {
    /// # Shapes
    /// `x` `[b, s, d]`, `cos`/`sin` `[s, rope/2]`, `mask` `[b, h, s, s]` → (`[b, s, d]`, attention).
    fn forward(
        &self,
        x: Tensor<3>,
        cos: Tensor<2>,
        sin: Tensor<2>,
        mask: Tensor<4, Bool>,
    ) -> (Tensor<3>, Tensor<4>) {
        let [b, s, _] = x.dims();
        let (h, nope, rope, vd, r) = (self.n_heads, self.nope, self.rope, self.v_dim, self.kv_rank);
        let q = match &self.q {
            QueryProj::Full(p) => p.forward(x.clone()),
            QueryProj::LowRank(lr) => lr
                .q_b_proj
                .forward(lr.q_a_layernorm.forward(lr.q_a_proj.forward(x.clone()))),
        };
        let q = q.reshape([b, s, h, nope + rope]).swap_dims(1, 2); // [b, h, s, nope+rope]
        let q_nope = q.clone().slice(s![.., .., .., 0..nope]);
        let q_pe = q.slice(s![.., .., .., nope..nope + rope]);
        let c = self.kv_a_proj_with_mqa.forward(x); // [b, s, r + rope]
        let latent = c.clone().slice(s![.., .., 0..r]);
        let k_pe = c.slice(s![.., .., r..r + rope]).reshape([b, 1, s, rope]);
        let kv = self
            .kv_b_proj
            .forward(self.kv_a_layernorm.forward(latent))
            .reshape([b, s, h, nope + vd])
            .swap_dims(1, 2); // [b, h, s, nope+v]
        let k_nope = kv.clone().slice(s![.., .., .., 0..nope]);
        let v = kv.slice(s![.., .., .., nope..nope + vd]);
        let q_pe = rope_interleaved(q_pe, cos.clone(), sin.clone());
        let k_pe = rope_interleaved(k_pe, cos, sin).expand([b, h, s, rope]);
        let qs = Tensor::cat(vec![q_nope, q_pe], 3);
        let ks = Tensor::cat(vec![k_nope, k_pe], 3);
        let scores = qs.matmul(ks.swap_dims(2, 3)).mul_scalar(self.scale); // [b, h, s, s]
        // Softmax in f32 whatever the weights' dtype (as HF's eager path).
        let dtype = v.dtype();
        let scores = plm::layers::to_dtype(scores, DType::F32);
        let probs = softmax(scores.mask_fill(mask, f32::MIN), 3);
        let ctx = plm::layers::to_dtype(probs.clone(), dtype)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, s, h * vd]);
        (self.o_proj.forward(ctx), probs)
    }
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct DeepseekV2Layer {
    /// Attention.
    pub self_attn: MlaAttention,
    /// Feed-forward.
    pub mlp: Ffn,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the feed-forward.
    pub post_attention_layernorm: RmsNorm,
}

/// DeepSeek-V2 causal LM.
#[derive(Module, Debug)]
pub struct DeepseekV2Lm {
    /// Token embedding.
    pub embed_tokens: Embedding,
    /// Layers.
    pub layers: Vec<DeepseekV2Layer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection.
    pub lm_head: Linear,
    inv_freq: Vec<f64>,
    rope_mult: f64,
}

impl DeepseekV2HfConfig {
    fn theta_and_yarn(&self) -> crate::Result<(f64, Option<Yarn>)> {
        let params = self.rope_parameters.as_ref().filter(|v| !v.is_null());
        let theta = self
            .rope_theta
            .or_else(|| params.and_then(|p| p["rope_theta"].as_f64()))
            .unwrap_or(10000.0);
        let scaling = self
            .rope_scaling
            .as_ref()
            .filter(|v| !v.is_null())
            .or(params);
        let Some(v) = scaling else {
            return Ok((theta, None));
        };
        let kind = v["rope_type"]
            .as_str()
            .or(v["type"].as_str())
            .unwrap_or("default");
        match kind {
            "default" => Ok((theta, None)),
            "yarn" => {
                let num = |k: &str| v[k].as_f64();
                let factor = num("factor")
                    .ok_or_else(|| Error::InvalidConfig("yarn without factor".into()))?;
                let orig = num("original_max_position_embeddings").ok_or_else(|| {
                    Error::InvalidConfig("yarn without original_max_position_embeddings".into())
                })?;
                let mut y = Yarn::new(factor, orig);
                if let Some(x) = num("beta_fast") {
                    y.beta_fast = x;
                }
                if let Some(x) = num("beta_slow") {
                    y.beta_slow = x;
                }
                if let Some(x) = num("mscale") {
                    y.mscale = x;
                }
                if let Some(x) = num("mscale_all_dim") {
                    y.mscale_all_dim = x;
                }
                Ok((theta, Some(y)))
            }
            other => Err(Error::InvalidConfig(format!(
                "rope scaling '{other}' for deepseek_v2"
            ))),
        }
    }

    /// The MoE keys with DeepSeek-V3's defaults filled in where `config.json` leaves them out
    /// (transformers' `DeepseekV3Config` saves neither `topk_method` nor `scoring_func`: its
    /// router is always sigmoid + `noaux_tc`; `n_group` 8, `topk_group` 4, `norm_topk_prob`
    /// true, `routed_scaling_factor` 2.5 are its defaults).
    pub fn moe_fields(&self) -> crate::Result<MoeHfFields> {
        let mut moe = self.moe.clone();
        match self.model_type.as_deref() {
            None | Some("deepseek_v2") => {}
            Some("deepseek_v3") => {
                if self.rope_interleave == Some(false) {
                    return Err(Error::InvalidConfig(
                        "deepseek_v3 with rope_interleave false (only the interleaved layout)"
                            .into(),
                    ));
                }
                moe.topk_method.get_or_insert_with(|| "noaux_tc".into());
                moe.scoring_func.get_or_insert_with(|| "sigmoid".into());
                moe.n_group.get_or_insert(8);
                moe.topk_group.get_or_insert(4);
                moe.routed_scaling_factor.get_or_insert(2.5);
            }
            Some(other) => {
                return Err(Error::InvalidConfig(format!(
                    "model_type '{other}' for the DeepSeek-V2/V3 model"
                )));
            }
        }
        Ok(moe)
    }

    /// Builds the model with random weights (std 0.02).
    pub fn init(&self, device: &Device) -> crate::Result<DeepseekV2Lm> {
        let init = Init { std: 0.02, device };
        let moe = self.moe_fields()?;
        let d = self.hidden_size;
        let h = self.num_attention_heads;
        let eps = self.rms_norm_eps.unwrap_or(1e-6);
        let norm = |n: usize| RmsNormConfig::new(n).with_epsilon(eps).init(device);
        let (theta, yarn) = self.theta_and_yarn()?;
        let (inv_freq, rope_mult) = rope_frequencies(self.qk_rope_head_dim, theta, yarn.as_ref());
        let qk = self.qk_nope_head_dim + self.qk_rope_head_dim;
        let m_all = yarn
            .as_ref()
            .map(|y| {
                if y.mscale_all_dim != 0.0 {
                    yarn_mscale(y.factor, y.mscale_all_dim)
                } else {
                    1.0
                }
            })
            .unwrap_or(1.0);
        let scale = (qk as f64).powf(-0.5) * m_all * m_all;
        let mut layers = Vec::with_capacity(self.num_hidden_layers);
        for l in 0..self.num_hidden_layers {
            let mlp = moe.ffn(l, d, self.intermediate_size, &init)?;
            let q = match self.q_lora_rank {
                None => QueryProj::Full(init.linear(d, h * qk, false)),
                Some(rank) => QueryProj::LowRank(LowRankQuery {
                    q_a_proj: init.linear(d, rank, false),
                    q_a_layernorm: norm(rank),
                    q_b_proj: init.linear(rank, h * qk, false),
                }),
            };
            layers.push(DeepseekV2Layer {
                self_attn: MlaAttention {
                    q,
                    kv_a_proj_with_mqa: init.linear(
                        d,
                        self.kv_lora_rank + self.qk_rope_head_dim,
                        false,
                    ),
                    kv_a_layernorm: norm(self.kv_lora_rank),
                    kv_b_proj: init.linear(
                        self.kv_lora_rank,
                        h * (self.qk_nope_head_dim + self.v_head_dim),
                        false,
                    ),
                    o_proj: init.linear(h * self.v_head_dim, d, false),
                    n_heads: h,
                    nope: self.qk_nope_head_dim,
                    rope: self.qk_rope_head_dim,
                    v_dim: self.v_head_dim,
                    kv_rank: self.kv_lora_rank,
                    scale,
                },
                mlp,
                input_layernorm: norm(d),
                post_attention_layernorm: norm(d),
            });
        }
        Ok(DeepseekV2Lm {
            embed_tokens: init.embedding(self.vocab_size, d),
            layers,
            norm: norm(d),
            lm_head: init.linear(d, self.vocab_size, false),
            inv_freq,
            rope_mult,
        })
    }
}

/// Renames from module paths (with `model.` prefix, enum variants dropped) to HF names, for
/// [`crate::deepseek::hf_safetensors_bytes`]: the query projection lives under `self_attn.q`.
pub const HF_SAVE_REMAPS: &[(&str, &str)] = &[
    (r"self_attn\.q\.weight$", "self_attn.q_proj.weight"),
    (r"\.mlp\.score_bias$", ".mlp.gate.e_score_correction_bias"),
    (
        r"self_attn\.q\.(q_a_proj|q_a_layernorm|q_b_proj)\.",
        "self_attn.$1.",
    ),
];

/// The inverse of [`HF_SAVE_REMAPS`], applied after the `model.` prefix is dropped.
pub const HF_LOAD_REMAPS: &[(&str, &str)] = &[
    (r"self_attn\.q_proj\.", "self_attn.q."),
    (r"\.mlp\.gate\.e_score_correction_bias$", ".mlp.score_bias"),
    (
        r"self_attn\.(q_a_proj|q_a_layernorm|q_b_proj)\.",
        "self_attn.q.$1.",
    ),
];

impl DeepseekV2Lm {
    /// # Shapes
    /// `tokens` `[batch, seq]`, `token_mask` `[batch, seq]` (1 = real) → logits
    /// `[batch, seq, vocab]`, the summed balance loss, the routing of every MoE layer and the
    /// attention probabilities (see [`DeepseekOutput`]).
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        token_mask: Option<Tensor<2, Int>>,
    ) -> crate::Result<DeepseekOutput> {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(s * half);
        let mut sin = Vec::with_capacity(s * half);
        for p in 0..s {
            for &f in &self.inv_freq {
                let a = p as f64 * f;
                cos.push((a.cos() * self.rope_mult) as f32);
                sin.push((a.sin() * self.rope_mult) as f32);
            }
        }
        let cos = Tensor::<2>::from_data(TensorData::new(cos, [s, half]), &device);
        let sin = Tensor::<2>::from_data(TensorData::new(sin, [s, half]), &device);
        // burn's `tril_mask` is true strictly above the diagonal: the future positions.
        let mask = Tensor::<2, Bool>::tril_mask([s, s], 0, &device).reshape([1, 1, s, s]);
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
            let n = layer.self_attn.n_heads;
            let (a, probs) = layer.self_attn.forward(
                layer.input_layernorm.forward(h.clone()),
                cos.clone(),
                sin.clone(),
                mask.clone().expand([b, n, s, s]),
            );
            h = h + a;
            let x = layer.post_attention_layernorm.forward(h.clone());
            let (f, a) = layer
                .mlp
                .forward_routed(l, x, token_mask.clone(), &mut routing)?;
            aux = aux + a;
            h = h + f;
            attentions.push(probs);
        }
        Ok(DeepseekOutput {
            logits: self.lm_head.forward(self.norm.forward(h)),
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

    /// Writes an HF folder that [`DeepseekV2Lm::load_hf`] and transformers read back:
    /// `config` (the text of the `config.json` the model was loaded with) and `model.safetensors`
    /// with the HF names, each written atomically.
    pub fn save_hf(&self, config: &str, dir: &Path) -> crate::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| plm::Error::io(dir, e))?;
        trainer::fs::write_atomic(&dir.join("config.json"), config.as_bytes())?;
        let bytes = crate::deepseek::hf_safetensors_bytes(self, None, HF_SAVE_REMAPS)?;
        trainer::fs::write_atomic(&dir.join("model.safetensors"), &bytes)?;
        Ok(())
    }

    /// Loads an HF `deepseek_v2` folder (one `model.safetensors` or a sharded index) with f32
    /// parameters.
    pub fn load_hf(dir: &Path, device: &Device) -> crate::Result<Self> {
        Self::load_hf_dtype(dir, LoadDtype::F32, device)
    }

    /// Loads an HF `deepseek_v2` folder with parameters held in `dtype`.
    pub fn load_hf_dtype(dir: &Path, dtype: LoadDtype, device: &Device) -> crate::Result<Self> {
        let (hf, weights) = plm::layers::read_hf_folder::<DeepseekV2HfConfig>(dir)?;
        let model = hf.init(device)?;
        let mut options = LoadOptions::default()
            .remap(r"^model\.", "")
            .with_skip_enum_variants(true)
            .with_dtype(dtype)
            .keep_f32("score_bias");
        for (from, to) in HF_LOAD_REMAPS {
            options = options.remap(from, to);
        }
        Ok(weights.load_into(model, &options)?)
    }
}
