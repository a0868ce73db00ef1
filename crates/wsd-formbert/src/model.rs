//! The gloss-matching classifier (GlossBERT style) and FormBERT's word-formation knowledge.
//!
//! A (context, definition) pair is encoded as `[CLS] context [SEP] definition [SEP]`; the pooled
//! output, after dropout, goes through a linear layer to the match / no-match logits. FormBERT
//! adds a learned formation embedding (18 classes × hidden) to the pooled output before that
//! layer: the gold formation while training (teacher forcing, as the official code), the gold
//! or the predicted one at test time.
//!
//! The formation predictor reads the *embedding-layer* output of the context alone (word +
//! position + segment embeddings and their LayerNorm, no transformer layer), applies a per-token
//! MLP (Linear, ReLU, Linear), pools over the tokens and classifies into the 18 formations. The
//! official code pools with a plain mean over all padded positions; the default here is the mean
//! over real tokens ([`PredictorPooling::Masked`]); [`PredictorPooling::AllPositions`]
//! reproduces the official behaviour. The joint loss is `CE(sense) + w · CE(formation)` with
//! `w = 0.5`. Every formation parameter has `formation` in its path, so
//! `Trainer::with_lr_scale(|p| if p.contains("formation") { 8.0 } else { 1.0 })` gives them
//! their own learning rate (official: 4e-4 against 5e-5).
//!
//! Note on instance-level WSD: the formation of a row is the formation of the word in its
//! context, the same for every candidate sense of an instance, and it enters the match logits
//! additively (`W·(h + e_f)`). So at inference it shifts every candidate's match score of an
//! instance by the same amount and cannot change which sense ranks first; it does change pair
//! F1 (a threshold), and it changes what the encoder learns in training (with the predictor's
//! loss as an auxiliary task). Gains in instance accuracy come from training.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};
use plm::bert::{Bert, classification_loss, mean_pool};

use crate::chartok::{CharVocab, PAD};
use crate::data::PairRow;
use crate::formation::N_FORMATIONS;
use crate::{Error, Result};
use trainer::host::{IntsToHost, ToHost};

/// How the formation predictor pools its per-token states.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum PredictorPooling {
    /// Mean over real tokens (the default).
    Masked,
    /// Mean over every position, padding included (the official code).
    AllPositions,
}

/// Which formation the classifier is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormationSource {
    /// The annotated formation of the row.
    Gold,
    /// The predictor's argmax.
    Predicted,
}

/// Configuration of a [`FormBert`].
#[derive(Config, Debug)]
pub struct FormBertConfig {
    /// Add the formation embedding (false: the Gloss-BERT baseline).
    #[config(default = true)]
    pub use_formation: bool,
    /// Build and train the formation predictor.
    #[config(default = true)]
    pub predictor: bool,
    /// Weight of the formation loss. Default 0.5 (official `formation_cls_weight`).
    #[config(default = 0.5)]
    pub formation_weight: f64,
    /// Predictor pooling.
    #[config(default = "PredictorPooling::Masked")]
    pub pooling: PredictorPooling,
    /// Dropout on the pooled output. Default 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Tokens per pair and per context. Default 128 (official `max_len`).
    #[config(default = 128)]
    pub max_len: usize,
}

/// The formation predictor over the embedding layer.
#[derive(Module, Debug)]
pub struct FormationPredictor {
    /// First per-token layer.
    pub mlp_in: Linear,
    /// Second per-token layer.
    pub mlp_out: Linear,
    /// Pooled state → formation logits.
    pub head: Linear,
}

/// Gloss-BERT / FormBERT.
#[derive(Module, Debug)]
pub struct FormBert {
    /// The encoder.
    pub bert: Bert,
    /// Match / no-match head on the pooled output.
    pub classifier: Linear,
    /// Dropout before the head.
    pub dropout: Dropout,
    /// Formation embedding added to the pooled output.
    pub formation_embedding: Option<Embedding>,
    /// The formation predictor.
    pub formation_predictor: Option<FormationPredictor>,
    formation_weight: f64,
    masked_pool: bool,
}

/// A batch of pairs as tensors.
#[derive(Clone, Debug)]
pub struct PairBatch {
    /// `[CLS] context [SEP] definition [SEP]` `[batch, seq]`, padded with [`PAD`].
    pub ids: Tensor<2, Int>,
    /// Segment ids `[batch, seq]`.
    pub segments: Tensor<2, Int>,
    /// 1 = real token `[batch, seq]`.
    pub mask: Tensor<2, Int>,
    /// `[CLS] context [SEP]` alone `[batch, ctx_seq]` (the predictor's input).
    pub ctx_ids: Tensor<2, Int>,
    /// Its mask.
    pub ctx_mask: Tensor<2, Int>,
    /// Labels `[batch]` (1 = match).
    pub labels: Tensor<1, Int>,
    /// Gold formations `[batch]`.
    pub formations: Tensor<1, Int>,
}

