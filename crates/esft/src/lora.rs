//! The LoRA baseline (Hu et al., 2022) on any [`MoeModel`]: every linear weight W (`[in, out]`
//! in burn) except the embeddings and `lm_head` gets W + s·A·B with A `[in, r]`, B `[r, out]`,
//! s = alpha / r; B starts at zero, so training starts from the base model. The base stays
//! untouched: each forward maps the base weights to W.detach() + s·A·B.
//!
//! The router (`mlp.gate`) is a linear layer too; [`LoraConfig::include_router`] (default
//! true, as ESFT applies LoRA to "all parameters except embeddings and lm_head") decides.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::model::MoeModel;
use trainer::host::ToHost;

/// LoRA settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r (paper: 8).
    pub rank: usize,
    /// alpha; the scale is alpha / r (paper: scaling 2, i.e. alpha = 2r).
    pub alpha: f64,
    /// Adapt the routers too.
    pub include_router: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            include_router: true,
        }
    }
}

/// One adapted weight: `a` `[in, r]`, `b` `[r, out]`.
#[derive(Module, Debug)]
pub struct LoraPair {
    /// Down projection.
    pub a: Param<Tensor<2>>,
    /// Up projection (zero at start).
    pub b: Param<Tensor<2>>,
}

/// A base model with LoRA pairs. Train it with the trainable predicate [`Lora::is_lora`].
#[derive(Module, Debug)]
pub struct Lora<M: MoeModel> {
    /// The frozen base model.
    pub base: M,
    /// One pair per adapted weight, in [`Lora::targets`] order.
    pub pairs: Vec<LoraPair>,
    #[module(skip)]
    targets: Vec<String>,
    #[module(skip)]
    scale: f64,
}

/// Whether the weight at `path` (2-D) gets a LoRA pair.
fn is_target(path: &str, cfg: &LoraConfig) -> bool {
    let seg: Vec<&str> = path.split('.').collect();
    if seg.last() != Some(&"weight")
        || seg.first() == Some(&"embed_tokens")
        || seg.first() == Some(&"lm_head")
    {
        return false;
    }
    let module = seg
        .len()
        .checked_sub(2)
        .and_then(|i| seg.get(i))
        .copied()
        .unwrap_or("");
    if module == "gate" {
        return cfg.include_router;
    }
    true
}

impl<M: MoeModel> Lora<M> {
    /// Wraps `base` with fresh pairs on every target weight (A ~ U(±1/√in), B = 0).
    pub fn new(base: M, cfg: &LoraConfig, device: &Device) -> crate::Result<Self> {
        if cfg.rank == 0 {
            return Err(crate::Error::InvalidConfig("LoRA rank 0".into()));
        }
        let mut targets = Vec::new();
        let mut pairs = Vec::new();
        for p in trainer::inventory(&base) {
            if p.shape.len() == 2 && is_target(&p.path, cfg) {
                let (din, dout) = (p.shape[0], p.shape[1]);
                let bound = 1.0 / (din as f64).sqrt();
                pairs.push(LoraPair {
                    a: Param::from_tensor(Tensor::random(
                        [din, cfg.rank],
                        Distribution::Uniform(-bound, bound),
                        device,
                    )),
                    b: Param::from_tensor(Tensor::zeros([cfg.rank, dout], device)),
                });
                targets.push(p.path);
            }
        }
        Ok(Self {
            base,
            pairs,
            targets,
            scale: cfg.alpha / cfg.rank as f64,
        })
    }

    /// Module paths of the adapted weights.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The trainable predicate: only the LoRA pairs train.
    pub fn is_lora(path: &str) -> bool {
        path.starts_with("pairs.")
    }

    /// Scalars in the pairs.
    pub fn num_params(&self) -> usize {
        self.pairs
            .iter()
            .map(|p| {
                p.a.val().dims().iter().product::<usize>()
                    + p.b.val().dims().iter().product::<usize>()
            })
            .sum()
    }

    /// The base model with W + s·A·B on every target (differentiable in A and B; the base
    /// weights are detached). Use it for the forward pass while training, and as the merged
    /// model afterwards.
    pub fn merged(&self) -> M {
        let deltas: HashMap<String, Tensor<2>> = self
            .targets
            .iter()
            .zip(&self.pairs)
            .map(|(t, p)| {
                (
                    t.clone(),
                    p.a.val().matmul(p.b.val()).mul_scalar(self.scale),
                )
            })
            .collect();
        self.base.clone().map(&mut AddDelta {
            stack: Vec::new(),
            deltas: &deltas,
        })
    }

    /// The pairs as safetensors bytes, PEFT-style names
    /// (`model.layers.0.self_attn.q_proj.lora_A.weight` `[r, in]`, `lora_B` `[out, r]`).
    pub fn adapter_bytes(&self) -> crate::Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for (t, p) in self.targets.iter().zip(&self.pairs) {
            let name: Vec<&str> = t
                .split('.')
                .filter(|s| !s.starts_with(|c: char| c.is_ascii_uppercase()))
                .collect();
            let stem = format!("model.{}", name[..name.len() - 1].join("."));
            for (suffix, v) in [("lora_A", p.a.val()), ("lora_B", p.b.val())] {
                let v = v.transpose();
                let shape = v.dims().to_vec();
                let data = v.to_f32s()?;
                tensors.push((format!("{stem}.{suffix}.weight"), shape, data));
            }
        }
        Ok(plm::safetensors::to_bytes(&tensors))
    }
}

struct AddDelta<'a> {
    stack: Vec<String>,
    deltas: &'a HashMap<String, Tensor<2>>,
}

impl ModuleMapper for AddDelta<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.stack.join(".");
        match self.deltas.get(&path) {
            Some(delta) if D == 2 => {
                let id: ParamId = param.id;
                let w = param.val();
                let dims = w.dims();
                // The pairs stay f32 beside a base held in bf16: the merged weight takes the
                // base's dtype (the cast is differentiable, so A and B still get gradients).
                let delta = plm::layers::to_dtype(delta.clone().reshape(dims), w.dtype());
                Param::initialized(id, w.detach() + delta)
            }
            _ => param,
        }
    }
}
