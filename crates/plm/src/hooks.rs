//! One attention-hook interface honoured by every architecture of this crate.
//!
//! For each layer `l`, attention is computed as
//! ```text
//! S = Q Kᵀ / √d + causal/padding mask + bias[l]        (a) additive pre-softmax bias
//! A = softmax(S) ⊙ scale[l] + probe[l]                 (b) multiplicative post-softmax scale
//!                                                      (c) zero probe: ∂L/∂probe = ∂L/∂A
//! out = A V
//! ```
//! and `A` is returned for every layer. (a) isolates or blocks chosen (head, query, key) cells
//! (Label Words are Anchors, §2.3); (b) re-weights anchors and may be a learnable parameter
//! (§3.1); (c) gives dL/dA after one backward pass — burn keeps no gradients of intermediate
//! tensors, so a zero leaf is added to A and its gradient read instead (saliency
//! `I = |Σ_h A_h ⊙ ∂L/∂A_h|`, §2.1). Every tensor broadcasts to `[batch, heads, q, k]`.
//!
//! Probabilities cost time: they are `[batch, heads, q, k]` tensors written by a separate
//! matmul, mask, softmax and matmul. [`AttentionHooks::fast`] asks for none, and then every
//! layer runs the backend's fused attention op (`burn::tensor::module::attention`; a flash
//! variant on flex) and the models return no `attentions`. A bias (a) alone still takes the
//! fused op (as its additive bias); a scale (b) or a probe (c) needs the probabilities, so it
//! always takes the step-by-step path.

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Gradients};

/// Additive bias that removes attention (large and finite, so a fully blocked row stays finite).
pub const BLOCK: f32 = -1e9;

/// Interventions for one forward pass, keyed by layer index.
#[derive(Clone, Debug, Default)]
pub struct AttentionHooks {
    /// (a) Added to the scores before softmax; `[1|b, 1|h, 1|q, 1|k]`.
    pub bias: BTreeMap<usize, Tensor<4>>,
    /// (b) Multiplies the probabilities after softmax; `[1|b, 1|h, 1|q, 1|k]`.
    pub scale: BTreeMap<usize, Tensor<4>>,
    /// (c) Zero leaves added to the probabilities; `[b, h, q, k]`.
    pub probes: BTreeMap<usize, Tensor<4>>,
    /// No attention probabilities are wanted: layers without a scale or probe run the fused
    /// attention op and the models' `attentions` come back empty.
    pub skip_probs: bool,
}

impl AttentionHooks {
    /// No intervention.
    pub fn none() -> Self {
        Self::default()
    }

    /// No intervention and no attention probabilities: every layer runs the backend's fused
    /// attention op (what `forward` of each model here uses).
    pub fn fast() -> Self {
        Self {
            skip_probs: true,
            ..Self::default()
        }
    }

    /// Whether any hook is set.
    pub fn is_empty(&self) -> bool {
        self.bias.is_empty() && self.scale.is_empty() && self.probes.is_empty()
    }

    /// Whether `layer` computes its probabilities step by step (they were asked for, or a
    /// scale or probe needs them) rather than with the fused op.
    pub fn needs_probs(&self, layer: usize) -> bool {
        !self.skip_probs || self.scale.contains_key(&layer) || self.probes.contains_key(&layer)
    }

