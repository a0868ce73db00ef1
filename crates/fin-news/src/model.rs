//! SSPM and MSSPM (Chen et al., 2019) over plm's BERT, and a trade-only baseline.
//!
//! - News: `S_x` = BERT's last hidden states (the paper used ELMo + BiLSTM + self-attention;
//!   the issue asks for plm's BERT, whose layers already are self-attention).
//! - Events: a tag embedding `E_e` per token, fused as
//!   `H_x = ReLU(W [S_x; E_e; S_x − E_e; S_x ∘ E_e])`. The text-only model feeds `E_e = 0`
//!   through the same layer (so the models differ only in the tags they see); the coarse model
//!   sees S/P/O tags, SSPM the fine-grained type and role tags.
//! - Trade ([`TradeEncoder`]): per-step features → linear → BiLSTM → self-attention (with a
//!   residual) = `S_y`.
//! - Co-attention: `L = H_x W S_yᵀ`; `C_x = softmax_steps(L) S_y`, `C_y = softmax_tokens(Lᵀ) H_x`
//!   (padding masked).
//! - Gates: `G = g ∘ C + (1 − g) ∘ H`, `g = σ(W_g [C; H])`, for news and trade.
//! - Max-pool each over time, concatenate, dropout, linear → up/down.
//! - MSSPM adds a linear-chain CRF tagger over `S_x` ([`crate::crf::Crf`]). Training feeds the
//!   dictionary's tags to `E_e` and minimises `(1 − η) · L_CRF + η · L_pred`, with `L_CRF` the
//!   CRF's negative log-likelihood divided by the batch's mean real length (per token, so η
//!   weighs comparable scales — the paper does not say how it scales the two); at test the
//!   CRF's Viterbi tags replace the dictionary's ([`TagSource::Predicted`]).

use burn::module::Module;
use burn::nn::{
    BiLstm, BiLstmConfig, Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid, softmax};
use plm::bert::{Bert, BertConfig, classification_loss};

use crate::crf::Crf;
use crate::{Error, Result};
use trainer::host::ToHost;

/// A large negative score for masked positions.
const NEG: f32 = -1e4;

/// Trade encoder: linear → BiLSTM → single-head self-attention with a residual.
#[derive(Module, Debug)]
pub struct TradeEncoder {
    /// Step features → model width.
    pub input: Linear,
    /// BiLSTM (two halves of the model width).
    pub lstm: BiLstm,
    /// Self-attention query.
    pub query: Linear,
    /// Self-attention key.
    pub key: Linear,
    /// Self-attention value.
    pub value: Linear,
}

impl TradeEncoder {
    /// `step_dim` values per step into `d_model` (even).
    pub fn new(step_dim: usize, d_model: usize, device: &Device) -> Result<Self> {
        if !d_model.is_multiple_of(2) || step_dim == 0 {
            return Err(Error::InvalidConfig(format!(
                "trade encoder needs an even width and step features (d_model {d_model}, step_dim {step_dim})"
            )));
        }
        Ok(Self {
            input: LinearConfig::new(step_dim, d_model).init(device),
            lstm: BiLstmConfig::new(d_model, d_model / 2, true).init(device),
            query: LinearConfig::new(d_model, d_model).init(device),
            key: LinearConfig::new(d_model, d_model).init(device),
            value: LinearConfig::new(d_model, d_model).init(device),
        })
    }

    /// `[b, steps, step_dim]` → `[b, steps, d_model]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = relu(self.input.forward(x));
        let (h, _) = self.lstm.forward(h, None);
        let d = h.dims()[2];
        let q = self.query.forward(h.clone());
        let k = self.key.forward(h.clone());
        let v = self.value.forward(h.clone());
        let a = softmax(q.matmul(k.swap_dims(1, 2)).div_scalar((d as f64).sqrt()), 2);
        h + a.matmul(v)
    }
}

/// Max over dimension 1 of `[b, s, d]` where `mask` `[b, s]` is 1.
pub fn masked_max(x: Tensor<3>, mask: Tensor<2, Int>) -> Tensor<2> {
    let [b, s, d] = x.dims();
    let m = mask.float().reshape([b, s, 1]);
    (x * m.clone() + (m.neg().add_scalar(1.0)).mul_scalar(NEG))
        .max_dim(1)
        .reshape([b, d])
}

/// Which event tags a model has.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum EventInput {
    /// Text only.
    None,
    /// Subject / predicate / object tags.
    Coarse,
    /// Fine-grained event types and roles.
    Fine,
}

/// Where the tags fed to the event embedding come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagSource {
    /// The batch's tags (the dictionary's extraction).
    Given,
    /// The model's CRF (MSSPM at test time).
    Predicted,
}

