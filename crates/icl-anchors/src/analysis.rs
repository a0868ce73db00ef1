//! The analyses of §2: predictions restricted to label words, saliency flows, isolation and
//! loyalty, and the deep-layer AUC.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use plm::hooks::{AttentionHooks, BLOCK, saliency};
use serde::Serialize;

use crate::Error;
use crate::model::CausalLm;
use crate::prompt::{LabelTokens, Prompt};

/// What the model says at the query position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// argmax over the label words.
    pub class: usize,
    /// Softmax over the label-word logits.
    pub probs: Vec<f32>,
    /// The `top_k` vocabulary ids at the query (for word loyalty).
    pub top_words: Vec<usize>,
    /// Σ_h A_l(q, p_i) per layer and label position (first tokens), for the deep-layer AUC.
    pub attention_to_labels: Vec<Vec<f32>>,
}

fn tokens(prompt: &Prompt, device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = prompt.ids.iter().map(|&t| i64::from(t)).collect();
    Tensor::from_data(TensorData::new(v, [1, prompt.ids.len()]), device)
}

/// Label-word logits at the query: `[1, C]`.
fn label_logits(logits: Tensor<3>, q: usize, label_ids: &[u32]) -> Tensor<2> {
    let [_, _, v] = logits.dims();
    let row = logits.slice(s![0..1, q..q + 1, 0..v]).reshape([1, v]);
    let device = row.device();
    let idx: Vec<i64> = label_ids.iter().map(|&t| i64::from(t)).collect();
    row.select(
        1,
        Tensor::<1, Int>::from_data(TensorData::new(idx, [label_ids.len()]), &device),
    )
}

/// (class, label-word probabilities, top-k vocabulary ids) from one logits row.
pub fn read_row(row: &[f32], label_ids: &[u32], top_k: usize) -> (usize, Vec<f32>, Vec<usize>) {
    let v = row.len();
    let mut order: Vec<usize> = (0..v).collect();
    let k = top_k.min(v);
    if k > 0 && k < v {
        order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
    }
    let mut top: Vec<usize> = order[..k].to_vec();
    top.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    let ll: Vec<f32> = label_ids
        .iter()
        .map(|&t| row.get(t as usize).copied().unwrap_or(f32::MIN))
        .collect();
    let m = ll.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f32> = ll.iter().map(|x| (x - m).exp()).collect();
    let z: f32 = e.iter().sum();
    let probs: Vec<f32> = e.iter().map(|x| x / z).collect();
    let class = probs
        .iter()
        .enumerate()
        .fold(0, |b, (i, &p)| if p > probs[b] { i } else { b });
    (class, probs, top)
}

/// Runs `prompt` under `hooks` and reads the prediction.
pub fn predict<M: CausalLm>(
    model: &M,
    prompt: &Prompt,
    label_ids: &[u32],
    hooks: &AttentionHooks,
    top_k: usize,
    device: &Device,
) -> crate::Result<Prediction> {
    let (logits, atts) = model.forward_hooked(tokens(prompt, device), hooks);
    let q = prompt.query;
    let [_, _, v] = logits.dims();
    let row = trainer::host::f32s(logits.slice(s![0..1, q..q + 1, 0..v]).reshape([v]))?;
    let (class, probs, top) = read_row(&row, label_ids, top_k);
    let labels = prompt.label_positions(LabelTokens::First);
    let mut attention_to_labels = Vec::with_capacity(atts.len());
    for a in atts {
        let [_, h, s, _] = a.dims();
        let rowq = trainer::host::f32s(
            a.slice(s![0..1, 0..h, q..q + 1, 0..s])
                .sum_dim(1)
                .reshape([s]),
        )?;
        attention_to_labels.push(labels.iter().map(|&p| rowq[p]).collect());
    }
    Ok(Prediction {
        class,
        probs,
        top_words: top,
        attention_to_labels,
    })
}

/// The three information flows of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Flows {
    /// Text → label words.
    pub wp: f64,
    /// Label words → target position.
    pub pq: f64,
    /// Everything else.
    pub ww: f64,
}

impl Flows {
    /// Renormalised to sum to 1 (the paper's plots).
    pub fn normalised(&self) -> Self {
        let t = (self.wp + self.pq + self.ww).max(1e-30);
        Self {
            wp: self.wp / t,
            pq: self.pq / t,
            ww: self.ww / t,
        }
    }
}

/// The flows of a saliency matrix `i` (`n × n`, row = query) for label positions `labels`
/// and target `q` (the diagonal is ignored).
pub fn flows(i: &[f32], n: usize, labels: &[usize], q: usize) -> Flows {
    let at = |r: usize, c: usize| f64::from(i[r * n + c]);
    let (mut wp, mut pq, mut all) = (0.0, 0.0, 0.0);
    for r in 0..=q.min(n - 1) {
        for c in 0..r {
            all += at(r, c);
        }
    }
    for &p in labels {
        for c in 0..p {
            wp += at(p, c);
        }
        if p < q {
            pq += at(q, p);
        }
    }
    let sum_p: usize = labels.iter().sum();
    let c = labels.len();
    let pairs = (q * (q + 1) / 2) as f64 - sum_p as f64 - c as f64;
    Flows {
        wp: wp / (sum_p.max(1) as f64),
        pq: pq / (c.max(1) as f64),
        ww: (all - wp - pq) / pairs.max(1.0),
    }
}

