//! BERT encoder with HF `BertModel` names: embeddings with token types, post-LN layers, pooler,
//! and a sequence-classification head.
//!
//! | HF key (`model.safetensors`)                   | module path                                  |
//! |------------------------------------------------|----------------------------------------------|
//! | `embeddings.{word,position,token_type}_embeddings.weight` | same                              |
//! | `embeddings.LayerNorm.{weight,bias}`           | `embeddings.layer_norm.{gamma,beta}`         |
//! | `encoder.layer.N.attention.self.{query,key,value}` | `encoder.layer.N.attention.self_attn.*`  |
//! | `encoder.layer.N.attention.output.dense`       | same                                         |
//! | `encoder.layer.N.attention.output.LayerNorm`   | `encoder.layer.N.attention.output.layer_norm` |
//! | `encoder.layer.N.intermediate.dense`           | same                                         |
//! | `encoder.layer.N.output.{dense,LayerNorm}`     | `encoder.layer.N.output.{dense,layer_norm}`  |
//! | `pooler.dense`                                 | `pooler.dense`                               |
//!
//! A leading `bert.` (task checkpoints such as `BertForSequenceClassification`) is stripped.
//! Linear weights are transposed from PyTorch's `[out, in]` by burn's `PyTorchToBurnAdapter`.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::Deserialize;

use crate::Error;
use crate::checkpoint::{LoadDtype, LoadOptions};
use crate::hooks::AttentionHooks;
use crate::kernels::{linear, linear_add_norm, linear_gelu};

/// Configuration of a [`Bert`] encoder (burn names; see [`BertHfConfig`] for HF's).
#[derive(Config, Debug)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Encoder layers.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Learned positions. Default 512.
    #[config(default = 512)]
    pub max_position_embeddings: usize,
    /// Segment (token type) vocabulary. Default 2.
    #[config(default = 2)]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon. Default 1e-12.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Build the pooler (`tanh(dense(h[CLS]))`). Default true.
    #[config(default = true)]
    pub with_pooler: bool,
    /// Normal initialisation std of weights. Default 0.02.
    #[config(default = 0.02)]
    pub initializer_range: f64,
}

/// HF `config.json` of a BERT checkpoint (only the keys this encoder uses).
#[derive(Deserialize, Debug, Clone)]
pub struct BertHfConfig {
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
    /// `max_position_embeddings`.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// `type_vocab_size`.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// `layer_norm_eps`.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// `hidden_act`; only `gelu` (erf) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// `position_embedding_type`; only `absolute` is supported.
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
}

fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_pos_type() -> String {
    "absolute".into()
}

impl BertHfConfig {
    /// The burn configuration, or an error for features this encoder does not implement.
    pub fn to_config(&self) -> crate::Result<BertConfig> {
        if self.hidden_act != "gelu" {
            return Err(Error::Unsupported(format!(
                "hidden_act '{}' (only exact gelu)",
                self.hidden_act
            )));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::Unsupported(format!(
                "position_embedding_type '{}'",
                self.position_embedding_type
            )));
        }
        Ok(BertConfig::new(
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
        )
        .with_max_position_embeddings(self.max_position_embeddings)
        .with_type_vocab_size(self.type_vocab_size)
        .with_layer_norm_eps(self.layer_norm_eps))
    }
}

