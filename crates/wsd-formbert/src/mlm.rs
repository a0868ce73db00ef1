//! Masked-LM pretraining of a small character-level Chinese BERT (no Chinese BERT is on the
//! registries, so the encoder is pretrained here on fortunes-zh and the Tang/Song poems).
//!
//! BERT's recipe: 15 % of the non-special tokens of a sequence are chosen (at least one); of
//! those, 80 % become `[MASK]`, 10 % a random character, 10 % stay; the loss is the cross-entropy
//! of the chosen positions only. The head is BERT's transform (dense, GELU, LayerNorm) and an
//! untied output layer. Sequences are random windows of `seq_len − 2` characters of one passage
//! (continued by the next passages when it is shorter, [`MlmConfig::pack`]), framed by `[CLS]`
//! and `[SEP]`. Fine-tuning should not use positions beyond `seq_len`: their embeddings are never
//! trained here (the experiment refuses such a configuration).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, log_softmax};
use plm::bert::{Bert, BertConfig, classification_loss};
use trainer::{BatchCtx, Metrics, Rng, StepLoss, Task};

use crate::chartok::{CLS, CharVocab, MASK, N_SPECIAL, PAD, SEP};
use crate::data::Instance;
use crate::{Error, Result};
use trainer::host::ToHost;

/// BERT's MLM head.
#[derive(Module, Debug)]
pub struct MlmHead {
    /// Transform.
    pub dense: Linear,
    /// Its LayerNorm.
    pub norm: LayerNorm,
    /// Hidden → vocabulary.
    pub decoder: Linear,
}

/// A BERT encoder with its MLM head.
#[derive(Module, Debug)]
pub struct CharBertMlm {
    /// The encoder (what fine-tuning keeps).
    pub bert: Bert,
    /// The pretraining head.
    pub head: MlmHead,
}

impl CharBertMlm {
    /// A fresh encoder of `config` with its head.
    pub fn new(config: &BertConfig, device: &Device) -> Result<Self> {
        let bert = config
            .init(device)
            .map_err(|e| Error::InvalidConfig(format!("encoder: {e}")))?;
        let d = config.d_model;
        Ok(Self {
            bert,
            head: MlmHead {
                dense: LinearConfig::new(d, d).init(device),
                norm: LayerNormConfig::new(d)
                    .with_epsilon(config.layer_norm_eps)
                    .init(device),
                decoder: LinearConfig::new(d, config.vocab_size).init(device),
            },
        })
    }

    /// Vocabulary logits `[batch, seq, vocab]`.
    pub fn logits(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<3> {
        let h = self.bert.forward(ids, None, Some(mask)).last_hidden_state;
        let h = self.head.norm.forward(gelu(self.head.dense.forward(h)));
        self.head.decoder.forward(h)
    }
}

/// MLM settings.
#[derive(Config, Debug)]
pub struct MlmConfig {
    /// Share of tokens chosen. Default 0.15.
    #[config(default = 0.15)]
    pub mask_prob: f64,
    /// Tokens per sequence, `[CLS]` and `[SEP]` included. Default 64.
    #[config(default = 64)]
    pub seq_len: usize,
    /// Sequences per step. Default 32.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Fill a sequence that one passage leaves short with the next passages (no separator), so
    /// every position up to `seq_len` is trained (most fortunes are shorter than 64 characters;
    /// a position never seen in pretraining keeps its random embedding). Default true.
    #[config(default = true)]
    pub pack: bool,
}

/// Masks `ids` (content tokens only, no special token inside) in BERT's way: returns the input
/// and the targets (`-1` where nothing is predicted). At least one position is chosen.
pub fn mask_tokens(
    ids: &[u32],
    vocab_size: usize,
    mask_prob: f64,
    rng: &mut Rng,
) -> (Vec<u32>, Vec<i64>) {
    let mut input = ids.to_vec();
    let mut target = vec![-1i64; ids.len()];
    if ids.is_empty() {
        return (input, target);
    }
    let mut chosen: Vec<usize> = (0..ids.len())
        .filter(|_| rng.next_f64() < mask_prob)
        .collect();
    if chosen.is_empty() {
        chosen.push(rng.below(ids.len()));
    }
    let n_chars = vocab_size.saturating_sub(N_SPECIAL as usize).max(1);
    for i in chosen {
        target[i] = i64::from(ids[i]);
        let r = rng.next_f64();
        if r < 0.8 {
            input[i] = MASK;
        } else if r < 0.9 {
            input[i] = N_SPECIAL + rng.below(n_chars) as u32;
        }
    }
    (input, target)
}

/// One masked batch: ids and mask `[batch, seq]`, flat positions of the targets and the targets.
#[derive(Clone, Debug)]
pub struct MlmBatch {
    /// Inputs.
    pub ids: Tensor<2, Int>,
    /// 1 = real token.
    pub mask: Tensor<2, Int>,
    /// `row · seq + column` of every predicted position.
    pub positions: Tensor<1, Int>,
    /// The original token there.
    pub targets: Tensor<1, Int>,
}

impl MlmBatch {
    /// Frames and pads masked sequences (`(input, target)` of [`mask_tokens`]).
    pub fn new(items: &[(Vec<u32>, Vec<i64>)], device: &Device) -> Result<Self> {
        let s = items.iter().map(|(x, _)| x.len() + 2).max().unwrap_or(2);
        let b = items.len();
        let mut ids = vec![i64::from(PAD); b * s];
        let mut mask = vec![0i64; b * s];
        let (mut pos, mut tgt) = (Vec::new(), Vec::new());
        for (r, (x, t)) in items.iter().enumerate() {
            let row = std::iter::once(CLS)
                .chain(x.iter().copied())
                .chain(std::iter::once(SEP));
            for (j, v) in row.enumerate() {
                ids[r * s + j] = i64::from(v);
                mask[r * s + j] = 1;
            }
            for (j, &v) in t.iter().enumerate().filter(|(_, v)| **v >= 0) {
                pos.push((r * s + j + 1) as i64);
                tgt.push(v);
            }
        }
        if pos.is_empty() {
            return Err(Error::InvalidConfig("a masked batch with no target".into()));
        }
        let n = pos.len();
        Ok(Self {
            ids: Tensor::from_data(TensorData::new(ids, [b, s]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, s]), device),
            positions: Tensor::from_data(TensorData::new(pos, [n]), device),
            targets: Tensor::from_data(TensorData::new(tgt, [n]), device),
        })
    }
}