/// Saliency flows of every layer: I_l = |Σ_h A ⊙ ∂L/∂A| with L the cross-entropy of the
/// label-word logits against `gold`. `model` must live on an autodiff device.
pub fn saliency_flows<M: CausalLm>(
    model: &M,
    prompt: &Prompt,
    label_ids: &[u32],
    gold: usize,
    which: LabelTokens,
    device: &Device,
) -> crate::Result<Vec<Flows>> {
    let n = prompt.ids.len();
    if gold >= label_ids.len() {
        return Err(Error::BadPrompt(format!(
            "gold class {gold} of {}",
            label_ids.len()
        )));
    }
    let hooks =
        AttentionHooks::none().with_probes(model.n_layers(), [1, model.n_heads(), n, n], device);
    let (logits, atts) = model.forward_hooked(tokens(prompt, device), &hooks);
    let lp = log_softmax(label_logits(logits, prompt.query, label_ids), 1);
    let loss = lp.slice(s![0..1, gold..gold + 1]).reshape([1]).neg();
    let grads = loss.backward();
    let g = hooks.probe_grads(&grads);
    let sal = saliency(&atts, &g);
    let labels = prompt.label_positions(which);
    let mut out = Vec::with_capacity(sal.len());
    for (_, m) in sal {
        let v = trainer::host::f32s(m.reshape([n * n]))?;
        out.push(flows(&v, n, &labels, prompt.query));
    }
    Ok(out)
}

/// Hooks that stop each of `positions` from attending to anything before it, in `layers`
/// (isolation of label words, or of the random control tokens).
pub fn isolation_hooks(
    n: usize,
    positions: &[usize],
    layers: &[usize],
    n_heads: usize,
    device: &Device,
) -> AttentionHooks {
    let mut m = vec![0f32; n * n];
    for &p in positions {
        for c in 0..p.min(n) {
            m[p * n + c] = BLOCK;
        }
    }
    let t =
        Tensor::<4>::from_data(TensorData::new(m, [1, 1, n, n]), device).expand([1, n_heads, n, n]);
    let mut hooks = AttentionHooks::none();
    for &l in layers {
        hooks.bias.insert(l, t.clone());
    }
    hooks
}

/// Share of predictions equal to the reference ones.
pub fn label_loyalty(reference: &[Prediction], other: &[Prediction]) -> f64 {
    let same = reference
        .iter()
        .zip(other)
        .filter(|(a, b)| a.class == b.class)
        .count();
    same as f64 / reference.len().max(1) as f64
}

/// Mean Jaccard similarity of the top-k vocabulary predictions.
pub fn word_loyalty(reference: &[Prediction], other: &[Prediction]) -> f64 {
    let j: f64 = reference
        .iter()
        .zip(other)
        .map(|(a, b)| {
            let inter = a
                .top_words
                .iter()
                .filter(|w| b.top_words.contains(w))
                .count();
            let union = a.top_words.len() + b.top_words.len() - inter;
            inter as f64 / union.max(1) as f64
        })
        .sum();
    j / reference.len().max(1) as f64
}

pub use trainer::metrics::roc_auc;

/// AUC of class scores `[n][C]` against labels: binary on class 1's score; multiclass the
/// one-vs-one average of Hand & Till over class pairs (pairs missing a class are skipped).
pub fn class_auc(scores: &[Vec<f64>], labels: &[usize], n_classes: usize) -> Option<f64> {
    if n_classes == 2 {
        let s: Vec<f64> = scores.iter().map(|v| v[1]).collect();
        let p: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
        return roc_auc(&s, &p);
    }
    let mut acc = Vec::new();
    for a in 0..n_classes {
        for b in (a + 1)..n_classes {
            let idx: Vec<usize> = (0..labels.len())
                .filter(|&i| labels[i] == a || labels[i] == b)
                .collect();
            let sa: Vec<f64> = idx
                .iter()
                .map(|&i| scores[i][a] / (scores[i][a] + scores[i][b]).max(1e-30))
                .collect();
            let pa: Vec<bool> = idx.iter().map(|&i| labels[i] == a).collect();
            let sb: Vec<f64> = idx
                .iter()
                .map(|&i| scores[i][b] / (scores[i][a] + scores[i][b]).max(1e-30))
                .collect();
            let pb: Vec<bool> = idx.iter().map(|&i| labels[i] == b).collect();
            if let (Some(x), Some(y)) = (roc_auc(&sa, &pa), roc_auc(&sb, &pb)) {
                acc.push((x + y) / 2.0);
            }
        }
    }
    (!acc.is_empty()).then(|| acc.iter().sum::<f64>() / acc.len() as f64)
}

/// R_l = Σ_{i ≤ l} (AUC_i − 0.5) / Σ_i (AUC_i − 0.5).
pub fn cumulative_r(auc: &[f64]) -> Vec<f64> {
    let total: f64 = auc.iter().map(|a| a - 0.5).sum();
    let mut acc = 0.0;
    auc.iter()
        .map(|a| {
            acc += a - 0.5;
            if total.abs() < 1e-12 {
                0.0
            } else {
                acc / total
            }
        })
        .collect()
}