/// Configuration of an [`Sspm`].
#[derive(Config, Debug)]
pub struct SspmConfig {
    /// Words in the vocabulary.
    pub vocab_size: usize,
    /// Tags of the event input (ignored for [`EventInput::None`]).
    pub n_tags: usize,
    /// Values per trade step.
    pub step_dim: usize,
    /// Event input.
    #[config(default = "EventInput::Fine")]
    pub events: EventInput,
    /// MSSPM: a CRF tagger and the joint loss.
    #[config(default = false)]
    pub crf: bool,
    /// η: weight of the prediction loss in MSSPM's joint loss.
    #[config(default = 0.5)]
    pub eta: f64,
    /// Model width.
    #[config(default = 64)]
    pub d_model: usize,
    /// BERT layers.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Tokens per news item (with `[CLS]`).
    #[config(default = 64)]
    pub max_len: usize,
    /// Dropout before the classifier.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// SSPM / MSSPM.
#[derive(Module, Debug)]
pub struct Sspm {
    /// News encoder.
    pub bert: Bert,
    /// Event tag embedding.
    pub tag_embedding: Option<Embedding>,
    /// Fusion `[S; E; S − E; S ∘ E]` → width.
    pub fuse: Linear,
    /// Trade encoder.
    pub trade: TradeEncoder,
    /// Co-attention bilinear form.
    pub co: Linear,
    /// News gate.
    pub gate_x: Linear,
    /// Trade gate.
    pub gate_y: Linear,
    /// Up / down head.
    pub classifier: Linear,
    /// Dropout.
    pub dropout: Dropout,
    /// MSSPM tagger emissions.
    pub tagger: Option<Linear>,
    /// MSSPM CRF.
    pub crf: Option<Crf>,
    eta: f64,
}

/// One batch of stock examples.
#[derive(Clone, Debug)]
pub struct StockBatch {
    /// Word ids `[b, s]`.
    pub ids: Tensor<2, Int>,
    /// 1 = real token `[b, s]`.
    pub mask: Tensor<2, Int>,
    /// Event tags `[b, s]`.
    pub tags: Tensor<2, Int>,
    /// Trade steps `[b, steps, step_dim]`.
    pub trade: Tensor<3>,
    /// 1 = up `[b]`.
    pub labels: Tensor<1, Int>,
}

impl SspmConfig {
    /// A fresh model.
    pub fn init(&self, device: &Device) -> Result<Sspm> {
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..=1.0).contains(&self.eta) {
            return Err(Error::InvalidConfig(format!(
                "dropout {} must be in [0, 1) and eta {} in [0, 1]",
                self.dropout, self.eta
            )));
        }
        if self.events != EventInput::None && self.n_tags < 2 {
            return Err(Error::InvalidConfig(
                "event input needs at least two tags".into(),
            ));
        }
        if self.crf && self.events == EventInput::None {
            return Err(Error::InvalidConfig(
                "MSSPM's CRF needs an event input".into(),
            ));
        }
        let d = self.d_model;
        let bert = BertConfig::new(self.vocab_size, d, self.n_layers, self.n_heads, 4 * d)
            .with_max_position_embeddings(self.max_len.max(2))
            .with_with_pooler(false)
            .init(device)?;
        Ok(Sspm {
            bert,
            tag_embedding: (self.events != EventInput::None)
                .then(|| EmbeddingConfig::new(self.n_tags, d).init(device)),
            fuse: LinearConfig::new(4 * d, d).init(device),
            trade: TradeEncoder::new(self.step_dim, d, device)?,
            co: LinearConfig::new(d, d).with_bias(false).init(device),
            gate_x: LinearConfig::new(2 * d, d).init(device),
            gate_y: LinearConfig::new(2 * d, d).init(device),
            classifier: LinearConfig::new(2 * d, 2).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            tagger: self
                .crf
                .then(|| LinearConfig::new(d, self.n_tags).init(device)),
            crf: self.crf.then(|| Crf::new(self.n_tags, device)),
            eta: self.eta,
        })
    }
}

/// What [`Sspm::forward`] returns.
#[derive(Debug)]
pub struct SspmOutput {
    /// Up/down logits `[b, 2]`.
    pub logits: Tensor<2>,
    /// Tagger emissions `[b, s, T]` (MSSPM).
    pub emissions: Option<Tensor<3>>,
}

fn gate(g: &Linear, c: Tensor<3>, h: Tensor<3>) -> Tensor<3> {
    let z = sigmoid(g.forward(Tensor::cat(vec![c.clone(), h.clone()], 2)));
    z.clone() * c + (z.neg().add_scalar(1.0)) * h
}