impl BertConfig {
    /// Builds the encoder with random weights.
    pub fn init(&self, device: &Device) -> crate::Result<Bert> {
        crate::layers::check_heads(self.d_model, self.n_heads)?;
        let init = crate::layers::Init {
            std: self.initializer_range,
            device,
        };
        let linear = |i: usize, o: usize| init.linear(i, o, true);
        let ln = || init.layer_norm(self.d_model, self.layer_norm_eps);
        let emb = |n: usize| init.embedding(n, self.d_model);
        let layer = (0..self.n_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attn: BertSelfAttention {
                        query: linear(self.d_model, self.d_model),
                        key: linear(self.d_model, self.d_model),
                        value: linear(self.d_model, self.d_model),
                        n_heads: self.n_heads,
                    },
                    output: DenseNorm {
                        dense: linear(self.d_model, self.d_model),
                        layer_norm: ln(),
                    },
                },
                intermediate: Intermediate {
                    dense: linear(self.d_model, self.d_ff),
                },
                output: DenseNorm {
                    dense: linear(self.d_ff, self.d_model),
                    layer_norm: ln(),
                },
            })
            .collect();
        Ok(Bert {
            embeddings: BertEmbeddings {
                word_embeddings: emb(self.vocab_size),
                position_embeddings: emb(self.max_position_embeddings),
                token_type_embeddings: emb(self.type_vocab_size),
                layer_norm: ln(),
            },
            encoder: BertEncoder {
                layer,
                layer_norm_eps: self.layer_norm_eps,
            },
            pooler: self.with_pooler.then(|| Pooler {
                dense: linear(self.d_model, self.d_model),
            }),
        })
    }
}

/// Word + position + token-type embeddings, then LayerNorm.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// Token embedding.
    pub word_embeddings: Embedding,
    /// Learned absolute positions.
    pub position_embeddings: Embedding,
    /// Segment embedding.
    pub token_type_embeddings: Embedding,
    /// Norm.
    pub layer_norm: LayerNorm,
}

/// The three projections of self-attention.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// Query.
    pub query: Linear,
    /// Key.
    pub key: Linear,
    /// Value.
    pub value: Linear,
    n_heads: usize,
}

/// A dense layer followed by residual add and LayerNorm (post-LN).
#[derive(Module, Debug)]
pub struct DenseNorm {
    /// Projection.
    pub dense: Linear,
    /// Norm after the residual.
    pub layer_norm: LayerNorm,
}

/// Self-attention and its output block.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// Q/K/V.
    pub self_attn: BertSelfAttention,
    /// Output projection + norm.
    pub output: DenseNorm,
}

/// The first feed-forward projection.
#[derive(Module, Debug)]
pub struct Intermediate {
    /// `d_model → d_ff`.
    pub dense: Linear,
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Attention block.
    pub attention: BertAttention,
    /// `gelu(dense(x))`.
    pub intermediate: Intermediate,
    /// `d_ff → d_model` + norm.
    pub output: DenseNorm,
}

/// The layer stack.
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// Layers (HF name `layer`).
    pub layer: Vec<BertLayer>,
    /// The layer norms' epsilon (`layer_norm_eps`; burn's `LayerNorm` keeps its own private,
    /// and the fused add & norm on the host path needs it).
    pub layer_norm_eps: f64,
}

/// `tanh(dense(h[CLS]))`.
#[derive(Module, Debug)]
pub struct Pooler {
    /// Projection.
    pub dense: Linear,
}

/// BERT encoder.
#[derive(Module, Debug)]
pub struct Bert {
    /// Embeddings.
    pub embeddings: BertEmbeddings,
    /// Layers.
    pub encoder: BertEncoder,
    /// Pooler, when built.
    pub pooler: Option<Pooler>,
}

/// What [`Bert::forward`] returns.
#[derive(Debug)]
pub struct BertOutput {
    /// Last layer `[batch, seq, d_model]`.
    pub last_hidden_state: Tensor<3>,
    /// Pooler output `[batch, d_model]`, when the model has a pooler.
    pub pooler_output: Option<Tensor<2>>,
    /// Embedding output and every layer's output, `n_layers + 1` tensors `[batch, seq, d_model]`.
    pub hidden_states: Vec<Tensor<3>>,
    /// Attention probabilities of every layer `[batch, heads, seq, seq]`; empty when the hooks
    /// skip them ([`AttentionHooks::fast`], what [`Bert::forward`] uses).
    pub attentions: Vec<Tensor<4>>,
    /// Keys and values of every layer `[batch, heads, seq, head_dim]`.
    pub kv: Vec<(Tensor<4>, Tensor<4>)>,
}

