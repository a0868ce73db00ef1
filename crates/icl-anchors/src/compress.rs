//! Anchor-only context compression (§3.2), expressed as attention masks so that it applies to
//! every decoder: the demonstrations are processed in full (they never see the query), and the
//! query tokens may read only the kept demonstration positions, in every layer. This is
//! exactly the paper's two-pass Hidden_anchor (cache the demonstrations' keys and values, keep
//! the anchors', run the query on top), with the query's positions continuing after the full
//! demonstration part (the GPT-J convention of the official code).

use burn::prelude::*;
use plm::hooks::{AttentionHooks, BLOCK};
use plm::llama::{KvCache, Llama};

use crate::analysis::{Prediction, read_row};
use crate::prompt::Prompt;

/// Hooks that hide every demonstration position outside `keep` from the query tokens.
pub fn keep_only_hooks(
    prompt: &Prompt,
    keep: &[usize],
    n_layers: usize,
    n_heads: usize,
    device: &Device,
) -> AttentionHooks {
    let n = prompt.ids.len();
    let mut m = vec![0f32; n * n];
    for r in prompt.demo_len..n {
        for c in 0..prompt.demo_len {
            if !keep.contains(&c) {
                m[r * n + c] = BLOCK;
            }
        }
    }
    let t =
        Tensor::<4>::from_data(TensorData::new(m, [1, 1, n, n]), device).expand([1, n_heads, n, n]);
    let mut hooks = AttentionHooks::none();
    for l in 0..n_layers {
        hooks.bias.insert(l, t.clone());
    }
    hooks
}

/// Hidden_random: the anchor set with each demonstration's label tokens swapped for random
/// tokens of the same demonstration's text (when it has any).
pub fn random_anchors(prompt: &Prompt, rng: &mut trainer::Rng) -> Vec<usize> {
    let labels: Vec<usize> = prompt.label_tokens.iter().flatten().copied().collect();
    let mut keep: Vec<usize> = prompt
        .anchor_positions
        .iter()
        .copied()
        .filter(|p| !labels.contains(p))
        .collect();
    for (d, lt) in prompt.label_tokens.iter().enumerate() {
        let text = &prompt.demo_text[d];
        for &p in lt {
            keep.push(if text.is_empty() {
                p
            } else {
                text[rng.below(text.len())]
            });
        }
    }
    keep
}

/// The real two-pass compression on a Llama-style model: the demonstration part runs once
/// into a KV cache, which then keeps only `keep` (sorted demonstration positions).
pub fn compressed_cache(
    model: &Llama,
    prompt: &Prompt,
    keep: &[usize],
    device: &Device,
) -> KvCache {
    let demo: Vec<i64> = prompt.ids[..prompt.demo_len]
        .iter()
        .map(|&t| i64::from(t))
        .collect();
    let mut cache = KvCache::new();
    let x = Tensor::<2, Int>::from_data(TensorData::new(demo, [1, prompt.demo_len]), device);
    model.forward_with(x, &AttentionHooks::fast(), Some(&mut cache));
    let mut k: Vec<usize> = keep
        .iter()
        .copied()
        .filter(|&p| p < prompt.demo_len)
        .collect();
    k.sort_unstable();
    k.dedup();
    cache.retain(&k)
}

/// The query part of `prompt` on top of a (compressed) cache.
pub fn predict_on_cache(
    model: &Llama,
    cache: &KvCache,
    prompt: &Prompt,
    label_ids: &[u32],
    top_k: usize,
    device: &Device,
) -> crate::Result<Prediction> {
    let q: Vec<i64> = prompt.ids[prompt.demo_len..]
        .iter()
        .map(|&t| i64::from(t))
        .collect();
    let n = q.len();
    let mut c = cache.clone();
    let logits = model
        .forward_with(
            Tensor::from_data(TensorData::new(q, [1, n]), device),
            &AttentionHooks::fast(),
            Some(&mut c),
        )
        .logits;
    let [_, _, v] = logits.dims();
    let row = trainer::host::f32s(logits.slice(s![0..1, n - 1..n, 0..v]).reshape([v]))?;
    let (class, probs, top_words) = read_row(&row, label_ids, top_k);
    Ok(Prediction {
        class,
        probs,
        top_words,
        attention_to_labels: Vec::new(),
    })
}
