//! Process (and outcome) reward models on a causal LM.
//!
//! The released Math-Shepherd PRM is a causal LM read at each step tag: the step's score is the
//! softmax over the logits of the two label tokens (`+` good, `-` bad) at the tag position (the
//! un-shifted position: the logit *at* the tag predicts the label). Training is cross-entropy
//! restricted to those two tokens, which equals binary cross-entropy with
//! `r = sigmoid(l+ - l-)`; soft labels `y` give targets `[y, 1 - y]`.
//! [`RewardModel::two_class`] is the alternative TRL uses: a fresh 2-way linear head on the
//! final (normed) hidden state. An ORM is the same model trained on one tag after the whole
//! solution with the outcome as label ([`crate::tags::encode_tagged`] with `every_step = false`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use plm::llama::Llama;
use serde::{Deserialize, Serialize};
use trainer::{BatchCtx, StepLoss, Task};

use crate::tags::TaggedIds;
use crate::{Error, Result};
use trainer::host::ToHost;

/// How the score is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadKind {
    /// Softmax over the LM logits of the good / bad label tokens (the released PRM).
    LabelTokens,
    /// A new 2-class linear head on the final hidden state (TRL's token classification).
    TwoClass,
}

/// A reward model: a causal LM plus the way its score is read at the tags.
#[derive(Module, Debug)]
pub struct RewardModel {
    /// The LM.
    pub lm: Llama,
    /// The 2-class head (`None` for label tokens).
    pub head: Option<Linear>,
    #[module(skip)]
    label_ids: [usize; 2],
}

/// A padded batch of tagged sequences.
pub struct TagBatch {
    /// Ids `[batch, seq]`, right-padded with 0 (padding follows every tag, so a causal LM never
    /// sees it at a tag).
    pub ids: Tensor<2, Int>,
    /// Flat index `row * seq + pos` of every tag, in example order.
    pub flat_pos: Tensor<1, Int>,
    /// Tags per example.
    pub counts: Vec<usize>,
}

impl TagBatch {
    /// Pads `examples` into one batch on `device`.
    pub fn new(examples: &[&TaggedIds], device: &Device) -> Result<Self> {
        let seq = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if seq == 0 {
            return Err(Error::InvalidConfig("empty reward-model batch".into()));
        }
        let mut ids = vec![0i64; examples.len() * seq];
        let mut flat = Vec::new();
        let mut counts = Vec::with_capacity(examples.len());
        for (r, e) in examples.iter().enumerate() {
            for (j, &t) in e.ids.iter().enumerate() {
                ids[r * seq + j] = i64::from(t);
            }
            for &p in &e.tag_pos {
                if p >= e.ids.len() {
                    return Err(Error::InvalidConfig(format!(
                        "tag position {p} outside a sequence of {}",
                        e.ids.len()
                    )));
                }
                flat.push((r * seq + p) as i64);
            }
            counts.push(e.tag_pos.len());
        }
        let n = flat.len();
        Ok(Self {
            ids: Tensor::from_data(TensorData::new(ids, [examples.len(), seq]), device),
            flat_pos: Tensor::from_data(TensorData::new(flat, [n]), device),
            counts,
        })
    }
}

impl RewardModel {
    /// The released PRM's head: the LM's logits of `good` and `bad` at the tags.
    pub fn label_tokens(lm: Llama, good: u32, bad: u32) -> Result<Self> {
        let vocab = lm.embed_tokens.weight.dims()[0];
        if good as usize >= vocab || bad as usize >= vocab || good == bad {
            return Err(Error::InvalidConfig(format!(
                "label tokens {good} / {bad} must be distinct ids below the vocabulary ({vocab})"
            )));
        }
        Ok(Self {
            lm,
            head: None,
            label_ids: [good as usize, bad as usize],
        })
    }

    /// A fresh 2-class head (column 0 = good) on the LM's final hidden state.
    pub fn two_class(lm: Llama, device: &Device) -> Self {
        let d = lm.embed_tokens.weight.dims()[1];
        Self {
            lm,
            head: Some(LinearConfig::new(d, 2).init(device)),
            label_ids: [0, 0],
        }
    }

    /// Which head this is.
    pub fn kind(&self) -> HeadKind {
        if self.head.is_some() {
            HeadKind::TwoClass
        } else {
            HeadKind::LabelTokens
        }
    }