impl CharBertMlm {
    /// Logits `[targets, vocab]` at the predicted positions of `batch`.
    pub fn target_logits(&self, batch: &MlmBatch) -> Tensor<2> {
        let logits = self.logits(batch.ids.clone(), batch.mask.clone());
        let [b, s, v] = logits.dims();
        logits
            .reshape([b * s, v])
            .select(0, batch.positions.clone())
    }
}

/// Token ids of one probe input and the (position, character) pairs it scores.
type ProbeRow = (Vec<u32>, Vec<(usize, u32)>);

/// The masked-LM's own answer to a pseudo-word instance: every occurrence of the surface form in
/// the context becomes `[MASK]`s (one per character of a candidate word) and each candidate is
/// scored by the summed log-probability of its characters there (`[CLS] context [SEP]`, cut to
/// `max_len`; masks cut off are not scored). Returns the share of instances whose real word
/// scores highest. This reads the encoder's knowledge directly, without a definition or any
/// fine-tuning: it says how recoverable the senses are for this encoder (the pseudo-word's real
/// words are what the definitions stand for).
pub fn probe_pseudo_words(
    m: &CharBertMlm,
    instances: &[Instance],
    vocab: &CharVocab,
    max_len: usize,
    device: &Device,
) -> Result<f64> {
    if instances.is_empty() {
        return Err(Error::InvalidConfig("no instances to probe".into()));
    }
    // One row per (instance, candidate): ids, then (position, character) pairs to score.
    let mut rows: Vec<ProbeRow> = Vec::new();
    for inst in instances {
        let parts: Vec<&str> = inst.context.split(inst.surface.as_str()).collect();
        for sense in &inst.senses {
            let word = vocab.encode(&sense.word);
            let mut ids = vec![CLS];
            let mut targets = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    for &c in &word {
                        targets.push((ids.len(), c));
                        ids.push(MASK);
                    }
                }
                ids.extend(vocab.encode(part));
            }
            ids.truncate(max_len.saturating_sub(1).max(1));
            targets.retain(|&(p, _)| p < ids.len());
            ids.push(SEP);
            rows.push((ids, targets));
        }
    }
    let mut scores = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(32) {
        let b = chunk.len();
        let tokens: Vec<Vec<u32>> = chunk.iter().map(|r| r.0.clone()).collect();
        let (ids, mask) = crate::model::pad(&tokens, device);
        let s = ids.dims()[1];
        let (mut flat, mut chars, mut owner) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (_, t)) in chunk.iter().enumerate() {
            for &(p, c) in t {
                flat.push((i * s + p) as i64);
                chars.push(i64::from(c));
                owner.push(i);
            }
        }
        let mut row_scores = vec![0.0f64; b];
        if !flat.is_empty() {
            let n = flat.len();
            let logits = m.logits(ids, mask);
            let v = logits.dims()[2];
            let at = logits
                .reshape([b * s, v])
                .select(0, Tensor::from_data(TensorData::new(flat, [n]), device));
            let lp = log_softmax(at, 1)
                .gather(1, Tensor::from_data(TensorData::new(chars, [n, 1]), device))
                .reshape([n])
                .to_f32s()?;
            for (o, x) in owner.into_iter().zip(lp) {
                row_scores[o] += f64::from(x);
            }
        }
        scores.extend(row_scores);
    }
    crate::data::instance_accuracy(instances, &scores)
}