impl Bert {
    /// # Shapes
    /// `input_ids`, `token_type_ids`, `attention_mask` `[batch, seq]` (mask: 1 = real token,
    /// 0 = padding; padded keys get no attention) → [`BertOutput`].
    ///
    /// `seq` must fit the learned position table ([`Bert::try_forward`] checks it).
    ///
    /// Runs the fused attention op and returns no `attentions` (as HF's default
    /// `output_attentions=False`); [`Bert::forward_with`] with [`AttentionHooks::none`] returns
    /// them.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> BertOutput {
        self.forward_with(
            input_ids,
            token_type_ids,
            attention_mask,
            &AttentionHooks::fast(),
        )
    }

    /// [`Bert::forward`] that first checks the input against the learned position table:
    /// [`crate::Error::SequenceTooLong`] instead of an out-of-bounds lookup.
    pub fn try_forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> crate::Result<BertOutput> {
        self.check_len(input_ids.dims()[1])?;
        Ok(self.forward(input_ids, token_type_ids, attention_mask))
    }

    /// Checks that `seq` positions fit the learned position table.
    pub fn check_len(&self, seq: usize) -> crate::Result<()> {
        let max = self.embeddings.position_embeddings.weight.dims()[0];
        if seq > max {
            return Err(Error::SequenceTooLong { len: seq, max });
        }
        Ok(())
    }

    /// [`Bert::forward`] with attention hooks (see [`crate::hooks`]).
    pub fn forward_with(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        attention_mask: Option<Tensor<2, Int>>,
        hooks: &AttentionHooks,
    ) -> BertOutput {
        let [b, _] = input_ids.dims();
        let mut h = self.embed(input_ids, token_type_ids);
        let key_mask = attention_mask.map(Self::key_mask);
        let mut hidden_states = vec![h.clone()];
        let mut attentions = Vec::with_capacity(self.encoder.layer.len());
        let mut kv = Vec::with_capacity(self.encoder.layer.len());
        for l in 0..self.encoder.layer.len() {
            let (out, probs, layer_kv) = self.layer_forward(l, h, key_mask.clone(), hooks);
            h = out;
            hidden_states.push(h.clone());
            attentions.extend(probs);
            kv.push(layer_kv);
        }
        let pooler_output = self.pooler.as_ref().map(|p| {
            let [_, _, d] = h.dims();
            let cls = h.clone().slice(s![.., 0..1, ..]).reshape([b, d]);
            p.dense.forward(cls).tanh()
        });
        BertOutput {
            last_hidden_state: h,
            pooler_output,
            hidden_states,
            attentions,
            kv,
        }
    }

    /// The embedding output (word + position + token type, LayerNorm).
    ///
    /// # Shapes
    /// `input_ids`, `token_type_ids` `[batch, seq]` → `[batch, seq, d_model]`.
    pub fn embed(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..s as i64, &device)
            .reshape([1, s])
            .expand([b, s]);
        let types = token_type_ids.unwrap_or_else(|| Tensor::zeros([b, s], &device));
        let e = &self.embeddings;
        let h = e.word_embeddings.forward(input_ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        e.layer_norm.forward(h)
    }

    /// The attention key mask of an attention mask: `[batch, seq]` (1 = real) →
    /// `[batch, 1, 1, seq]` (true = hide). Padded keys are masked with the most negative
    /// float, as HF's extended attention mask.
    pub fn key_mask(attention_mask: Tensor<2, Int>) -> Tensor<4, Bool> {
        let [b, s] = attention_mask.dims();
        attention_mask.equal_elem(0).reshape([b, 1, 1, s])
    }

    /// Runs layer `l` alone (for layer-by-layer inference such as early exits).
    ///
    /// # Shapes
    /// `h` `[batch, seq, d_model]`, `key_mask` from [`Bert::key_mask`] → (output, attention
    /// probabilities `[batch, heads, seq, seq]` unless the hooks skip them, keys and values).
    pub fn layer_forward(
        &self,
        l: usize,
        h: Tensor<3>,
        key_mask: Option<Tensor<4, Bool>>,
        hooks: &AttentionHooks,
    ) -> (Tensor<3>, Option<Tensor<4>>, (Tensor<4>, Tensor<4>)) {
        let (out, probs, kv, _) = self.layer_forward_ffn(l, h, key_mask, hooks);
        (out, probs, kv)
    }

    /// [`Bert::layer_forward`] that also returns the feed-forward activations after GELU
    /// `[batch, seq, intermediate]` (for neuron statistics such as Fine-pruning's).
    pub fn layer_forward_ffn(
        &self,
        l: usize,
        h: Tensor<3>,
        key_mask: Option<Tensor<4, Bool>>,
        hooks: &AttentionHooks,
    ) -> (
        Tensor<3>,
        Option<Tensor<4>>,
        (Tensor<4>, Tensor<4>),
        Tensor<3>,
    ) {
        let layer = &self.encoder.layer[l];
        let (ctx, probs, layer_kv) =
            layer
                .attention
                .self_attn
                .forward(h.clone(), key_mask, hooks, l);
        let a = &layer.attention.output;
        let eps = self.encoder.layer_norm_eps;
        let h1 = linear_add_norm(&a.dense, ctx, h, &a.layer_norm, eps);
        let ff = linear_gelu(&layer.intermediate.dense, h1.clone());
        let o = &layer.output;
        (
            linear_add_norm(&o.dense, ff.clone(), h1, &o.layer_norm, eps),
            probs,
            layer_kv,
            ff,
        )
    }

    /// Keeps the first `n` layers (a shallower complete model, e.g. the small members of a
    /// cascade).
    pub fn truncated(mut self, n: usize) -> Self {
        self.encoder.layer.truncate(n);
        self
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    /// Loads an HF BERT folder (`config.json` + `model.safetensors` or a sharded index) with
    /// f32 parameters.
    pub fn load_hf(dir: &Path, device: &Device) -> crate::Result<Self> {
        Self::load_hf_dtype(dir, LoadDtype::F32, device)
    }

    /// Loads an HF BERT folder with parameters held in `dtype`.
    pub fn load_hf_dtype(dir: &Path, dtype: LoadDtype, device: &Device) -> crate::Result<Self> {
        let (hf, weights) = crate::layers::read_hf_folder::<BertHfConfig>(dir)?;
        // The pooler is built only when the checkpoint has one.
        let has_pooler = weights.names().any(|n| n.ends_with("pooler.dense.weight"));
        let model = hf.to_config()?.with_with_pooler(has_pooler).init(device)?;
        weights.load_into(model, &hf_names(true).with_dtype(dtype))
    }

    /// Replaces every parameter with the tensors of an HF safetensors file.
    pub fn load_safetensors(self, path: &Path) -> crate::Result<Self> {
        crate::safetensors::validate(path)?;
        self.load_store(SafetensorsStore::from_file(path), path)
    }

    /// Loads a sentence-transformers BERT exported to ONNX (e.g. paraphrase-MiniLM-L3-v2): the
    /// float initializers are read in Rust and mapped back to HF names (see [`crate::onnx`]).
    /// ONNX keeps no config, so the head count is an argument; the other sizes come from the
    /// weight shapes.
    pub fn load_onnx(path: &Path, n_heads: usize, device: &Device) -> crate::Result<Self> {
        let graph = crate::onnx::Graph::open(path)?;
        let tensors = graph
            .hf_tensors("auto_model.")
            .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))?;
        let shape = |name: &str| -> crate::Result<Vec<usize>> {
            tensors
                .iter()
                .find(|t| t.0 == name)
                .map(|t| t.1.clone())
                .ok_or_else(|| Error::MissingTensor {
                    tensor: name.into(),
                    file: path.to_path_buf(),
                })
        };
        let word = shape("embeddings.word_embeddings.weight")?;
        let pos = shape("embeddings.position_embeddings.weight")?;
        let types = shape("embeddings.token_type_embeddings.weight")?;
        let ff = shape("encoder.layer.0.intermediate.dense.weight")?;
        let n_layers = (0..)
            .take_while(|i| {
                tensors
                    .iter()
                    .any(|t| t.0 == format!("encoder.layer.{i}.output.dense.weight"))
            })
            .count();
        let has_pooler = tensors.iter().any(|t| t.0 == "pooler.dense.weight");
        let cfg = BertConfig::new(word[0], word[1], n_layers, n_heads, ff[0])
            .with_max_position_embeddings(pos[0])
            .with_type_vocab_size(types[0])
            .with_with_pooler(has_pooler);
        let bytes = crate::safetensors::to_bytes(&tensors);
        drop(tensors);
        cfg.init(device)?
            .load_store(SafetensorsStore::from_bytes(Some(bytes)), path)
    }

    fn load_store(mut self, store: SafetensorsStore, path: &Path) -> crate::Result<Self> {
        let mut store = store
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^bert\.", "")
            .with_key_remapping(r"\.attention\.self\.", ".attention.self_attn.")
            .with_key_remapping(r"\.LayerNorm\.", ".layer_norm.")
            .with_key_remapping(r"^embeddings\.LayerNorm\.", "embeddings.layer_norm.")
            .allow_partial(true);
        let res = self
            .load_from(&mut store)
            .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))?;
        crate::safetensors::check_apply(path, &res)?;
        Ok(self)
    }
}