impl Sspm {
    /// Logits (and tag emissions) of a batch.
    pub fn forward(&self, batch: &StockBatch, source: TagSource) -> Result<SspmOutput> {
        let sx = self
            .bert
            .forward(batch.ids.clone(), None, Some(batch.mask.clone()))
            .last_hidden_state; // [b, s, d]
        let [b, s, d] = sx.dims();
        let emissions = self.tagger.as_ref().map(|t| t.forward(sx.clone()));
        let e = match (&self.tag_embedding, source) {
            (None, _) => Tensor::zeros([b, s, d], &sx.device()),
            (Some(emb), TagSource::Given) => emb.forward(batch.tags.clone()),
            (Some(emb), TagSource::Predicted) => {
                let (Some(crf), Some(em)) = (&self.crf, &emissions) else {
                    return Err(Error::InvalidConfig(
                        "predicted tags need MSSPM's CRF".into(),
                    ));
                };
                let paths = crf.decode(em.clone(), batch.mask.clone())?;
                let mut flat = vec![0i64; b * s];
                for (r, p) in paths.iter().enumerate() {
                    for (j, &t) in p.iter().enumerate() {
                        flat[r * s + j] = t as i64;
                    }
                }
                emb.forward(Tensor::from_data(
                    TensorData::new(flat, [b, s]),
                    &sx.device(),
                ))
            }
        };
        let hx = relu(self.fuse.forward(Tensor::cat(
            vec![sx.clone(), e.clone(), sx.clone() - e.clone(), sx * e],
            2,
        )));
        let sy = self.trade.forward(batch.trade.clone()); // [b, T, d]
        let aff = self
            .co
            .forward(hx.clone())
            .matmul(sy.clone().swap_dims(1, 2)); // [b, s, T]
        let cx = softmax(aff.clone(), 2).matmul(sy.clone());
        let key_pad = batch
            .mask
            .clone()
            .float()
            .neg()
            .add_scalar(1.0)
            .mul_scalar(NEG)
            .reshape([b, 1, s]);
        let cy = softmax(aff.swap_dims(1, 2) + key_pad, 2).matmul(hx.clone()); // [b, T, d]
        let gx = gate(&self.gate_x, cx, hx);
        let gy = gate(&self.gate_y, cy, sy);
        let px = masked_max(gx, batch.mask.clone());
        let py = gy.max_dim(1).reshape([b, d]);
        let h = self.dropout.forward(Tensor::cat(vec![px, py], 1));
        Ok(SspmOutput {
            logits: self.classifier.forward(h),
            emissions,
        })
    }

    /// The training loss (given tags) and its prediction / CRF parts.
    pub fn loss(&self, batch: &StockBatch) -> Result<(Tensor<1>, f64, f64)> {
        let out = self.forward(batch, TagSource::Given)?;
        let pred = classification_loss(out.logits, batch.labels.clone());
        let pred_v = scalar(&pred)?;
        match (&self.crf, out.emissions) {
            (Some(crf), Some(em)) => {
                let [b, _] = batch.mask.dims();
                let mean_len = scalar(&batch.mask.clone().float().sum().reshape([1]))? / b as f64;
                let nll = crf
                    .nll(em, batch.tags.clone(), batch.mask.clone())
                    .div_scalar(mean_len.max(1.0));
                let nll_v = scalar(&nll)?;
                Ok((
                    pred.mul_scalar(self.eta) + nll.mul_scalar(1.0 - self.eta),
                    pred_v,
                    nll_v,
                ))
            }
            _ => Ok((pred, pred_v, 0.0)),
        }
    }

    /// Probability of "up" per example.
    pub fn predict(&self, batch: &StockBatch, source: TagSource) -> Result<Vec<f32>> {
        let out = self.forward(batch, source)?;
        up_probability(out.logits)
    }

    /// The CRF's tags of a batch (MSSPM only).
    pub fn tag(&self, batch: &StockBatch) -> Result<Vec<Vec<usize>>> {
        let (Some(tagger), Some(crf)) = (&self.tagger, &self.crf) else {
            return Err(Error::InvalidConfig("only MSSPM tags".into()));
        };
        let sx = self
            .bert
            .forward(batch.ids.clone(), None, Some(batch.mask.clone()))
            .last_hidden_state;
        crf.decode(tagger.forward(sx), batch.mask.clone())
    }
}