/// MLM pretraining as a trainer task over tokenised passages.
pub struct MlmTask {
    /// Passages as character ids (no special tokens).
    pub passages: Vec<Vec<u32>>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Settings.
    pub config: MlmConfig,
    /// Where tensors go (the autodiff device).
    pub device: Device,
    /// Fixed held-out masked sequences for [`Task::evaluate`].
    pub valid: Vec<(Vec<u32>, Vec<i64>)>,
}

impl MlmTask {
    /// A random window of at most `seq_len − 2` characters of a random passage; a shorter
    /// passage is followed by the next ones when [`MlmConfig::pack`] is on.
    pub fn window(&self, rng: &mut Rng) -> Vec<u32> {
        let i = rng.below(self.passages.len());
        let p = &self.passages[i];
        let w = self.config.seq_len.saturating_sub(2).max(1);
        if p.len() <= w {
            let mut out = p.clone();
            let mut j = i;
            while self.config.pack && out.len() < w {
                j = (j + 1) % self.passages.len();
                if j == i {
                    break;
                }
                out.extend(&self.passages[j]);
            }
            out.truncate(w);
            return out;
        }
        let start = rng.below(p.len() - w + 1);
        p[start..start + w].to_vec()
    }

    /// Draws `n` fixed validation sequences from `passages` with `seed`.
    pub fn with_valid(mut self, passages: &[Vec<u32>], n: usize, seed: u64) -> Self {
        let mut rng = Rng::seed_from(seed);
        let keep = std::mem::replace(&mut self.passages, passages.to_vec());
        self.valid = (0..n)
            .map(|_| {
                let w = self.window(&mut rng);
                mask_tokens(&w, self.vocab_size, self.config.mask_prob, &mut rng)
            })
            .collect();
        self.passages = keep;
        self
    }
}

impl Task<CharBertMlm> for MlmTask {
    fn loss(&mut self, m: &CharBertMlm, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        if self.passages.iter().all(Vec::is_empty) {
            return Err(Error::InvalidConfig("no text to pretrain on".into()).into());
        }
        let items: Vec<(Vec<u32>, Vec<i64>)> = (0..self.config.batch_size)
            .map(|_| {
                let w = self.window(ctx.rng);
                mask_tokens(&w, self.vocab_size, self.config.mask_prob, ctx.rng)
            })
            .collect();
        let b = MlmBatch::new(&items, &self.device)?;
        Ok(classification_loss(m.target_logits(&b), b.targets).into())
    }