/// HF BERT names → module paths (`bert.` stripped for a bare encoder).
fn hf_names(strip_bert: bool) -> LoadOptions {
    let options = LoadOptions::default();
    let options = if strip_bert {
        options.remap(r"^bert\.", "")
    } else {
        options
    };
    options
        .remap(r"\.attention\.self\.", ".attention.self_attn.")
        .remap(r"\.LayerNorm\.", ".layer_norm.")
}

impl BertSelfAttention {
    /// # Shapes
    /// `x` `[batch, seq, d_model]`, `key_mask` `[batch, 1, 1, seq]` (true = hide) →
    /// (context `[batch, seq, d_model]`, probabilities `[batch, heads, seq, seq]` unless the
    /// hooks skip them, keys and values `[batch, heads, seq, head_dim]`).
    pub fn forward(
        &self,
        x: Tensor<3>,
        key_mask: Option<Tensor<4, Bool>>,
        hooks: &AttentionHooks,
        layer: usize,
    ) -> (Tensor<3>, Option<Tensor<4>>, (Tensor<4>, Tensor<4>)) {
        let [b, s, d] = x.dims();
        let hd = d / self.n_heads;
        let heads = |t: Tensor<3>| t.reshape([b, s, self.n_heads, hd]).swap_dims(1, 2); // [b, h, s, hd]
        let (q, k, v) = (
            linear(&self.query, x.clone()),
            linear(&self.key, x.clone()),
            linear(&self.value, x),
        );
        let key_rows = match &key_mask {
            Some(m) if m.dims() == [b, 1, 1, s] => Some(Some(m.clone().reshape([b, s]))),
            Some(_) => None,
            None => Some(None),
        };
        if let Some(key_rows) = key_rows
            && !hooks.needs_probs(layer)
            && !hooks.bias.contains_key(&layer)
            && let Ok(ctx) = crate::kernels::attention_rows(
                q.clone(),
                k.clone(),
                v.clone(),
                self.n_heads,
                self.n_heads,
                key_rows,
                false,
            )
        {
            // no probabilities asked for: the context straight from the projections' rows
            return (ctx, None, (heads(k), heads(v)));
        }
        let (q, k, v) = (heads(q), heads(k), heads(v));
        let mask = key_mask.map(|m| m.expand([b, self.n_heads, s, s]));
        let (ctx, probs) = hooks.attend(layer, q, k.clone(), v.clone(), mask);
        let ctx = ctx.swap_dims(1, 2).reshape([b, s, d]);
        (ctx, probs, (k, v))
    }
}