/// Right-pads token rows with [`PAD`] into `[rows, longest]` ids and a 1/0 mask.
pub(crate) fn pad(rows: &[Vec<u32>], device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let b = rows.len();
    let s = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut ids = vec![i64::from(PAD); b * s];
    let mut mask = vec![0i64; b * s];
    for (i, r) in rows.iter().enumerate() {
        for (j, &t) in r.iter().enumerate() {
            ids[i * s + j] = i64::from(t);
            mask[i * s + j] = 1;
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [b, s]), device),
        Tensor::from_data(TensorData::new(mask, [b, s]), device),
    )
}

impl PairBatch {
    /// Encodes `rows` with `vocab`, each part cut to `max_len` tokens.
    pub fn new(
        rows: &[&PairRow],
        vocab: &CharVocab,
        max_len: usize,
        device: &Device,
    ) -> Result<Self> {
        if rows.is_empty() {
            return Err(Error::InvalidConfig("an empty batch of pairs".into()));
        }
        if let Some(r) = rows.iter().find(|r| r.formation >= N_FORMATIONS) {
            return Err(Error::InvalidConfig(format!(
                "formation id {} outside the {N_FORMATIONS} classes",
                r.formation
            )));
        }
        let (pairs, segs): (Vec<Vec<u32>>, Vec<Vec<u32>>) = rows
            .iter()
            .map(|r| vocab.encode_pair(&r.context, &r.definition, max_len))
            .unzip();
        let ctx: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| vocab.encode_single(&r.context, max_len))
            .collect();
        let (ids, mask) = pad(&pairs, device);
        let (segments, _) = pad(&segs, device);
        let (ctx_ids, ctx_mask) = pad(&ctx, device);
        let n = rows.len();
        let ints = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device);
        Ok(Self {
            ids,
            segments,
            mask,
            ctx_ids,
            ctx_mask,
            labels: ints(rows.iter().map(|r| i64::from(r.label)).collect()),
            formations: ints(rows.iter().map(|r| r.formation as i64).collect()),
        })
    }
}

/// What [`FormBert::forward`] returns.
#[derive(Debug)]
pub struct FormBertOutput {
    /// Match logits `[batch, 2]`.
    pub logits: Tensor<2>,
    /// Formation logits `[batch, 18]` when the model has a predictor.
    pub formation_logits: Option<Tensor<2>>,
}

impl FormBertConfig {
    /// Puts the heads on `bert` (pretrained or fresh).
    pub fn init(&self, bert: Bert, device: &Device) -> Result<FormBert> {
        if !(0.0..1.0).contains(&self.dropout) || self.formation_weight < 0.0 {
            return Err(Error::InvalidConfig(format!(
                "dropout {} / formation weight {}",
                self.dropout, self.formation_weight
            )));
        }
        let d = bert.embeddings.word_embeddings.weight.dims()[1];
        Ok(FormBert {
            bert,
            classifier: LinearConfig::new(d, 2).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            formation_embedding: self
                .use_formation
                .then(|| EmbeddingConfig::new(N_FORMATIONS, d).init(device)),
            formation_predictor: self.predictor.then(|| FormationPredictor {
                mlp_in: LinearConfig::new(d, d).init(device),
                mlp_out: LinearConfig::new(d, d).init(device),
                head: LinearConfig::new(d, N_FORMATIONS).init(device),
            }),
            formation_weight: self.formation_weight,
            masked_pool: self.pooling == PredictorPooling::Masked,
        })
    }
}

impl FormBert {
    /// Formation logits `[batch, 18]` from the context's embedding-layer output.
    pub fn predict_formation(
        &self,
        ctx_ids: Tensor<2, Int>,
        ctx_mask: Tensor<2, Int>,
    ) -> Option<Tensor<2>> {
        let p = self.formation_predictor.as_ref()?;
        let b = ctx_ids.dims()[0];
        let e = self.bert.embed(ctx_ids, None); // [b, s, d]
        let h = p.mlp_out.forward(relu(p.mlp_in.forward(e)));
        let pooled = if self.masked_pool {
            mean_pool(h, ctx_mask)
        } else {
            let d = h.dims()[2];
            h.mean_dim(1).reshape([b, d])
        };
        Some(p.head.forward(pooled))
    }

