//! Early-exit baselines inside one model: an internal classifier after every encoder layer,
//! with DeeBERT's entropy exit (Xin et al., 2020) or PABEE's patience exit (Zhou et al.,
//! 2020). Inference runs layer by layer and drops exited rows, like the cascade.
//!
//! Training (a choice; the two papers differ): all internal classifiers and the encoder are
//! trained jointly with PABEE's weighted loss Σ_j j·CE_j / Σ_j j. DeeBERT's two-stage schedule
//! (final classifier first, then the internal ones on a frozen encoder) is not reproduced.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use plm::bert::Bert;
use plm::hooks::AttentionHooks;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::cascade::{ExitOutput, compact, lengths};
use crate::member::Pooling;
use plm::bert::pool_hidden;

/// When an example leaves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExitRule {
    /// DeeBERT: the prediction entropy (nats) falls below the threshold; a threshold at or
    /// above ln C (C classes, the largest entropy there is) lets every example exit at the
    /// first layer, whatever the rounding of a near-uniform prediction.
    Entropy(f64),
    /// PABEE: the prediction stayed the same over this many consecutive layers.
    Patience(usize),
}

/// A BERT with a classifier after every layer.
#[derive(Module, Debug)]
pub struct EarlyExit {
    /// The encoder.
    pub bert: Bert,
    /// One head per layer.
    pub heads: Vec<Linear>,
    /// Dropout before the heads.
    pub dropout: Dropout,
    #[module(skip)]
    mean_pool: bool,
}

impl EarlyExit {
    /// Fresh heads of `n_labels` classes after every layer of `bert`.
    pub fn new(
        bert: Bert,
        n_labels: usize,
        pooling: Pooling,
        dropout: f64,
        device: &Device,
    ) -> Self {
        let d = bert.embeddings.word_embeddings.weight.dims()[1];
        let init = plm::layers::Init { std: 0.02, device };
        let heads = (0..bert.n_layers())
            .map(|_| init.linear(d, n_labels, true))
            .collect();
        Self {
            bert,
            heads,
            dropout: DropoutConfig::new(dropout).init(),
            mean_pool: pooling == Pooling::Mean,
        }
    }

    fn head(&self, l: usize, h: Tensor<3>, mask: Tensor<2, Int>) -> Tensor<2> {
        let pooling = if self.mean_pool {
            Pooling::Mean
        } else {
            Pooling::Cls
        };
        let pooled = pool_hidden(&self.bert, h, mask, pooling);
        self.heads[l].forward(self.dropout.forward(pooled))
    }

    /// Every layer's logits.
    pub fn forward_all(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Vec<Tensor<2>> {
        let hooks = AttentionHooks::fast();
        let key_mask = Bert::key_mask(mask.clone());
        let mut h = self.bert.embed(ids, None);
        let mut out = Vec::with_capacity(self.heads.len());
        for l in 0..self.heads.len() {
            h = self
                .bert
                .layer_forward(l, h, Some(key_mask.clone()), &hooks)
                .0;
            out.push(self.head(l, h.clone(), mask.clone()));
        }
        out
    }

    /// PABEE's weighted loss over the layers: Σ_j j·CE_j / Σ_j j.
    pub fn loss(
        &self,
        ids: Tensor<2, Int>,
        mask: Tensor<2, Int>,
        labels: Tensor<1, Int>,
    ) -> Tensor<1> {
        let all = self.forward_all(ids, mask);
        let n = all.len();
        let total = (n * (n + 1) / 2) as f64;
        let mut loss: Option<Tensor<1>> = None;
        for (j, logits) in all.into_iter().enumerate() {
            let l = cross_entropy(logits, labels.clone()).mul_scalar((j + 1) as f64 / total);
            loss = Some(match loss {
                Some(a) => a + l,
                None => l,
            });
        }
        loss.unwrap_or_else(|| Tensor::zeros([1], &labels.device()))
    }

    /// Layer-by-layer inference with exits and batch compaction.
    pub fn infer(
        &self,
        ids: Tensor<2, Int>,
        mask: Tensor<2, Int>,
        rule: ExitRule,
    ) -> crate::Result<ExitOutput> {
        let [b, _] = ids.dims();
        let n = self.heads.len();
        if n == 0 {
            return Err(Error::InvalidConfig(
                "an early-exit model needs at least one layer".into(),
            ));
        }
        let hooks = AttentionHooks::fast();
        let mut out = ExitOutput {
            predictions: vec![0; b],
            exit_at: vec![0; b],
            confidence: vec![0.0; b],
            layers: vec![0; b],
        };
        let mut rows: Vec<usize> = (0..b).collect();
        let mut lens = lengths(&mask)?;
        let mut streak = vec![0usize; b];
        let mut prev: Vec<Option<usize>> = vec![None; b];
        let mut mask = mask;
        let mut h = self.bert.embed(ids, None);
        for l in 0..n {
            h = self
                .bert
                .layer_forward(l, h, Some(Bert::key_mask(mask.clone())), &hooks)
                .0;
            let p = softmax(self.head(l, h.clone(), mask.clone()), 1);
            let max_entropy = (p.dims()[1] as f64).ln();
            let entropy = trainer::host::f32s(
                (p.clone() * p.clone().clamp_min(1e-12).log())
                    .sum_dim(1)
                    .neg(),
            )?;
            let (conf, idx) = p.max_dim_with_indices(1);
            let conf = trainer::host::f32s(conf)?;
            let pred: Vec<usize> = trainer::host::i64s(idx)?
                .into_iter()
                .map(|v| v as usize)
                .collect();
            let mut keep = Vec::new();
            for (r, &ex) in rows.iter().enumerate() {
                streak[ex] = match prev[ex] {
                    Some(q) if q == pred[r] => streak[ex] + 1,
                    _ => 0,
                };
                prev[ex] = Some(pred[r]);
                let exit = l + 1 == n
                    || match rule {
                        ExitRule::Entropy(s) => s >= max_entropy || f64::from(entropy[r]) < s,
                        ExitRule::Patience(t) => t > 0 && streak[ex] >= t,
                    };
                if exit {
                    out.predictions[ex] = pred[r];
                    out.exit_at[ex] = l;
                    out.confidence[ex] = conf[r];
                    out.layers[ex] = l + 1;
                } else {
                    keep.push(r);
                }
            }
            if keep.is_empty() {
                break;
            }
            if keep.len() < rows.len() {
                let width = keep.iter().map(|&r| lens[r]).max().unwrap_or(1).max(1);
                let sel = Tensor::<1, Int>::from_data(
                    TensorData::new(
                        keep.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                        [keep.len()],
                    ),
                    &h.device(),
                );
                h = h.select(0, sel).slice(s![.., 0..width, ..]);
                let dummy = mask.clone();
                let (_, m2, l2) = compact(dummy, mask, &lens, &keep);
                (mask, lens) = (m2, l2);
                rows = keep.iter().map(|&r| rows[r]).collect();
            }
        }
        Ok(out)
    }
}

/// Mean cross-entropy of class logits against labels (`plm::bert::classification_loss`).
pub use plm::bert::classification_loss as cross_entropy;