    /// Attention of `layer` under these hooks: `softmax(Q Kᵀ / √d + mask + bias) ⊙ scale + probe`
    /// times `V`. Scores, mask, hooks and softmax are computed in f32 whatever the dtype of
    /// `q`/`k`/`v` (as HF's eager path); the context comes back in `v`'s dtype.
    ///
    /// # Shapes
    /// `q` `[b, h, s, d]`, `k` and `v` `[b, h, t, d]` (grouped key heads already repeated),
    /// `mask` `[b, h, s, t]` (true = hide) → (context `[b, h, s, d]`, probabilities `[b, h, s,
    /// t]` unless the hooks skip them). A masked key gets the most negative float on the
    /// step-by-step path and −∞ in the fused op: the same probabilities unless a whole row is
    /// masked.
    pub fn attend(
        &self,
        layer: usize,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<4, Bool>>,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        let [b, h, s, d] = q.dims();
        let t = k.dims()[2];
        if !self.needs_probs(layer) {
            let bias = self
                .bias
                .get(&layer)
                .map(|x| crate::layers::to_dtype(x.clone().expand([b, h, s, t]), q.dtype()));
            let ctx = attention(q, k, v, mask, bias, AttentionModuleOptions::default());
            return (ctx, None);
        }
        let dtype = v.dtype();
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d as f32).sqrt());
        let mut scores = crate::layers::to_dtype(scores, DType::F32);
        if let Some(m) = mask {
            scores = scores.mask_fill(m, f32::MIN);
        }
        let probs = self.post_softmax(layer, softmax(self.pre_softmax(layer, scores), 3));
        let ctx = crate::layers::to_dtype(probs.clone(), dtype).matmul(v);
        // computed for a scale or probe, but not asked for: not returned
        (ctx, (!self.skip_probs).then_some(probs))
    }

    /// Blocks attention from `queries` to `keys` in `layer` for the given heads (all heads when
    /// `None`), for a sequence of length `seq` with `n_heads` heads. A head, query or key index
    /// out of range is an error (nothing is dropped silently).
    #[allow(clippy::too_many_arguments)]
    pub fn block(
        mut self,
        layer: usize,
        heads: Option<&[usize]>,
        queries: &[usize],
        keys: &[usize],
        n_heads: usize,
        seq: usize,
        device: &Device,
    ) -> crate::Result<Self> {
        let all: Vec<usize> = (0..n_heads).collect();
        let heads = heads.unwrap_or(&all);
        for (what, idx, bound) in [
            ("head", heads, n_heads),
            ("query", queries, seq),
            ("key", keys, seq),
        ] {
            if let Some(&i) = idx.iter().find(|&&i| i >= bound) {
                return Err(crate::Error::InvalidConfig(format!(
                    "attention block: {what} index {i} out of range (0..{bound})"
                )));
            }
        }
        let mut m = vec![0f32; n_heads * seq * seq];
        for &h in heads {
            for &q in queries {
                for &k in keys {
                    m[(h * seq + q) * seq + k] = BLOCK;
                }
            }
        }
        let t = Tensor::<4>::from_data(TensorData::new(m, [1, n_heads, seq, seq]), device);
        let t = match self.bias.remove(&layer) {
            Some(prev) => prev + t,
            None => t,
        };
        self.bias.insert(layer, t);
        Ok(self)
    }

    /// Adds zero probes `[batch, n_heads, seq, seq]` on every layer (an autodiff device is
    /// needed for their gradients).
    pub fn with_probes(mut self, n_layers: usize, shape: [usize; 4], device: &Device) -> Self {
        for l in 0..n_layers {
            self.probes
                .insert(l, Tensor::<4>::zeros(shape, device).require_grad());
        }
        self
    }

    /// ∂L/∂A of every probed layer after `loss.backward()`.
    pub fn probe_grads(&self, grads: &Gradients) -> BTreeMap<usize, Tensor<4>> {
        self.probes
            .iter()
            .filter_map(|(&l, p)| p.grad(grads).map(|g| (l, g)))
            .collect()
    }

    /// Applies hooks (a) for `layer` to raw scores `[b, h, q, k]`.
    pub fn pre_softmax(&self, layer: usize, scores: Tensor<4>) -> Tensor<4> {
        match self.bias.get(&layer) {
            Some(b) => {
                let dims = scores.dims();
                scores + b.clone().expand(dims)
            }
            None => scores,
        }
    }

    /// Applies hooks (b) and (c) for `layer` to probabilities `[b, h, q, k]`.
    pub fn post_softmax(&self, layer: usize, probs: Tensor<4>) -> Tensor<4> {
        let dims = probs.dims();
        let probs = match self.scale.get(&layer) {
            Some(s) => probs * s.clone().expand(dims),
            None => probs,
        };
        match self.probes.get(&layer) {
            Some(p) => probs + p.clone(),
            None => probs,
        }
    }
}

/// Saliency `I = |Σ_h A_h ⊙ ∂L/∂A_h|` per layer: `[batch, q, k]`.
pub fn saliency(
    attentions: &[Tensor<4>],
    grads: &BTreeMap<usize, Tensor<4>>,
) -> BTreeMap<usize, Tensor<3>> {
    grads
        .iter()
        .filter_map(|(&l, g)| {
            attentions.get(l).map(|a| {
                let a = a.clone().detach().without_autodiff();
                let g = g.clone().without_autodiff();
                let [b, _, q, k] = a.dims();
                (l, (a * g).sum_dim(1).reshape([b, q, k]).abs())
            })
        })
        .collect()
}