    /// Match logits (and formation logits) of a batch, the classifier given the formation of
    /// `source`. [`FormationSource::Predicted`] without a predictor is an error.
    pub fn forward(&self, batch: &PairBatch, source: FormationSource) -> Result<FormBertOutput> {
        let out = self.bert.forward(
            batch.ids.clone(),
            Some(batch.segments.clone()),
            Some(batch.mask.clone()),
        );
        let pooled = match out.pooler_output {
            Some(p) => p,
            None => {
                let [b, _, d] = out.last_hidden_state.dims();
                out.last_hidden_state
                    .slice(s![.., 0..1, ..])
                    .reshape([b, d])
            }
        };
        let formation_logits =
            self.predict_formation(batch.ctx_ids.clone(), batch.ctx_mask.clone());
        let mut h = self.dropout.forward(pooled);
        if let Some(emb) = &self.formation_embedding {
            let ids = match (source, &formation_logits) {
                (FormationSource::Gold, _) => batch.formations.clone(),
                (FormationSource::Predicted, Some(f)) => f.clone().argmax(1).squeeze_dim(1),
                (FormationSource::Predicted, None) => {
                    return Err(Error::InvalidConfig(
                        "predicted formations need the formation predictor".into(),
                    ));
                }
            };
            let [b, d] = h.dims();
            h = h + emb.forward(ids.reshape([b, 1])).reshape([b, d]);
        }
        Ok(FormBertOutput {
            logits: self.classifier.forward(h),
            formation_logits,
        })
    }

    /// The joint training loss `CE(match) + w · CE(formation)` (gold formations fed to the
    /// classifier); returns it with its two parts.
    pub fn loss(&self, batch: &PairBatch) -> Result<(Tensor<1>, f64, f64)> {
        let out = self.forward(batch, FormationSource::Gold)?;
        let sense = classification_loss(out.logits, batch.labels.clone());
        let sense_v = scalar(&sense)?;
        match out.formation_logits {
            Some(f) if self.formation_weight > 0.0 => {
                let form = classification_loss(f, batch.formations.clone());
                let form_v = scalar(&form)?;
                Ok((
                    sense + form.mul_scalar(self.formation_weight),
                    sense_v,
                    form_v,
                ))
            }
            _ => Ok((sense, sense_v, 0.0)),
        }
    }

    /// Match probabilities `[batch]` (softmax column 1) and predicted formations `[batch]`.
    pub fn predict(
        &self,
        batch: &PairBatch,
        source: FormationSource,
    ) -> Result<(Vec<f32>, Option<Vec<i64>>)> {
        let out = self.forward(batch, source)?;
        let p = softmax(out.logits, 1).slice(s![.., 1..2]);
        let n = p.dims()[0];
        let p = p.reshape([n]).to_f32s()?;
        let f = match out.formation_logits {
            Some(f) => Some(f.argmax(1).reshape([n]).to_i64s()?),
            None => None,
        };
        Ok((p, f))
    }
}

