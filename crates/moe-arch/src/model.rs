//! The MoE-model interface: a forward pass that reports the routing of every MoE layer, the MoE
//! layer layout, and the HF tensor names. Implemented for the DeepSeek causal LMs of this crate
//! (v1 `deepseek`, and `deepseek_v2` / `deepseek_v3`, the ESFT backbone's architecture), so
//! anything written against it (ESFT's scores, expert training, adapters, LoRA) works with each.

use crate::deepseek::{DeepseekLm, DeepseekOutput, Ffn};
use crate::deepseek_v2::DeepseekV2Lm;
use burn::module::Module;
use burn::prelude::*;

/// One MoE layer of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoeLayerInfo {
    /// Decoder-layer index (the key of the official expert config).
    pub layer: usize,
    /// Routed experts.
    pub n_experts: usize,
    /// Routed experts per token (K').
    pub top_k: usize,
    /// Whether the layer has shared experts.
    pub has_shared: bool,
}

/// A DeepSeek-style MoE causal LM.
pub trait MoeModel: Module + Sized {
    /// # Shapes
    /// `tokens` `[batch, seq]`, `token_mask` `[batch, seq]` (1 = real) → logits, balance loss
    /// and the routing `(layer, ids [batch·seq, k], gates [batch·seq, k])` of each MoE layer.
    fn forward_moe(
        &self,
        tokens: Tensor<2, Int>,
        token_mask: Option<Tensor<2, Int>>,
    ) -> crate::Result<DeepseekOutput>;

    /// The MoE layers, in order.
    fn moe_layers(&self) -> Vec<MoeLayerInfo>;

    /// Extra renames from HF names (without `model.`) to module paths when loading.
    fn hf_load_remaps() -> &'static [(&'static str, &'static str)];

    /// Extra renames from module paths (with `model.`) to HF names when saving.
    fn hf_save_remaps() -> &'static [(&'static str, &'static str)];
}

fn layers_of<'a>(mlps: impl Iterator<Item = &'a Ffn>) -> Vec<MoeLayerInfo> {
    mlps.enumerate()
        .filter_map(|(layer, f)| match f {
            Ffn::Moe(m) => Some(MoeLayerInfo {
                layer,
                n_experts: m.n_experts(),
                top_k: m.top_k(),
                has_shared: m.shared_experts.is_some(),
            }),
            Ffn::Dense(_) => None,
        })
        .collect()
}

impl MoeModel for DeepseekLm {
    fn forward_moe(
        &self,
        tokens: Tensor<2, Int>,
        token_mask: Option<Tensor<2, Int>>,
    ) -> crate::Result<DeepseekOutput> {
        self.forward(tokens, token_mask)
    }
    fn moe_layers(&self) -> Vec<MoeLayerInfo> {
        layers_of(self.layers.iter().map(|l| &l.mlp))
    }
    fn hf_load_remaps() -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn hf_save_remaps() -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

impl MoeModel for DeepseekV2Lm {
    fn forward_moe(
        &self,
        tokens: Tensor<2, Int>,
        token_mask: Option<Tensor<2, Int>>,
    ) -> crate::Result<DeepseekOutput> {
        self.forward(tokens, token_mask)
    }
    fn moe_layers(&self) -> Vec<MoeLayerInfo> {
        layers_of(self.layers.iter().map(|l| &l.mlp))
    }
    fn hf_load_remaps() -> &'static [(&'static str, &'static str)] {
        crate::deepseek_v2::HF_LOAD_REMAPS
    }
    fn hf_save_remaps() -> &'static [(&'static str, &'static str)] {
        crate::deepseek_v2::HF_SAVE_REMAPS
    }
}
