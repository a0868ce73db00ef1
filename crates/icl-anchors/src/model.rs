//! The one thing the analyses need from a decoder: logits and attention probabilities under
//! attention hooks. Implemented for every decoder of `plm` (Llama-style with RoPE and GPT-2
//! style with learned positions), through `plm`'s hook interface rather than a monkey-patch.

use burn::prelude::*;
use plm::gpt2::Gpt2;
use plm::hooks::AttentionHooks;
use plm::llama::Llama;

/// A causal LM with attention hooks.
pub trait CausalLm {
    /// Layers.
    fn n_layers(&self) -> usize;
    /// Heads per layer.
    fn n_heads(&self) -> usize;
    /// # Shapes
    /// `tokens` `[batch, seq]` → (logits `[batch, seq, vocab]`, attention probabilities per
    /// layer `[batch, heads, seq, seq]`).
    fn forward_hooked(
        &self,
        tokens: Tensor<2, Int>,
        hooks: &AttentionHooks,
    ) -> (Tensor<3>, Vec<Tensor<4>>);
}

impl CausalLm for Llama {
    fn n_layers(&self) -> usize {
        Llama::n_layers(self)
    }
    fn n_heads(&self) -> usize {
        Llama::n_heads(self)
    }
    fn forward_hooked(
        &self,
        tokens: Tensor<2, Int>,
        hooks: &AttentionHooks,
    ) -> (Tensor<3>, Vec<Tensor<4>>) {
        let o = self.forward_with(tokens, hooks, None);
        (o.logits, o.attentions)
    }
}

impl CausalLm for Gpt2 {
    fn n_layers(&self) -> usize {
        Gpt2::n_layers(self)
    }
    fn n_heads(&self) -> usize {
        Gpt2::n_heads(self)
    }
    fn forward_hooked(
        &self,
        tokens: Tensor<2, Int>,
        hooks: &AttentionHooks,
    ) -> (Tensor<3>, Vec<Tensor<4>>) {
        let o = self.forward_with(tokens, hooks);
        (o.logits, o.attentions)
    }
}