/// BERT with a classification head on the pooled `[CLS]` state, as HF's
/// `BertForSequenceClassification` (`bert.*` + `classifier.{weight,bias}`); sentence pairs are
/// told apart by `token_type_ids`.
#[derive(Module, Debug)]
pub struct BertClassifier {
    /// The encoder (with pooler).
    pub bert: Bert,
    /// `d_model → n_labels`.
    pub classifier: Linear,
    /// Dropout before the head (HF `classifier_dropout` or `hidden_dropout_prob`).
    pub dropout: burn::nn::Dropout,
}

impl BertClassifier {
    /// A fresh head of `n_labels` outputs over an encoder that has a pooler.
    pub fn new(bert: Bert, n_labels: usize, dropout: f64, device: &Device) -> crate::Result<Self> {
        let d = bert.embeddings.word_embeddings.weight.dims()[1];
        if bert.pooler.is_none() {
            return Err(Error::InvalidConfig(
                "the classifier reads the pooler; the encoder has none".into(),
            ));
        }
        Ok(Self {
            bert,
            classifier: crate::layers::Init { std: 0.02, device }.linear(d, n_labels, true),
            dropout: burn::nn::DropoutConfig::new(dropout).init(),
        })
    }

    /// Loads an HF `BertForSequenceClassification` folder.
    pub fn load_hf(dir: &Path, device: &Device) -> crate::Result<Self> {
        let (hf, weights) = crate::layers::read_hf_folder::<BertHfConfig>(dir)?;
        let n_labels = weights
            .tensor("classifier.weight")
            .map(|(_, t)| t.shape[0])
            .ok_or_else(|| Error::MissingTensor {
                tensor: "classifier.weight".into(),
                file: dir.to_path_buf(),
            })?;
        let bert = hf.to_config()?.init(device)?;
        let model = Self::new(bert, n_labels, 0.1, device)?;
        weights.load_into(model, &hf_names(false))
    }

