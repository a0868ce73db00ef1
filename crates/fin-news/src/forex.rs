//! Group, extract and aggregate (Chen et al., 2019): many news items → a forex movement.
//!
//! 1. **Group** the news of a look-back window by time slot, by topic (spherical k-means over
//!    TF-IDF vectors fitted on the training news, [`TopicModel`]) or by category (the items'
//!    metadata) — [`Grouping`].
//! 2. **Extract** the `k` most central items of each group: cosine similarity of an item's
//!    TF-IDF vector to its group's mean vector (an unsupervised centrality summariser in place
//!    of the paper's BERTSum-style scorer, which needs summary labels no public forex news set
//!    has) — [`extract`].
//! 3. **Aggregate** ([`ForexModel`]): every kept item is encoded by plm's BERT (masked mean
//!    of the last layer); the trade representation (the [`TradeEncoder`] max-pooled) queries the
//!    items of each group (attention → one vector per group) and then the groups (attention →
//!    one news vector); `[trade; news]` → up/down.

use std::collections::HashMap;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use plm::bert::{Bert, BertConfig, classification_loss, mean_pool};
use serde::{Deserialize, Serialize};
use trainer::Rng;

use crate::events::Token;
use crate::model::{TradeEncoder, up_probability};
use crate::text::Vocab;
use crate::{Error, Result};

/// How news is grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grouping {
    /// Equal time slots of the window.
    Time,
    /// Topic clusters.
    Topic,
    /// The news category.
    Category,
}

/// Sparse TF-IDF over a fixed vocabulary.
#[derive(Clone, Debug)]
pub struct Tfidf {
    index: HashMap<String, usize>,
    idf: Vec<f32>,
}

impl Tfidf {
    /// Fits document frequencies on `docs` (words of at least two letters, at most
    /// `max_words` most frequent).
    pub fn fit(docs: &[&[Token]], max_words: usize) -> Self {
        let mut df: HashMap<&str, usize> = HashMap::new();
        for d in docs {
            let mut seen: Vec<&str> = d
                .iter()
                .filter(|t| t.lower.len() > 1 && t.lower.chars().all(char::is_alphabetic))
                .map(|t| t.lower.as_str())
                .collect();
            seen.sort_unstable();
            seen.dedup();
            for w in seen {
                *df.entry(w).or_default() += 1;
            }
        }
        let mut v: Vec<(&str, usize)> = df.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(max_words);
        let n = docs.len().max(1) as f32;
        let idf = v.iter().map(|&(_, c)| (n / c as f32).ln() + 1.0).collect();
        let index = v
            .iter()
            .enumerate()
            .map(|(i, &(w, _))| (w.to_string(), i))
            .collect();
        Self { index, idf }
    }

    /// Vocabulary size.
    pub fn dim(&self) -> usize {
        self.idf.len()
    }