    fn evaluate(&mut self, m: &CharBertMlm, _step: usize) -> trainer::Result<Metrics> {
        if self.valid.is_empty() {
            return Ok(Metrics::new());
        }
        let m = m.clone().valid();
        let device = m.bert.embeddings.word_embeddings.weight.device();
        let (mut right, mut total, mut loss) = (0usize, 0usize, 0.0f64);
        for chunk in self.valid.chunks(64) {
            let b = MlmBatch::new(chunk, &device)?;
            let logits = m.target_logits(&b);
            let n = b.targets.dims()[0];
            let l: f32 = classification_loss(logits.clone(), b.targets.clone()).into_scalar();
            loss += f64::from(l) * n as f64;
            let pred = logits.argmax(1).reshape([n]);
            let hits: i64 = pred.equal(b.targets).int().sum().into_scalar();
            right += hits as usize;
            total += n;
        }
        Ok([
            (
                "mlm_accuracy".to_string(),
                right as f64 / total.max(1) as f64,
            ),
            ("mlm_valid_loss".to_string(), loss / total.max(1) as f64),
        ]
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_follows_bert_and_always_chooses_a_position() {
        let mut rng = Rng::seed_from(1);
        let ids: Vec<u32> = (0..20_000).map(|i| N_SPECIAL + (i % 50)).collect();
        let (input, target) = mask_tokens(&ids, 55, 0.15, &mut rng);
        let chosen: Vec<usize> = (0..ids.len()).filter(|&i| target[i] >= 0).collect();
        let share = chosen.len() as f64 / ids.len() as f64;
        assert!((share - 0.15).abs() < 0.01, "{share}");
        let masked =
            chosen.iter().filter(|&&i| input[i] == MASK).count() as f64 / chosen.len() as f64;
        assert!((masked - 0.8).abs() < 0.03, "{masked}");
        assert!(chosen.iter().all(|&i| target[i] == i64::from(ids[i])));
        assert!(
            (0..ids.len())
                .filter(|i| target[*i] < 0)
                .all(|i| input[i] == ids[i])
        );
        assert!(input.iter().all(|&t| t == MASK || t >= N_SPECIAL));
        let (_, t) = mask_tokens(&ids[..3], 55, 0.0, &mut rng);
        assert_eq!(t.iter().filter(|&&v| v >= 0).count(), 1);
    }

    #[test]
    fn pretraining_learns_a_repetitive_text() {
        let _serial = testkit::device_rng_lock();
        let d = Device::flex().autodiff();
        d.seed(2);
        // "abcdefgh" repeated: every masked character is predictable from its neighbours
        let text = "abcdefgh".repeat(50);
        let chars = CharVocab::build([text.as_str()], 1, 100);
        let vocab = chars.len();
        assert_eq!(vocab, 5 + 8);
        let passage = chars.encode(&text);
        let cfg = BertConfig::new(vocab, 32, 2, 2, 64);
        let m = CharBertMlm::new(&cfg, &d).unwrap_or_else(|e| panic!("{e}"));
        let mut task = MlmTask {
            passages: vec![passage.clone()],
            vocab_size: vocab,
            config: MlmConfig::new().with_seq_len(24).with_batch_size(16),
            device: d.clone(),
            valid: Vec::new(),
        }
        .with_valid(&[passage], 32, 9);
        let before = task.evaluate(&m, 0).unwrap_or_else(|e| panic!("{e}"));
        let out = trainer::Trainer::new(trainer::TrainerConfig::new(600).with_lr(2e-3), &d)
            .fit(m, &mut task)
            .unwrap_or_else(|e| panic!("{e}"));
        let after = task
            .evaluate(&out.model, 150)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(after["mlm_accuracy"] > 0.9, "{before:?} -> {after:?}");
        // The probe puts the right word back in a pseudo-word's place, whichever it is.
        let sense = |w: &str| crate::data::Sense {
            word: w.into(),
            code: String::new(),
            definition: String::new(),
            formation: 0,
        };
        let inst = |context: &str, gold: usize| Instance {
            surface: "〈cd|fg〉".into(),
            context: context.into(),
            senses: vec![sense("cd"), sense("fg")],
            gold,
            source: String::new(),
        };
        // Every place of `cd` and of `fg` in three periods of the text.
        let text3 = "abcdefgh".repeat(3);
        let probe: Vec<Instance> = (0..text3.len() - 1)
            .filter_map(|p| {
                let gold = match &text3[p..p + 2] {
                    "cd" => 0,
                    "fg" => 1,
                    _ => return None,
                };
                Some(inst(
                    &format!("{}〈cd|fg〉{}", &text3[..p], &text3[p + 2..]),
                    gold,
                ))
            })
            .collect();
        assert_eq!(probe.len(), 6);
        let m = out.model.valid();
        let acc = probe_pseudo_words(&m, &probe, &chars, 32, &Device::flex())
            .unwrap_or_else(|e| panic!("{e}"));
        // Chance is 1/2; the model predicts single characters at > 90 %.
        assert!(acc >= 5.0 / 6.0, "{acc}");
        assert!(probe_pseudo_words(&m, &[], &chars, 32, &Device::flex()).is_err());
    }

    #[test]
    fn packing_fills_every_position() {
        let short: Vec<Vec<u32>> = (0..10).map(|i| vec![N_SPECIAL + i; 5]).collect();
        let task = |pack| MlmTask {
            passages: short.clone(),
            vocab_size: 20,
            config: MlmConfig::new().with_seq_len(14).with_pack(pack),
            device: Device::flex(),
            valid: Vec::new(),
        };
        let mut rng = Rng::seed_from(3);
        for _ in 0..20 {
            let w = task(true).window(&mut rng);
            assert_eq!(w.len(), 12);
            // the passage, then the next ones in order
            assert_eq!(
                w[5],
                if w[0] == N_SPECIAL + 9 {
                    N_SPECIAL
                } else {
                    w[0] + 1
                }
            );
            assert_eq!(task(false).window(&mut rng).len(), 5);
        }
        // Less text than a sequence: everything once, no repeats.
        let one = MlmTask {
            passages: short[..2].to_vec(),
            ..task(true)
        };
        assert_eq!(one.window(&mut rng).len(), 10);
    }
}