    /// # Shapes
    /// `[batch, seq]` inputs → logits `[batch, n_labels]`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<2> {
        let out = self.bert.forward(input_ids, token_type_ids, attention_mask);
        let pooled = out.pooler_output.unwrap_or_else(|| {
            let [b, _, d] = out.last_hidden_state.dims();
            out.last_hidden_state
                .slice(s![.., 0..1, ..])
                .reshape([b, d])
        });
        self.classifier.forward(self.dropout.forward(pooled))
    }
}

/// How a [`PooledClassifier`] turns token states into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pooling {
    /// The `[CLS]` state through the BERT pooler (dense + tanh) when the encoder has one, the
    /// raw `[CLS]` state otherwise (the head of `BertForSequenceClassification`).
    Cls,
    /// The mean of the real tokens' states: the pooling the sentence-transformers MiniLM
    /// checkpoints were trained with.
    Mean,
}

/// A sentence classifier: encoder → pooling → dropout → linear, for any encoder (pooler or
/// not) and either pooling.
#[derive(Module, Debug)]
pub struct PooledClassifier {
    /// The encoder.
    pub bert: Bert,
    /// `d_model → n_labels`.
    pub head: Linear,
    /// Dropout before the head.
    pub dropout: burn::nn::Dropout,
    #[module(skip)]
    mean_pool: bool,
}

impl PooledClassifier {
    /// A fresh head of `n_labels` classes on `bert`.
    pub fn new(
        bert: Bert,
        n_labels: usize,
        pooling: Pooling,
        dropout: f64,
        device: &Device,
    ) -> Self {
        let d = bert.embeddings.word_embeddings.weight.dims()[1];
        Self {
            bert,
            head: crate::layers::Init { std: 0.02, device }.linear(d, n_labels, true),
            dropout: burn::nn::DropoutConfig::new(dropout).init(),
            mean_pool: pooling == Pooling::Mean,
        }
    }

    /// Encoder layers.
    pub fn n_layers(&self) -> usize {
        self.bert.n_layers()
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        if self.mean_pool {
            Pooling::Mean
        } else {
            Pooling::Cls
        }
    }