/// The trade-only baseline: [`TradeEncoder`], max-pool, linear.
#[derive(Module, Debug)]
pub struct TradeOnly {
    /// Encoder.
    pub trade: TradeEncoder,
    /// Head.
    pub classifier: Linear,
    /// Dropout.
    pub dropout: Dropout,
}

impl TradeOnly {
    /// A fresh model.
    pub fn new(step_dim: usize, d_model: usize, dropout: f64, device: &Device) -> Result<Self> {
        Ok(Self {
            trade: TradeEncoder::new(step_dim, d_model, device)?,
            classifier: LinearConfig::new(d_model, 2).init(device),
            dropout: DropoutConfig::new(dropout).init(),
        })
    }

    /// Logits `[b, 2]` of `[b, steps, step_dim]`.
    pub fn forward(&self, trade: Tensor<3>) -> Tensor<2> {
        let y = self.trade.forward(trade);
        let [b, _, d] = y.dims();
        self.classifier
            .forward(self.dropout.forward(y.max_dim(1).reshape([b, d])))
    }
}

/// Softmax column 1 of `[b, 2]` logits.
pub fn up_probability(logits: Tensor<2>) -> Result<Vec<f32>> {
    let b = logits.dims()[0];
    Ok(softmax(logits, 1)
        .slice(s![.., 1..2])
        .reshape([b])
        .to_f32s()?)
}

pub(crate) fn scalar(t: &Tensor<1>) -> Result<f64> {
    Ok(trainer::host::scalar(t.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn batch(d: &Device) -> StockBatch {
        let (b, s, steps, f) = (3, 6, 4, 12);
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(
                (0..(b * s) as i64).map(|i| 2 + i % 7).collect::<Vec<_>>(),
                [b, s],
            ),
            d,
        );
        let mask = Tensor::<2, Int>::from_data(
            TensorData::new(
                vec![1i64, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0],
                [b, s],
            ),
            d,
        );
        let tags = Tensor::<2, Int>::from_data(
            TensorData::new(
                (0..(b * s) as i64).map(|i| i % 3).collect::<Vec<_>>(),
                [b, s],
            ),
            d,
        ) * mask.clone();
        StockBatch {
            ids,
            mask,
            tags,
            trade: Tensor::random([b, steps, f], Distribution::Normal(0.0, 1.0), d),
            labels: Tensor::from_data(TensorData::new(vec![1i64, 0, 1], [b]), d),
        }
    }

    #[test]
    fn every_variant_runs_and_padding_does_not_leak() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        let b = batch(&d);
        for (events, crf) in [
            (EventInput::None, false),
            (EventInput::Coarse, false),
            (EventInput::Fine, false),
            (EventInput::Fine, true),
        ] {
            d.seed(1);
            let m = SspmConfig::new(20, 3, 12)
                .with_events(events)
                .with_crf(crf)
                .with_d_model(16)
                .with_n_heads(2)
                .with_n_layers(1)
                .with_max_len(8)
                .with_dropout(0.0)
                .init(&d)
                .unwrap_or_else(|e| panic!("{e}"));
            let (loss, pred, nll) = m.loss(&b).unwrap_or_else(|e| panic!("{e}"));
            assert!(pred > 0.0 && scalar(&loss).unwrap_or(f64::NAN).is_finite());
            assert_eq!(nll > 0.0, crf);
            let p = m
                .predict(&b, TagSource::Given)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.len(), 3);
            if crf {
                assert_eq!(
                    m.predict(&b, TagSource::Predicted).map(|p| p.len()).ok(),
                    Some(3)
                );
                let tags = m.tag(&b).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(tags.iter().map(Vec::len).collect::<Vec<_>>(), vec![6, 3, 5]);
            } else {
                // without a CRF only the text-only model (no tags at all) accepts "predicted"
                assert_eq!(
                    m.predict(&b, TagSource::Predicted).is_ok(),
                    events == EventInput::None
                );
            }
            // changing a padded token changes nothing
            let mut b2 = b.clone();
            b2.ids = b2.ids.clone().slice_assign(
                s![1..2, 4..5],
                Tensor::from_data(TensorData::new(vec![9i64], [1, 1]), &d),
            );
            let p2 = m
                .predict(&b2, TagSource::Given)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!((p[1] - p2[1]).abs() < 1e-5, "{} vs {}", p[1], p2[1]);
        }
        assert!(
            SspmConfig::new(20, 3, 12)
                .with_events(EventInput::None)
                .with_crf(true)
                .init(&d)
                .is_err()
        );
        assert!(SspmConfig::new(20, 1, 12).init(&d).is_err());
        let t = TradeOnly::new(12, 16, 0.0, &d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.forward(b.trade).dims(), [3, 2]);
    }
}