    /// L2-normalised dense vector of a document.
    pub fn vector(&self, doc: &[Token]) -> Vec<f32> {
        let mut v = vec![0f32; self.dim()];
        for t in doc {
            if let Some(&i) = self.index.get(&t.lower) {
                v[i] += self.idf[i];
            }
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
        v
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Spherical k-means topics over TF-IDF vectors.
#[derive(Clone, Debug)]
pub struct TopicModel {
    /// The vectoriser.
    pub tfidf: Tfidf,
    /// Unit-norm centroids `[k][dim]`.
    pub centroids: Vec<Vec<f32>>,
}

impl TopicModel {
    /// Fits `k` topics on `docs` (k-means++ seeding from `seed`, `iters` Lloyd steps; the
    /// assignment step is one `[n, dim] × [dim, k]` product on `device`).
    pub fn fit(
        docs: &[&[Token]],
        k: usize,
        iters: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if k == 0 || docs.len() < k {
            return Err(Error::NotEnoughData(format!(
                "{} documents for {k} topics",
                docs.len()
            )));
        }
        let tfidf = Tfidf::fit(docs, 2000);
        let dim = tfidf.dim();
        if dim == 0 {
            return Err(Error::NotEnoughData("no words to build topics from".into()));
        }
        let x: Vec<Vec<f32>> = docs.iter().map(|d| tfidf.vector(d)).collect();
        let mut rng = Rng::seed_from(seed);
        // k-means++ seeding on cosine distance
        let mut centroids = vec![x[rng.below(x.len())].clone()];
        while centroids.len() < k {
            let d2: Vec<f64> = x
                .iter()
                .map(|v| {
                    let best = centroids.iter().map(|c| dot(v, c)).fold(f32::MIN, f32::max);
                    f64::from((1.0 - best).max(0.0)).powi(2)
                })
                .collect();
            let total: f64 = d2.iter().sum();
            let pick = if total <= 0.0 {
                rng.below(x.len())
            } else {
                let mut r = rng.next_f64() * total;
                d2.iter()
                    .position(|&w| {
                        r -= w;
                        r <= 0.0
                    })
                    .unwrap_or(x.len() - 1)
            };
            centroids.push(x[pick].clone());
        }
        let xt = Tensor::<2>::from_data(TensorData::new(x.concat(), [x.len(), dim]), device);
        let mut model = Self { tfidf, centroids };
        for _ in 0..iters {
            let assign = model.assign_matrix(&xt, device)?;
            let mut sums = vec![vec![0f32; dim]; k];
            for (v, &a) in x.iter().zip(&assign) {
                for (s, &y) in sums[a].iter_mut().zip(v) {
                    *s += y;
                }
            }
            for (c, s) in model.centroids.iter_mut().zip(sums) {
                let n = s.iter().map(|y| y * y).sum::<f32>().sqrt();
                if n > 0.0 {
                    *c = s.into_iter().map(|y| y / n).collect();
                }
            }
        }
        Ok(model)
    }

    fn assign_matrix(&self, xt: &Tensor<2>, device: &Device) -> Result<Vec<usize>> {
        let dim = xt.dims()[1];
        let k = self.centroids.len();
        let c: Vec<f32> = self
            .centroids
            .iter()
            .flat_map(|v| v.iter().copied())
            .collect();
        let ct = Tensor::<2>::from_data(TensorData::new(c, [k, dim]), device);
        let ids = trainer::host::i64s(xt.clone().matmul(ct.transpose()).argmax(1))?;
        Ok(ids.into_iter().map(|a| a as usize).collect())
    }

    /// The topic of a document.
    pub fn topic(&self, doc: &[Token]) -> usize {
        let v = self.tfidf.vector(doc);
        (0..self.centroids.len())
            .max_by(|&a, &b| dot(&v, &self.centroids[a]).total_cmp(&dot(&v, &self.centroids[b])))
            .unwrap_or(0)
    }
}

/// One news item of a forex window.
#[derive(Clone, Debug)]
pub struct NewsItem {
    /// Release time (minutes).
    pub time: i64,
    /// Category id (metadata).
    pub category: usize,
    /// Topic id (from a [`TopicModel`]).
    pub topic: usize,
    /// Tokens.
    pub tokens: Vec<Token>,
    /// TF-IDF vector (for extraction).
    pub vector: Vec<f32>,
}

/// Groups the items (indices into `items`) of the window `[start, end)` into `n_groups`.
pub fn group(
    items: &[&NewsItem],
    grouping: Grouping,
    n_groups: usize,
    start: i64,
    end: i64,
) -> Vec<Vec<usize>> {
    let mut groups = vec![Vec::new(); n_groups.max(1)];
    let span = (end - start).max(1);
    for (i, it) in items.iter().enumerate() {
        let g = match grouping {
            Grouping::Time => {
                (((it.time - start).clamp(0, span - 1) * n_groups as i64) / span) as usize
            }
            Grouping::Topic => it.topic,
            Grouping::Category => it.category,
        };
        groups[g.min(n_groups.max(1) - 1)].push(i);
    }
    groups
}

/// The `k` items of `group` closest (cosine) to the group's mean vector, in time order.
pub fn extract(items: &[&NewsItem], group: &[usize], k: usize) -> Vec<usize> {
    if group.len() <= k {
        return group.to_vec();
    }
    let dim = items[group[0]].vector.len();
    let mut mean = vec![0f32; dim];
    for &i in group {
        for (m, x) in mean.iter_mut().zip(&items[i].vector) {
            *m += x;
        }
    }
    let mut scored: Vec<(usize, f32)> = group
        .iter()
        .map(|&i| (i, dot(&items[i].vector, &mean)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut keep: Vec<usize> = scored.into_iter().take(k).map(|x| x.0).collect();
    keep.sort_by_key(|&i| (items[i].time, i));
    keep
}

/// Configuration of a [`ForexModel`].
#[derive(Config, Debug)]
pub struct ForexConfig {
    /// Words in the vocabulary.
    pub vocab_size: usize,
    /// Values per trade step.
    pub step_dim: usize,
    /// Model width.
    #[config(default = 64)]
    pub d_model: usize,
    /// BERT layers.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Tokens per item (with `[CLS]`).
    #[config(default = 32)]
    pub max_len: usize,
    /// Dropout before the classifier.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// The hierarchical aggregation model.
#[derive(Module, Debug)]
pub struct ForexModel {
    /// News encoder.
    pub bert: Bert,
    /// Trade encoder.
    pub trade: TradeEncoder,
    /// Trade → query over the items of a group.
    pub item_query: Linear,
    /// Trade → query over groups.
    pub group_query: Linear,
    /// Head over `[trade; news]`.
    pub classifier: Linear,
    /// Dropout.
    pub dropout: Dropout,
}

/// A batch of windows: `G` groups of at most `K` items each.
#[derive(Clone, Debug)]
pub struct ForexBatch {
    /// Word ids `[b·G·K, s]` (empty slots are `[CLS]` only, masked out by `item_mask`).
    pub ids: Tensor<2, Int>,
    /// Token mask `[b·G·K, s]`.
    pub mask: Tensor<2, Int>,
    /// 1 = a real item `[b, G, K]`.
    pub item_mask: Tensor<3>,
    /// Trade steps `[b, steps, step_dim]`.
    pub trade: Tensor<3>,
    /// 1 = up `[b]`.
    pub labels: Tensor<1, Int>,
}

impl ForexBatch {
    /// Packs windows: `windows[i][g]` are the token lists of group `g`'s kept items.
    pub fn new(
        windows: &[Vec<Vec<&[Token]>>],
        trade: &[&[f32]],
        steps: usize,
        labels: &[bool],
        vocab: &Vocab,
        max_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let b = windows.len();
        if b == 0 || trade.len() != b || labels.len() != b {
            return Err(Error::InvalidConfig(format!(
                "{b} windows, {} trade windows, {} labels",
                trade.len(),
                labels.len()
            )));
        }
        let g = windows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let k = windows
            .iter()
            .flat_map(|w| w.iter().map(Vec::len))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut texts: Vec<(&[Token], &[usize])> = Vec::with_capacity(b * g * k);
        let mut item_mask = vec![0f32; b * g * k];
        for (i, w) in windows.iter().enumerate() {
            for gi in 0..g {
                for ki in 0..k {
                    match w.get(gi).and_then(|grp| grp.get(ki)) {
                        Some(t) => {
                            texts.push((t, &[]));
                            item_mask[(i * g + gi) * k + ki] = 1.0;
                        }
                        None => texts.push((&[], &[])),
                    }
                }
            }
        }
        let (ids, mask, _) = crate::text::encode_batch(vocab, &texts, max_len, device);
        let dim = trade[0].len();
        if !dim.is_multiple_of(steps.max(1)) || trade.iter().any(|t| t.len() != dim) {
            return Err(Error::InvalidConfig(
                "trade windows of different sizes".into(),
            ));
        }
        let flat: Vec<f32> = trade.iter().flat_map(|t| t.iter().copied()).collect();
        Ok(Self {
            ids,
            mask,
            item_mask: Tensor::from_data(TensorData::new(item_mask, [b, g, k]), device),
            trade: Tensor::from_data(TensorData::new(flat, [b, steps, dim / steps]), device),
            labels: Tensor::from_data(
                TensorData::new(
                    labels.iter().map(|&u| i64::from(u)).collect::<Vec<_>>(),
                    [b],
                ),
                device,
            ),
        })
    }
}

/// Attention of `query` `[b, d]` over `keys` `[b, n, d]` where `mask` `[b, n]` is 1; an
/// all-masked row gives zero weights.
fn masked_attention(query: Tensor<2>, keys: Tensor<3>, mask: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let [b, n, d] = keys.dims();
    let scores = keys
        .clone()
        .matmul(query.reshape([b, d, 1]))
        .reshape([b, n])
        .div_scalar((d as f64).sqrt());
    let w = softmax(
        scores + (mask.clone().neg().add_scalar(1.0)).mul_scalar(-1e4),
        1,
    ) * mask;
    let out = w.clone().reshape([b, 1, n]).matmul(keys).reshape([b, d]);
    (out, w)
}

impl ForexConfig {
    /// A fresh model.
    pub fn init(&self, device: &Device) -> Result<ForexModel> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidConfig(format!("dropout {}", self.dropout)));
        }
        let d = self.d_model;
        Ok(ForexModel {
            bert: BertConfig::new(self.vocab_size, d, self.n_layers, self.n_heads, 4 * d)
                .with_max_position_embeddings(self.max_len.max(2))
                .with_with_pooler(false)
                .init(device)?,
            trade: TradeEncoder::new(self.step_dim, d, device)?,
            item_query: LinearConfig::new(d, d).init(device),
            group_query: LinearConfig::new(d, d).init(device),
            classifier: LinearConfig::new(2 * d, 2).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        })
    }
}

impl ForexModel {
    /// Logits `[b, 2]` and the group attention weights `[b, G]`.
    pub fn forward(&self, batch: &ForexBatch) -> (Tensor<2>, Tensor<2>) {
        let [b, g, k] = batch.item_mask.dims();
        let h = self
            .bert
            .forward(batch.ids.clone(), None, Some(batch.mask.clone()))
            .last_hidden_state;
        let d = h.dims()[2];
        let items = mean_pool(h, batch.mask.clone()).reshape([b * g, k, d]);
        let y = self.trade.forward(batch.trade.clone());
        let q = y.max_dim(1).reshape([b, d]);
        let qi = self
            .item_query
            .forward(q.clone())
            .reshape([b, 1, d])
            .repeat_dim(1, g)
            .reshape([b * g, d]);
        let (groups, _) = masked_attention(qi, items, batch.item_mask.clone().reshape([b * g, k]));
        let group_mask = batch.item_mask.clone().max_dim(2).reshape([b, g]);
        let (news, wg) = masked_attention(
            self.group_query.forward(q.clone()),
            groups.reshape([b, g, d]),
            group_mask,
        );
        let logits = self
            .classifier
            .forward(self.dropout.forward(Tensor::cat(vec![q, news], 1)));
        (logits, wg)
    }

    /// Cross-entropy of a batch.
    pub fn loss(&self, batch: &ForexBatch) -> Tensor<1> {
        classification_loss(self.forward(batch).0, batch.labels.clone())
    }

    /// Probability of "up" per window.
    pub fn predict(&self, batch: &ForexBatch) -> Result<Vec<f32>> {
        up_probability(self.forward(batch).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tokenize;

    fn item(time: i64, category: usize, text: &str, tfidf: &Tfidf) -> NewsItem {
        let tokens = tokenize(text);
        NewsItem {
            time,
            category,
            topic: 0,
            vector: tfidf.vector(&tokens),
            tokens,
        }
    }

    #[test]
    fn grouping_extraction_and_topics() {
        let texts = [
            "central bank raised rates",
            "central bank cut rates",
            "bank rates unchanged",
            "football team won",
            "football team lost",
            "team won again",
        ];
        let toks: Vec<Vec<Token>> = texts.iter().map(|t| tokenize(t)).collect();
        let refs: Vec<&[Token]> = toks.iter().map(Vec::as_slice).collect();
        let d = Device::flex();
        let tm = TopicModel::fit(&refs, 2, 5, 3, &d).unwrap_or_else(|e| panic!("{e}"));
        let topics: Vec<usize> = toks.iter().map(|t| tm.topic(t)).collect();
        assert_eq!(topics[0], topics[1]);
        assert_eq!(topics[0], topics[2]);
        assert_eq!(topics[3], topics[4]);
        assert_ne!(topics[0], topics[3]);
        assert!(TopicModel::fit(&refs[..1], 2, 5, 3, &d).is_err());

        let items: Vec<NewsItem> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| item(i as i64 * 10, usize::from(i >= 3), t, &tm.tfidf))
            .collect();
        let r: Vec<&NewsItem> = items.iter().collect();
        assert_eq!(
            group(&r, Grouping::Category, 2, 0, 60),
            vec![vec![0, 1, 2], vec![3, 4, 5]]
        );
        assert_eq!(
            group(&r, Grouping::Time, 3, 0, 60),
            vec![vec![0, 1], vec![2, 3], vec![4, 5]]
        );
        // the least central of the bank items is dropped; order stays by time
        let kept = extract(&r, &[0, 1, 2], 2);
        assert_eq!(kept.len(), 2);
        assert!(
            kept.windows(2)
                .all(|w| items[w[0]].time <= items[w[1]].time)
        );
        assert_eq!(extract(&r, &[4], 2), vec![4]);
    }

    #[test]
    fn the_model_handles_empty_groups_and_windows() {
        let d = Device::flex();
        let toks: Vec<Vec<Token>> = ["rates rose", "team won", "rates fell"]
            .iter()
            .map(|t| tokenize(t))
            .collect();
        let vocab = Vocab::build(toks.iter().map(Vec::as_slice), 1, 50);
        let m = ForexConfig::new(vocab.len(), 12)
            .with_d_model(16)
            .with_n_heads(2)
            .with_n_layers(1)
            .with_dropout(0.0)
            .init(&d)
            .unwrap_or_else(|e| panic!("{e}"));
        let w1 = vec![
            vec![toks[0].as_slice(), toks[2].as_slice()],
            vec![toks[1].as_slice()],
        ];
        let w2: Vec<Vec<&[Token]>> = vec![vec![], vec![]];
        let trade = vec![0.5f32; 24];
        let b = ForexBatch::new(
            &[w1, w2],
            &[&trade, &trade],
            2,
            &[true, false],
            &vocab,
            8,
            &d,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (logits, wg) = m.forward(&b);
        assert_eq!(logits.dims(), [2, 2]);
        let w: Vec<f32> = wg.into_data().try_to_vec::<f32>().unwrap_or_default();
        assert!((w[0] + w[1] - 1.0).abs() < 1e-5);
        assert_eq!(&w[2..], &[0.0, 0.0]);
        assert!(
            m.predict(&b)
                .map(|p| p.iter().all(|x| x.is_finite()))
                .unwrap_or(false)
        );
        assert!(ForexBatch::new(&[], &[], 2, &[], &vocab, 8, &d).is_err());
    }
}
