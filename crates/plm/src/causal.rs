//! The causal-LM interface over this crate's decoders: logits and attention probabilities under
//! attention hooks, and a layer's query/key vectors. Implemented for every decoder here (the
//! Llama family with RoPE and GPT-2 with learned positions), through the hook interface, so an
//! analysis written against it (icl-anchors, prm) works with each of them.

use crate::gpt2::Gpt2;
use crate::hooks::AttentionHooks;
use crate::llama::Llama;
use burn::prelude::*;

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
    /// Query and key vectors of every position in `layer`, all heads concatenated (`[seq,
    /// heads·head_dim]`, batch 1; grouped key heads repeated to the query heads). Llama-style
    /// models give them before RoPE (the content part; a choice, since rotated vectors of
    /// different positions are not comparable).
    fn query_key_vectors(&self, tokens: Tensor<2, Int>, layer: usize) -> (Tensor<2>, Tensor<2>);
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
    fn query_key_vectors(&self, tokens: Tensor<2, Int>, layer: usize) -> (Tensor<2>, Tensor<2>) {
        let [_, s] = tokens.dims();
        let o = self.forward_with(tokens, &AttentionHooks::fast(), None);
        let l = &self.layers[layer];
        let x = l.input_layernorm.forward(o.hidden_states[layer].clone());
        let q = l.self_attn.q_proj.forward(x.clone());
        let k = l.self_attn.k_proj.forward(x);
        let (dq, dk) = (q.dims()[2], k.dims()[2]);
        let (q, k) = (q.reshape([s, dq]), k.reshape([s, dk]));
        let h = Llama::n_heads(self);
        let hd = dq / h.max(1);
        let rep = dq / dk.max(1);
        // [s, kv, hd] → [s, kv, rep, hd] → [s, kv·rep·hd]: head i of the queries reads kv head i / rep.
        let k = k
            .reshape([s, dk / hd.max(1), 1, hd])
            .expand([s, dk / hd.max(1), rep, hd])
            .reshape([s, dq]);
        (q, k)
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
    fn query_key_vectors(&self, tokens: Tensor<2, Int>, layer: usize) -> (Tensor<2>, Tensor<2>) {
        let [_, s] = tokens.dims();
        let o = self.forward_with(tokens, &AttentionHooks::fast());
        let b = &self.h[layer];
        let qkv = b
            .attn
            .c_attn
            .forward(b.ln_1.forward(o.hidden_states[layer].clone()));
        let w = qkv.dims()[2];
        let qkv = qkv.reshape([s, w]);
        let d = qkv.dims()[1] / 3;
        (qkv.clone().slice(s![.., 0..d]), qkv.slice(s![.., d..2 * d]))
    }
}