fn scalar(t: &Tensor<1>) -> Result<f64> {
    Ok(trainer::host::scalar(t.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plm::bert::BertConfig;

    fn rows() -> Vec<PairRow> {
        let r = |c: &str, d: &str, label: u8, formation: usize| PairRow {
            context: c.into(),
            definition: d.into(),
            label,
            formation,
        };
        vec![
            r("他今天很生气", "发怒", 1, 11),
            r("他今天很生气", "活力", 0, 11),
            r("春天的花开了", "花朵", 1, 5),
            r("花钱", "花朵", 0, 11),
        ]
    }

    fn setup(cfg: &FormBertConfig, device: &Device) -> (FormBert, CharVocab) {
        let rows = rows();
        let vocab = CharVocab::build(
            rows.iter()
                .flat_map(|r| [r.context.as_str(), r.definition.as_str()]),
            1,
            100,
        );
        device.seed(3);
        let bert = BertConfig::new(vocab.len(), 16, 1, 2, 32)
            .init(device)
            .unwrap_or_else(|e| panic!("{e}"));
        (
            cfg.init(bert, device).unwrap_or_else(|e| panic!("{e}")),
            vocab,
        )
    }

    #[test]
    fn shapes_errors_and_the_formation_embedding_changes_the_logits() {
        let _serial = testkit::device_rng_lock();
        let d = Device::flex();
        let (m, vocab) = setup(&FormBertConfig::new().with_dropout(0.0), &d);
        let rows = rows();
        let refs: Vec<&PairRow> = rows.iter().collect();
        let b = PairBatch::new(&refs, &vocab, 16, &d).unwrap_or_else(|e| panic!("{e}"));
        let out = m
            .forward(&b, FormationSource::Gold)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.logits.dims(), [4, 2]);
        assert_eq!(
            out.formation_logits.map(|f| f.dims()),
            Some([4, N_FORMATIONS])
        );
        let mut other = b.clone();
        other.formations = other.formations.add_scalar(1);
        let logits = |batch: &PairBatch| {
            let out = m
                .forward(batch, FormationSource::Gold)
                .unwrap_or_else(|e| panic!("{e}"));
            testkit::tensor_values(out.logits, &[4, 2])
        };
        let (a, c) = (logits(&b), logits(&other));
        assert!(
            testkit::max_abs_diff(&a, &c) > 1e-6,
            "another formation left the logits unchanged"
        );
        // the baseline has neither formation part
        let (base, _) = setup(
            &FormBertConfig::new()
                .with_use_formation(false)
                .with_predictor(false),
            &d,
        );
        assert!(base.forward(&b, FormationSource::Predicted).is_ok());
        let (no_pred, _) = setup(&FormBertConfig::new().with_predictor(false), &d);
        assert!(no_pred.forward(&b, FormationSource::Predicted).is_err());
        let bad = PairRow {
            formation: 18,
            ..rows[0].clone()
        };
        assert!(PairBatch::new(&[&bad], &vocab, 16, &d).is_err());
        assert!(PairBatch::new(&[], &vocab, 16, &d).is_err());
    }

    #[test]
    fn masked_pooling_ignores_padding_and_the_official_mean_does_not() {
        let _serial = testkit::device_rng_lock();
        let d = Device::flex();
        let rows = rows();
        for (pooling, same) in [
            (PredictorPooling::Masked, true),
            (PredictorPooling::AllPositions, false),
        ] {
            let (m, vocab) = setup(&FormBertConfig::new().with_pooling(pooling), &d);
            // the short context alone, and padded next to a longer one
            let alone =
                PairBatch::new(&[&rows[3]], &vocab, 16, &d).unwrap_or_else(|e| panic!("{e}"));
            let padded = PairBatch::new(&[&rows[3], &rows[0]], &vocab, 16, &d)
                .unwrap_or_else(|e| panic!("{e}"));
            let f = |b: &PairBatch| {
                let t = m
                    .predict_formation(b.ctx_ids.clone(), b.ctx_mask.clone())
                    .unwrap_or_else(|| panic!("the model has a formation predictor"));
                testkit::tensor_values(t.slice(s![0..1, ..]), &[1, N_FORMATIONS])
            };
            let (x, y) = (f(&alone), f(&padded));
            let close = testkit::max_abs_diff(&x, &y) < 1e-5;
            assert_eq!(close, same, "{pooling:?}");
        }
    }

    #[test]
    fn the_joint_loss_falls_and_formation_parameters_are_named_for_lr_groups() {
        let _serial = testkit::device_rng_lock();
        let d = Device::flex().autodiff();
        let (m, vocab) = setup(&FormBertConfig::new().with_dropout(0.0), &d);
        let paths: Vec<String> = trainer::inventory(&m).into_iter().map(|p| p.path).collect();
        let formation: Vec<&String> = paths.iter().filter(|p| p.contains("formation")).collect();
        assert_eq!(formation.len(), 1 + 6, "{formation:?}"); // embedding + 3 linears × (w, b)
        let rows = rows();
        struct T(Vec<PairRow>, CharVocab, Device);
        impl trainer::Task<FormBert> for T {
            fn loss(
                &mut self,
                m: &FormBert,
                _: &mut trainer::BatchCtx<'_>,
            ) -> trainer::Result<trainer::StepLoss> {
                let refs: Vec<&PairRow> = self.0.iter().collect();
                let b =
                    PairBatch::new(&refs, &self.1, 16, &self.2).map_err(trainer::Error::task)?;
                Ok(m.loss(&b).map_err(trainer::Error::task)?.0.into())
            }
        }
        let cfg = trainer::TrainerConfig::new(30).with_lr(3e-3);
        let out = trainer::Trainer::new(cfg, &d)
            .with_lr_scale(|p| if p.contains("formation") { 8.0 } else { 1.0 })
            .fit(m, &mut T(rows, vocab, d.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let losses: Vec<f64> = out
            .records
            .iter()
            .filter_map(|r| match r {
                trainer::Record::Train { loss, .. } => Some(*loss),
                _ => None,
            })
            .collect();
        assert!(losses[losses.len() - 1] < 0.5 * losses[0], "{losses:?}");
    }
}