    /// Logits `[tags, 2]` (column 0 = good) at every tag of the batch.
    pub fn tag_logits(&self, batch: &TagBatch) -> Tensor<2> {
        let [b, s] = batch.ids.dims();
        let out = self.lm.forward(batch.ids.clone());
        match &self.head {
            Some(head) => {
                let h = out
                    .hidden_states
                    .last()
                    .cloned()
                    .unwrap_or(out.logits.clone());
                let h = self.lm.norm.forward(h);
                let d = h.dims()[2];
                let rows = h.reshape([b * s, d]).select(0, batch.flat_pos.clone());
                head.forward(rows)
            }
            None => {
                let v = out.logits.dims()[2];
                let rows = out
                    .logits
                    .reshape([b * s, v])
                    .select(0, batch.flat_pos.clone());
                let cols = Tensor::<1, Int>::from_data(
                    TensorData::new(
                        self.label_ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                        [2],
                    ),
                    &rows.device(),
                );
                rows.select(1, cols)
            }
        }
    }

    /// Cross-entropy at the tags against targets in `[0, 1]` (1 = good), one per tag.
    pub fn loss(&self, batch: &TagBatch, targets: &[f64]) -> Tensor<1> {
        tag_cross_entropy(self.tag_logits(batch), targets)
    }

    /// Each example's solution score as a log-odds: the minimum over its tags of
    /// `logit(good) - logit(bad)` (the `min` aggregate, read before the sigmoid, which keeps the
    /// order), `[examples]`. Every example needs at least one tag.
    pub fn solution_log_odds(&self, batch: &TagBatch) -> Result<Tensor<1>> {
        segment_min_log_odds(self.tag_logits(batch), &batch.counts)
    }

    /// The cross-entropy of [`RewardModel::loss`] plus `weight` × the mean logistic loss
    /// `log(1 + exp(-(s_right - s_wrong)))` of [`RewardModel::solution_log_odds`] over pairs:
    /// the batch holds pairs in order (right, wrong, right, wrong, …), two solutions of one
    /// problem whose outcomes differ. Ranks the candidates of a problem, which best-of-N needs
    /// and the per-tag loss alone does not ask for.
    pub fn pairwise_loss(
        &self,
        batch: &TagBatch,
        targets: &[f64],
        weight: f64,
    ) -> Result<Tensor<1>> {
        let n = batch.counts.len();
        if !n.is_multiple_of(2) {
            return Err(Error::InvalidConfig(
                "a pairwise batch holds (right, wrong) pairs".into(),
            ));
        }
        let logits = self.tag_logits(batch);
        let s = segment_min_log_odds(logits.clone(), &batch.counts)?.reshape([n / 2, 2]);
        let margin = s.clone().slice(s![.., 0..1]) - s.slice(s![.., 1..2]);
        let pair = burn::tensor::activation::softplus(margin.neg(), 1.0)
            .mean()
            .reshape([1]);
        Ok(tag_cross_entropy(logits, targets) + pair.mul_scalar(weight))
    }

    /// The good-probability of every tag of every example, in batches of `batch`.
    pub fn scores(
        &self,
        examples: &[TaggedIds],
        batch: usize,
        device: &Device,
    ) -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(examples.len());
        for chunk in examples.chunks(batch.max(1)) {
            let refs: Vec<&TaggedIds> = chunk.iter().collect();
            let b = TagBatch::new(&refs, device)?;
            let p = softmax(self.tag_logits(&b), 1).slice(s![.., 0..1]);
            let n = p.dims()[0];
            let v = p.reshape([n]).to_f32s()?;
            let mut at = 0;
            for &c in &b.counts {
                out.push(v[at..at + c].iter().map(|&x| f64::from(x)).collect());
                at += c;
            }
        }
        Ok(out)
    }
}

/// Mean cross-entropy of `[tags, 2]` logits (column 0 = good) against targets in `[0, 1]`.
fn tag_cross_entropy(logits: Tensor<2>, targets: &[f64]) -> Tensor<1> {
    let logp = log_softmax(logits, 1);
    let n = targets.len();
    let device = logp.device();
    let y: Vec<f32> = targets
        .iter()
        .flat_map(|&t| [t as f32, 1.0 - t as f32])
        .collect();
    let y = Tensor::<2>::from_data(TensorData::new(y, [n, 2]), &device);
    (logp * y).sum_dim(1).mean().neg()
}