    /// Pools a hidden state of this classifier's encoder.
    ///
    /// # Shapes
    /// `h` `[batch, seq, d]`, `mask` `[batch, seq]` → `[batch, d]`.
    pub fn pool(&self, h: Tensor<3>, mask: Tensor<2, Int>) -> Tensor<2> {
        pool_hidden(&self.bert, h, mask, self.pooling())
    }

    /// # Shapes
    /// `ids`, `mask` `[batch, seq]` → logits `[batch, n_labels]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<2> {
        let h = self
            .bert
            .forward(ids, None, Some(mask.clone()))
            .last_hidden_state;
        let pooled = self.pool(h, mask);
        self.head.forward(self.dropout.forward(pooled))
    }
}

/// Pools `h` `[batch, seq, d]` of `bert` → `[batch, d]`.
pub fn pool_hidden(bert: &Bert, h: Tensor<3>, mask: Tensor<2, Int>, pooling: Pooling) -> Tensor<2> {
    if pooling == Pooling::Mean {
        return mean_pool(h, mask);
    }
    let [b, _, d] = h.dims();
    let cls = h.slice(s![.., 0..1, ..]).reshape([b, d]);
    match &bert.pooler {
        Some(p) => p.dense.forward(cls).tanh(),
        None => cls,
    }
}

/// Mean cross-entropy of class logits `[batch, classes]` against labels `[batch]` → `[1]`.
pub fn classification_loss(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    burn::tensor::activation::log_softmax(logits, 1)
        .gather(1, labels.reshape([b, 1]))
        .mean()
        .neg()
        .reshape([1])
}

/// Mean of the token states over real (mask = 1) positions: sentence-transformers' mean pooling.
///
/// # Shapes
/// `hidden` `[batch, seq, d]`, `mask` `[batch, seq]` → `[batch, d]`.
pub fn mean_pool(hidden: Tensor<3>, mask: Tensor<2, Int>) -> Tensor<2> {
    let [b, s, d] = hidden.dims();
    let m = mask.float().reshape([b, s, 1]); // [b, s, 1]
    let summed = (hidden * m.clone()).sum_dim(1).reshape([b, d]);
    let counts = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
    summed / counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(d: &Device) -> Bert {
        d.seed(7);
        BertConfig::new(40, 16, 2, 4, 32)
            .with_max_position_embeddings(16)
            .init(d)
            .unwrap()
    }

    fn ids(v: Vec<i64>, shape: [usize; 2], d: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(v, shape), d)
    }

    #[test]
    fn padding_never_changes_the_unpadded_outputs() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        let m = tiny(&d);
        let short = m.forward(ids(vec![2, 5, 9], [1, 3], &d), None, None);
        let padded = m.forward(
            ids(vec![2, 5, 9, 0, 0], [1, 5], &d),
            None,
            Some(ids(vec![1, 1, 1, 0, 0], [1, 5], &d)),
        );
        let a = short
            .last_hidden_state
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = padded
            .last_hidden_state
            .slice(s![.., 0..3, ..])
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
    }

    #[test]
    fn hooks_reach_every_encoder_layer() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        let m = tiny(&d);
        let x = ids(vec![3, 4, 5, 6], [1, 4], &d);
        let hooks = AttentionHooks::none()
            .block(1, Some(&[2]), &[0, 1, 2, 3], &[0], 4, 4, &d)
            .unwrap();
        assert!(
            AttentionHooks::none()
                .block(1, Some(&[4]), &[0], &[0], 4, 4, &d)
                .is_err(),
            "a head past n_heads is an error"
        );
        let out = m.forward_with(x, None, None, &hooks);
        let a = out.attentions[1].clone().slice(s![.., 2..3, .., 0..1]);
        assert!(
            a.into_data()
                .try_to_vec::<f32>()
                .unwrap()
                .iter()
                .all(|&v| v == 0.0)
        );
        let other = out.attentions[1].clone().slice(s![.., 1..2, .., 0..1]);
        assert!(
            other
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
                .iter()
                .any(|&v| v > 0.0)
        );
        assert_eq!(out.hidden_states.len(), 3);
    }
}
