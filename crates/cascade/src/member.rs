//! One cascade member: a complete BERT encoder with its own classification head.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use plm::bert::{Bert, mean_pool};
use serde::{Deserialize, Serialize};

/// How a member turns token states into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pooling {
    /// The `[CLS]` state through the BERT pooler (dense + tanh) when the checkpoint has one,
    /// the raw `[CLS]` state otherwise: the paper's head.
    Cls,
    /// The mean of the real tokens' states: the pooling the sentence-transformers MiniLM
    /// checkpoints were trained with (the experiment's default).
    Mean,
}

/// A classifier: encoder → pooling → dropout → linear.
#[derive(Module, Debug)]
pub struct Member {
    /// The encoder.
    pub bert: Bert,
    /// `d_model → n_labels`.
    pub head: Linear,
    /// Dropout before the head.
    pub dropout: Dropout,
    #[module(skip)]
    mean_pool: bool,
}

/// Pools the last hidden state `[b, s, d]` → `[b, d]`.
pub(crate) fn pool(bert: &Bert, h: Tensor<3>, mask: Tensor<2, Int>, mean: bool) -> Tensor<2> {
    if mean {
        return mean_pool(h, mask);
    }
    let [b, _, d] = h.dims();
    let cls = h.slice(s![.., 0..1, ..]).reshape([b, d]);
    match &bert.pooler {
        Some(p) => p.dense.forward(cls).tanh(),
        None => cls,
    }
}

impl Member {
    /// A fresh head of `n_labels` classes on `bert`.
    pub fn new(bert: Bert, n_labels: usize, pooling: Pooling, dropout: f64, device: &Device) -> Self {
        let d = bert.embeddings.word_embeddings.weight.dims()[1];
        Self {
            bert,
            head: plm::layers::Init { std: 0.02, device }.linear(d, n_labels, true),
            dropout: DropoutConfig::new(dropout).init(),
            mean_pool: pooling == Pooling::Mean,
        }
    }

    /// Encoder layers (the cost unit of the paper's speed-up).
    pub fn n_layers(&self) -> usize {
        self.bert.n_layers()
    }

    /// # Shapes
    /// `ids`, `mask` `[batch, seq]` → logits `[batch, n_labels]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<2> {
        let h = self.bert.forward(ids, None, Some(mask.clone())).last_hidden_state;
        let pooled = pool(&self.bert, h, mask, self.mean_pool);
        self.head.forward(self.dropout.forward(pooled))
    }
}