/// Per example, the minimum over its tags (`counts` of them, in order) of the good-minus-bad
/// logit: one gather into an `[examples, max tags]` matrix whose padding reads a large value.
fn segment_min_log_odds(logits: Tensor<2>, counts: &[usize]) -> Result<Tensor<1>> {
    if counts.contains(&0) {
        return Err(Error::InvalidConfig(
            "a solution score needs at least one tag per example".into(),
        ));
    }
    let device = logits.device();
    let total: usize = counts.iter().sum();
    let width = counts.iter().copied().max().unwrap_or(1);
    let d = logits.clone().slice(s![.., 0..1]) - logits.slice(s![.., 1..2]);
    let d = Tensor::cat(vec![d.reshape([total]), Tensor::full([1], 1e9, &device)], 0);
    let mut idx = Vec::with_capacity(counts.len() * width);
    let mut at = 0;
    for &c in counts {
        idx.extend((0..width).map(|j| if j < c { (at + j) as i64 } else { total as i64 }));
        at += c;
    }
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [counts.len() * width]), &device);
    Ok(d.select(0, idx)
        .reshape([counts.len(), width])
        .min_dim(1)
        .reshape([counts.len()]))
}

/// Reward-model training data: tagged sequences with one target per tag.
pub struct RewardTask {
    /// The examples.
    pub examples: Vec<(TaggedIds, Vec<f64>)>,
    /// Examples per step.
    pub batch_size: usize,
    /// Where tensors go (the autodiff device).
    pub device: Device,
    /// Within-problem pairs `(right, wrong)` (indices into `examples`: two solutions of one
    /// problem whose outcomes differ) and the weight of their pairwise loss
    /// ([`RewardModel::pairwise_loss`]): with pairs and a weight above 0 every batch is
    /// `batch_size / 2` pairs drawn from them; otherwise examples drawn uniformly, per-tag
    /// cross-entropy only.
    pub pairs: Vec<(usize, usize)>,
    /// Weight of the pairwise loss.
    pub pair_weight: f64,
}

impl Task<RewardModel> for RewardTask {
    fn loss(&mut self, m: &RewardModel, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        if self.examples.is_empty() {
            return Err(Error::InvalidConfig("no reward-model training examples".into()).into());
        }
        if self.pair_weight > 0.0 && !self.pairs.is_empty() {
            let idx: Vec<usize> = (0..(self.batch_size / 2).max(1))
                .flat_map(|_| {
                    let (r, w) = self.pairs[ctx.rng.below(self.pairs.len())];
                    [r, w]
                })
                .collect();
            if idx.iter().any(|&i| i >= self.examples.len()) {
                return Err(Error::InvalidConfig("a pair names a missing example".into()).into());
            }
            let refs: Vec<&TaggedIds> = idx.iter().map(|&i| &self.examples[i].0).collect();
            let targets: Vec<f64> = idx
                .iter()
                .flat_map(|&i| self.examples[i].1.iter().copied())
                .collect();
            let b = TagBatch::new(&refs, &self.device)?;
            return Ok(m.pairwise_loss(&b, &targets, self.pair_weight)?.into());
        }
        let idx: Vec<usize> = (0..self.batch_size)
            .map(|_| ctx.rng.below(self.examples.len()))
            .collect();
        let refs: Vec<&TaggedIds> = idx.iter().map(|&i| &self.examples[i].0).collect();
        let targets: Vec<f64> = idx
            .iter()
            .flat_map(|&i| self.examples[i].1.iter().copied())
            .collect();
        let b = TagBatch::new(&refs, &self.device)?;
        Ok(m.loss(&b, &targets).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plm::llama::LlamaConfig;

    fn lm(device: &Device) -> Llama {
        device.seed(5);
        LlamaConfig::new(16, 8, 1, 2, 1, 16)
            .init(device)
            .expect("lm")
    }

    #[test]
    fn label_token_scores_are_the_two_way_softmax_at_the_tag() {
        let _rng = testkit::device_rng_lock();
        let device = Device::flex();
        let m = RewardModel::label_tokens(lm(&device), 3, 4).expect("rm");
        let ex = TaggedIds {
            ids: vec![1, 2, 5, 6, 7],
            tag_pos: vec![1, 4],
        };
        let s = m
            .scores(std::slice::from_ref(&ex), 4, &device)
            .expect("scores");
        let logits =
            m.lm.forward(Tensor::from_data(
                TensorData::new(vec![1i64, 2, 5, 6, 7], [1, 5]),
                &device,
            ))
            .logits
            .into_data()
            .try_to_vec::<f32>()
            .expect("read");
        for (k, &p) in ex.tag_pos.iter().enumerate() {
            let (g, b) = (logits[p * 16 + 3] as f64, logits[p * 16 + 4] as f64);
            let want = 1.0 / (1.0 + (b - g).exp());
            assert!((s[0][k] - want).abs() < 1e-5, "{} vs {want}", s[0][k]);
        }
        // Padding after the tags does not change them.
        let short = TaggedIds {
            ids: vec![1, 2],
            tag_pos: vec![1],
        };
        let both = m.scores(&[short, ex], 2, &device).expect("batched");
        assert!((both[0][0] - s[0][0]).abs() < 1e-5);
        assert!((both[1][1] - s[0][1]).abs() < 1e-5);
        assert!(RewardModel::label_tokens(lm(&device), 3, 3).is_err());
        assert!(RewardModel::label_tokens(lm(&device), 3, 99).is_err());
    }

    #[test]
    fn solution_log_odds_are_the_minimum_step_log_odds_and_pairs_add_a_logistic_loss() {
        let _rng = testkit::device_rng_lock();
        let device = Device::flex();
        let m = RewardModel::label_tokens(lm(&device), 3, 4).expect("rm");
        let a = TaggedIds {
            ids: vec![1, 2, 5, 6, 7],
            tag_pos: vec![1, 2, 4],
        };
        let b = TaggedIds {
            ids: vec![7, 6],
            tag_pos: vec![1],
        };
        let batch = TagBatch::new(&[&a, &b], &device).expect("batch");
        let s = m
            .solution_log_odds(&batch)
            .expect("odds")
            .into_data()
            .try_to_vec::<f32>()
            .expect("read");
        let p = m
            .scores(&[a.clone(), b.clone()], 2, &device)
            .expect("scores");
        let odds = |q: f64| (q / (1.0 - q)).ln();
        let min_a = p[0].iter().map(|&q| odds(q)).fold(f64::INFINITY, f64::min);
        assert!(
            (f64::from(s[0]) - min_a).abs() < 1e-3,
            "{} vs {min_a}",
            s[0]
        );
        assert!((f64::from(s[1]) - odds(p[1][0])).abs() < 1e-3);
        // (a right, b wrong): cross-entropy + weight · softplus(-(s_a - s_b))
        let y = [1.0, 1.0, 0.0, 0.0];
        let ce: f32 = m.loss(&batch, &y).into_scalar();
        let both: f32 = m
            .pairwise_loss(&batch, &y, 0.5)
            .expect("pairwise")
            .into_scalar();
        let margin = f64::from(s[0] - s[1]);
        let want = f64::from(ce) + 0.5 * (1.0 + (-margin).exp()).ln();
        assert!((f64::from(both) - want).abs() < 1e-4, "{both} vs {want}");
        // an odd batch or an example without a tag is refused
        let odd = TagBatch::new(&[&a], &device).expect("batch");
        assert!(m.pairwise_loss(&odd, &y[..3], 1.0).is_err());
        let none = TaggedIds {
            ids: vec![1, 2],
            tag_pos: vec![],
        };
        let batch = TagBatch::new(&[&a, &none], &device).expect("batch");
        assert!(m.solution_log_odds(&batch).is_err());
    }

    #[test]
    fn soft_loss_equals_binary_cross_entropy() {
        let _rng = testkit::device_rng_lock();
        let device = Device::flex();
        for m in [
            RewardModel::label_tokens(lm(&device), 3, 4).expect("rm"),
            RewardModel::two_class(lm(&device), &device),
        ] {
            let ex = TaggedIds {
                ids: vec![1, 2, 5],
                tag_pos: vec![0, 2],
            };
            let b = TagBatch::new(&[&ex], &device).expect("batch");
            let y = [0.25, 1.0];
            let loss: f32 = m.loss(&b, &y).into_scalar();
            let s = m.scores(std::slice::from_ref(&ex), 1, &device).expect("s");
            let want: f64 = y
                .iter()
                .zip(&s[0])
                .map(|(y, r)| -(y * r.ln() + (1.0 - y) * (1.0 - r).ln()))
                .sum::<f64>()
                / 2.0;
            assert!((f64::from(loss) - want).abs() < 1e-4, "{loss} vs {want}");
        }
    }
}
