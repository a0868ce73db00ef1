//! `esft`: ESFT against FFT, LoRA and the controls on a byte-level DeepSeekMoE model.
//!
//! 1. Base model: a DeepSeekMoE LM (layer 0 dense, the others fine-grained MoE with shared
//!    experts, as the V2-Lite backbone) pretrained on general text (BBC News; the embedded
//!    text offline), or a user's checkpoint (`model_dir`: a `deepseek`, `deepseek_v2` or
//!    `deepseek_v3` folder, single-file or sharded, with a vocabulary of at least 256 since the
//!    tasks are byte-level).
//! 2. For each task: relevance scores on a sample of its training data, expert configs
//!    (ESFT-Gate p, ESFT-Token p, random experts with Token's counts, shared experts only).
//! 3. Every method (FFT, LoRA, ESFT-Gate, ESFT-Token, random experts with Token's counts, shared
//!    experts only) fine-tunes a copy of the base for the same steps on the paper's mixture:
//!    task data and general text 1:1 (`general_mix`; one forward pass over both kinds of rows).
//!    Its learning rate is chosen from a small grid (`lr_multipliers` × the method's base rate)
//!    by the answer loss on a development split carved from the task's training data, with the
//!    first seed; every seed then trains at that rate on the same training examples (the
//!    development split stays out of every run, so the first seed's run is the search's trial
//!    at the chosen rate, kept rather than redone). Per seed: task score and answer loss on the
//!    test split, general ability retention (held-out general-text loss), trainable parameters,
//!    bytes stored, training time. Scores: sentiment, topic and arithmetic by the most likely
//!    candidate answer (the two labels; the topics; the right number among three slips,
//!    `arithmetic_choices`), Chinese text by next-byte accuracy. Sentiment's and topic's labels
//!    are by default compared after centring each on its mean log-likelihood over the
//!    development prompts (`choice_readout`, [`ChoiceReadout::DevCentred`]): with the plain
//!    likelihood every method of the earlier runs gave one label to 92–100 % of the test
//!    reviews, a constant answer that no comparison can rest on, and labels of different
//!    lengths would be compared by their length. Each result keeps the plain readout's score
//!    and majority share beside it.
//! 4. Routing concentration per task, top-expert overlap between tasks (the diagonal compares
//!    two disjoint halves of one task's sample), and a p sweep for ESFT-Token (first seed).
//!
//! The claims ([`claims`]) are declared before the run and judged on paired per-seed
//! differences of the mean over tasks, with a 95 % t interval (`trainer::claims`). The seeds
//! vary the fine-tuning (data order and mixture, LoRA's initialisation, the random experts); the
//! base is pretrained once. Budget, measured here (2-core Xeon, alone): one 200-step
//! fine-tune takes 42–63 s for FFT and LoRA and 24–30 s for the expert methods, and the
//! default full size (3 tasks × 6 methods × (3 learning rates + 4 further seeds) = 126
//! fine-tunes, plus pretraining, the p sweep and the evaluations) took 80 minutes with topic,
//! arithmetic and Chinese (2026-12-08) and 97 with sentiment in topic's place (2026-12-07, a
//! slower day of the same machine type), inside the 100-minute budget of one run. Shrink
//! `finetune_steps`, `lr_multipliers` or `seeds` in a config file for a smaller machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use moe_arch::deepseek::{DeepseekHfConfig, DeepseekLm, MoeHfFields};
use moe_arch::deepseek_v2::{DeepseekV2HfConfig, DeepseekV2Lm};
use plm::checkpoint::Architecture;
use serde::{Deserialize, Serialize};
use textdata::{ByteCorpus, LmWindows};
use trainer::report::{Series, markdown_table, write_line_plot};
use trainer::{BatchCtx, Report, RunCtx, StepLoss, Task, Trainer, TrainerConfig};

use crate::lora::{Lora, LoraConfig};
use crate::model::MoeModel;
use crate::scores::{RelevanceScores, ScoreAccumulator, ScoreFunction};
use crate::select::{ExpertConfig, SelectionConfig};
use crate::tasks::{self, Batch, Example, TaskData, masked_cross_entropy, score_batch};
use crate::{Error, save_adapter};
use trainer::claims::{Claim, ClaimResult, Direction};
use trainer::host::{IntsToHost, ToHost};

/// How a choice task with its own candidate answers (sentiment's two labels) picks its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChoiceReadout {
    /// The candidate with the highest summed log-likelihood after the prompt.
    Likelihood,
    /// The candidate whose log-likelihood exceeds its own mean over the development split's
    /// prompts by the most (each label's log-likelihood centred on the same model's average
    /// for it): a prior correction in the spirit of contextual calibration (Zhao et al., 2021),
    /// estimated on held-out training prompts, never on test ones. A model that prefers one
    /// label everywhere by the same margin then answers by what the prompt adds; one that
    /// learned nothing answers near chance instead of a constant. Tasks whose candidates differ
    /// per example (arithmetic) are read out by the likelihood either way.
    DevCentred,
}

/// Share of the general corpus's documents held out (every k-th): retention is measured on them,
/// and they are the `topic` task's test articles.
const GENERAL_VALID_FRACTION: f64 = 0.1;

/// Every method the experiment knows, in the order it runs them.
pub const METHODS: [&str; 6] = [
    "fft",
    "lora",
    "esft-gate",
    "esft-token",
    "random-experts",
    "shared-only",
];

/// Configuration of the `esft` experiment.
#[derive(Config, Debug)]
pub struct EsftConfig {
    /// General-text corpus folder (BBC News); `None`: the embedded text.
    #[config(default = "None")]
    pub corpus_dir: Option<String>,
    /// `movieReviewSnippets_GroundTruth.txt`; `None`: templated reviews.
    #[config(default = "None")]
    pub movie_path: Option<String>,
    /// The tasks to run, in this order: any of `sentiment`, `topic` (BBC News topics from
    /// `corpus_dir`, which it needs; test articles are the ones the general corpus holds out),
    /// `arithmetic`, `chinese`, each at most once; the claims average over the ones run.
    /// `None` ([`EsftConfig::task_names`]): `topic`, `arithmetic`, `chinese` when `corpus_dir`
    /// is given, and `sentiment` in topic's place when it is not (offline). Topic is preferred
    /// because sentiment does not move on the default byte-level base (every method scored
    /// 0.46–0.59 against chance 0.50 in the diagnostic runs, FFT's answer loss a coin flip's).
    #[config(default = "None")]
    pub tasks: Option<Vec<String>>,
    /// Sentiment from the movie snippets keeps only sentences whose mean human rating (−4…4) is
    /// at least this far from 0 (0 keeps every non-neutral one, binary SST's rule). Measured:
    /// 2 (4,239 of 10,605 sentences) did not make the task learnable for the default byte-level
    /// base in 200 steps (every method still gave one label to 92–100 % of the test reviews).
    #[config(default = 0.0)]
    pub sentiment_min_rating: f64,
    /// How sentiment and topic pick their label ([`ChoiceReadout`]); each result also records the plain
    /// likelihood readout's score and majority share when this is `DevCentred`.
    #[config(default = "ChoiceReadout::DevCentred")]
    pub choice_readout: ChoiceReadout,
    /// fortunes-zh's `usr/share/games/fortunes`; `None`: embedded poems.
    #[config(default = "None")]
    pub fortunes_dir: Option<String>,
    /// A `deepseek`, `deepseek_v2` or `deepseek_v3` checkpoint folder (single-file or sharded,
    /// any stored float dtype; byte vocabulary) to use as the base instead of pretraining one.
    #[config(default = "None")]
    pub model_dir: Option<String>,
    /// Bytes per sequence.
    #[config(default = 128)]
    pub seq_len: usize,
    /// Sequences per batch.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Hidden size.
    #[config(default = 128)]
    pub d_model: usize,
    /// Layers (layer 0 dense).
    #[config(default = 3)]
    pub n_layers: usize,
    /// Heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Routed experts per MoE layer.
    #[config(default = 32)]
    pub n_routed: usize,
    /// Shared experts (fused).
    #[config(default = 2)]
    pub n_shared: usize,
    /// Routed experts per token.
    #[config(default = 4)]
    pub top_k: usize,
    /// Width of one expert.
    #[config(default = 32)]
    pub expert_width: usize,
    /// Width of the dense layer-0 FFN.
    #[config(default = 256)]
    pub dense_width: usize,
    /// Balance factor α1.
    #[config(default = 0.01)]
    pub aux_alpha: f64,
    /// Pretraining of the base.
    #[config(
        default = "TrainerConfig::new(600).with_lr(2e-3).with_schedule(trainer::LrSchedule::deepseek(30)).with_grad_clip(Some(trainer::GradClip::GlobalNorm(1.0)))"
    )]
    pub pretrain: TrainerConfig,
    /// The methods to run, any of [`METHODS`] (`shared-only` only on a base with shared
    /// experts); the claims compare the ones that ran, and the p sweep needs `esft-token`.
    #[config(default = "METHODS.iter().map(|m| m.to_string()).collect()")]
    pub methods: Vec<String>,
    /// Fine-tuning steps per method.
    #[config(default = 200)]
    pub finetune_steps: usize,
    /// Learning rate of FFT.
    #[config(default = 5e-4)]
    pub lr_fft: f64,
    /// Learning rate of ESFT and the expert controls. 3e-3 puts the grid (with the default
    /// `lr_multipliers`: 9e-4, 3e-3, 9e-3) around the rate the expert methods chose in 11 of 12
    /// searches when the base rate was 1e-3, the top of that grid (2026-12-07 full run).
    #[config(default = 3e-3)]
    pub lr_esft: f64,
    /// Learning rate of LoRA.
    #[config(default = 2e-3)]
    pub lr_lora: f64,
    /// LoRA settings.
    #[config(default = "LoraConfig::default()")]
    pub lora: LoraConfig,
    /// Training sequences sampled for the relevance scores.
    #[config(default = 128)]
    pub score_sequences: usize,
    /// p of ESFT-Gate.
    #[config(default = 0.1)]
    pub p_gate: f64,
    /// p of ESFT-Token.
    #[config(default = 0.2)]
    pub p_token: f64,
    /// Divide gate scores by the layer's mass before selecting.
    #[config(default = false)]
    pub normalise_gate: bool,
    /// ESFT-Token p values of the sweep.
    #[config(default = "vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.8]")]
    pub p_sweep: Vec<f64>,
    /// Task of the p sweep.
    #[config(default = "String::from(\"arithmetic\")")]
    pub sweep_task: String,
    /// Held-out examples per task.
    #[config(default = 300)]
    pub test_examples: usize,
    /// Generated arithmetic problems for training.
    #[config(default = 6000)]
    pub arithmetic_train: usize,
    /// Arithmetic is scored as a choice among the right number and this many minus one
    /// distractors made by each problem's likely slips (`tasks::arithmetic`); 0 scores it by
    /// greedy exact match, the paper's metric for math, which this small byte-level model
    /// leaves at its floor (0.02–0.03 for every method in the earlier runs).
    #[config(default = 4)]
    pub arithmetic_choices: usize,
    /// General-text validation windows for retention.
    #[config(default = 64)]
    pub retention_windows: usize,
    /// Seed of the base model's initialisation and pretraining, and of the data splits.
    #[config(default = 42)]
    pub seed: u64,
    /// Fine-tuning seeds (data order and mixture, LoRA's initialisation, the random experts).
    #[config(default = "vec![1, 2, 3, 4, 5]")]
    pub seeds: Vec<u64>,
    /// Share of every fine-tuning batch drawn from general text (windows of the general
    /// corpus's training part, every byte a target): ESFT mixes task and general alignment data
    /// 1:1; 0 trains on the task alone. The loss is the mixture of the two rows' mean losses
    /// in this proportion.
    #[config(default = 0.5)]
    pub general_mix: f64,
    /// Training examples per task held out as the development split that chooses the
    /// learning rates (never trained on in the selection runs, never in the test split).
    #[config(default = 200)]
    pub dev_examples: usize,
    /// Multipliers of each method's base rate (`lr_fft`, `lr_esft`, `lr_lora`) tried on the
    /// development split with the first seed; the lowest development answer loss wins. One
    /// entry: no search.
    #[config(default = "vec![0.3, 1.0, 3.0]")]
    pub lr_multipliers: Vec<f64>,
}

impl EsftConfig {
    /// The full size (this 2-core CPU: 97 minutes; see the module docs).
    pub fn full() -> Self {
        Self::new()
    }

    /// Seconds: a tiny model, a few steps.
    pub fn quick() -> Self {
        Self::new()
            .with_seq_len(64)
            .with_batch_size(4)
            .with_d_model(32)
            .with_n_layers(2)
            .with_n_heads(2)
            .with_n_routed(8)
            .with_n_shared(1)
            .with_top_k(2)
            .with_expert_width(16)
            .with_dense_width(64)
            .with_pretrain(TrainerConfig::new(6).with_lr(3e-3))
            .with_finetune_steps(3)
            .with_score_sequences(8)
            .with_p_sweep(vec![0.2, 0.5])
            .with_test_examples(8)
            .with_arithmetic_train(64)
            .with_retention_windows(4)
            .with_seeds(vec![1, 2])
            .with_dev_examples(8)
            .with_lr_multipliers(vec![1.0, 2.0])
    }

    /// The tasks a run does: `tasks`, or its default when `None` (see the field).
    pub fn task_names(&self) -> Vec<String> {
        match &self.tasks {
            Some(t) => t.clone(),
            None => {
                let first = if self.corpus_dir.is_some() {
                    "topic"
                } else {
                    "sentiment"
                };
                [first, "arithmetic", "chinese"]
                    .iter()
                    .map(|t| t.to_string())
                    .collect()
            }
        }
    }

    fn hf(&self) -> DeepseekHfConfig {
        DeepseekHfConfig {
            vocab_size: textdata::ByteTokenizer::VOCAB,
            hidden_size: self.d_model,
            num_hidden_layers: self.n_layers,
            num_attention_heads: self.n_heads,
            num_key_value_heads: None,
            intermediate_size: self.dense_width,
            moe: MoeHfFields {
                first_k_dense_replace: 1,
                aux_loss_alpha: Some(self.aux_alpha),
                seq_aux: Some(true),
                ..MoeHfFields::new(
                    Some(self.n_routed),
                    self.n_shared,
                    self.top_k,
                    self.expert_width,
                )
            },
            rms_norm_eps: Some(1e-6),
            rope_theta: None,
            max_position_embeddings: Some(self.seq_len.max(128)),
        }
    }
}

fn sample_batch(
    train: &[Example],
    n: usize,
    seq_len: usize,
    rng: &mut trainer::Rng,
    device: &Device,
) -> Batch {
    let ex: Vec<&Example> = (0..n).map(|_| &train[rng.below(train.len())]).collect();
    tasks::batch(&ex, seq_len, device)
}

/// Fine-tuning on a task mixed with general text: the masked answer loss of the task rows and
/// the LM loss of the general rows, mixed in their share of the batch, plus the balance loss.
struct FinetuneTask<'a> {
    data: &'a TaskData,
    /// General-text windows and how many rows of each batch they fill (0: task only).
    general: std::sync::Arc<LmWindows>,
    n_general: usize,
    batch: usize,
    seq_len: usize,
    device: Device,
}

impl FinetuneTask<'_> {
    /// One forward pass over the task rows and the general rows together (the same sequence
    /// length, so they stack into one batch): the loss is `-(log p · W).sum()` with per-target
    /// weights that give the task rows' answer bytes `1 - mix` of the mass and the general
    /// rows' bytes `mix`, the same value as two separate means mixed, at the cost of one pass.
    fn step<M: MoeModel>(&self, model: &M, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let n_task = self.batch - self.n_general;
        let b = sample_batch(
            &self.data.train,
            n_task,
            self.seq_len,
            ctx.rng,
            &self.device,
        );
        let (loss, aux) = if self.n_general == 0 {
            let out = model
                .forward_moe(b.x, Some(b.token_mask))
                .map_err(trainer::Error::task)?;
            (masked_cross_entropy(out.logits, b.y, b.w), out.aux_loss)
        } else {
            let idx: Vec<usize> = (0..self.n_general)
                .map(|_| ctx.rng.below(self.general.len()))
                .collect();
            let (gx, gy) = self
                .general
                .batch(&idx, &self.device)
                .map_err(trainer::Error::task)?;
            let mix = self.n_general as f64 / self.batch as f64;
            let answer_bytes: f64 = b.w_host.iter().map(|&v| f64::from(v)).sum();
            let task_w = b.w.mul_scalar((1.0 - mix) / answer_bytes.max(1.0));
            let general_w = Tensor::<2>::full(
                [self.n_general, self.seq_len],
                mix / (self.n_general * self.seq_len) as f64,
                &self.device,
            );
            let x = Tensor::cat(vec![b.x, gx], 0);
            let y = Tensor::cat(vec![b.y, gy], 0);
            let mask = Tensor::cat(
                vec![
                    b.token_mask,
                    Tensor::<2, Int>::ones([self.n_general, self.seq_len], &self.device),
                ],
                0,
            );
            let out = model
                .forward_moe(x, Some(mask))
                .map_err(trainer::Error::task)?;
            let w = Tensor::cat(vec![task_w, general_w], 0);
            (
                tasks::weighted_log_likelihood(out.logits, y, w).neg(),
                out.aux_loss,
            )
        };
        let aux_host: f32 = aux.clone().into_scalar();
        Ok(StepLoss {
            loss: loss + aux,
            extra: [("aux_loss".to_string(), f64::from(aux_host))].into(),
        })
    }
}

impl<M: MoeModel> Task<M> for FinetuneTask<'_> {
    fn loss(&mut self, model: &M, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        self.step(model, ctx)
    }
}

impl<M: MoeModel + burn::module::ModuleDisplay> Task<Lora<M>> for FinetuneTask<'_> {
    fn loss(&mut self, model: &Lora<M>, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        self.step(&model.merged(), ctx)
    }
}

/// What the experiment needs of a base model beyond [`MoeModel`]: writing a full copy in its
/// own HF format (FFT's checkpoint), from the config it was loaded or built with.
trait EsftBase: MoeModel + burn::module::ModuleDisplay {
    /// What saving needs besides the weights.
    type SaveConfig;
    fn save_full(&self, config: &Self::SaveConfig, dir: &Path) -> crate::Result<()>;
}

impl EsftBase for DeepseekLm {
    type SaveConfig = DeepseekHfConfig;
    fn save_full(&self, config: &DeepseekHfConfig, dir: &Path) -> crate::Result<()> {
        Ok(self.save_hf(config, dir)?)
    }
}

impl EsftBase for DeepseekV2Lm {
    /// The base folder's `config.json` text.
    type SaveConfig = String;
    fn save_full(&self, config: &String, dir: &Path) -> crate::Result<()> {
        Ok(self.save_hf(config, dir)?)
    }
}

/// The sizes the report states.
struct BaseShape {
    n_layers: usize,
    d_model: usize,
    n_shared: usize,
    expert_width: usize,
}

/// A model's result on held-out examples of a task.
#[derive(Clone, Copy, Debug)]
struct TaskEval {
    /// Task score in [0, 1].
    score: f64,
    /// Answer loss (nats/byte).
    loss: f64,
    /// Share of the examples given the most common answer (exact-match and choice tasks; for
    /// per-example choices, the most common position among them): 1 means a constant answer,
    /// which no score of a task with several answers should rest on.
    majority: Option<f64>,
    /// Score and majority share under the plain likelihood readout, where the configured
    /// readout ([`ChoiceReadout::DevCentred`]) differs from it.
    raw: Option<(f64, f64)>,
}

/// One chunk of a choice task: right answers, the gold answers' summed negative
/// log-likelihood and answer bytes, the position each example picked, and the same two counts
/// under the plain likelihood readout where an offset changed the readout.
struct ChoiceScore {
    right: usize,
    loss: f64,
    bytes: f64,
    picked: Vec<usize>,
    raw: Option<(usize, Vec<usize>)>,
}

/// Per example: each candidate's summed log-likelihood, and the gold candidate's position and
/// answer bytes.
type CandidateScores = (Vec<Vec<f64>>, Vec<(usize, f64)>);

/// Each example's summed log-likelihood of each of its candidates (`[example][position]`, one
/// pass per candidate position) and, per example, its gold candidate's position and answer
/// bytes; the gold answer must be one of the candidates.
fn candidate_log_likelihoods(
    fwd: &dyn Fn(&Batch) -> crate::Result<Tensor<3>>,
    data: &TaskData,
    chunk: &[Example],
    seq_len: usize,
    device: &Device,
) -> crate::Result<CandidateScores> {
    let cands: Vec<&[Vec<u8>]> = chunk.iter().map(|e| e.candidates(data)).collect();
    let mut ll: Vec<Vec<f64>> = cands.iter().map(|c| vec![0.0; c.len()]).collect();
    let mut gold_bytes = vec![None; chunk.len()];
    let most = cands.iter().map(|c| c.len()).max().unwrap_or(0);
    for ci in 0..most {
        let rows: Vec<usize> = (0..chunk.len()).filter(|&r| ci < cands[r].len()).collect();
        let alt: Vec<Example> = rows
            .iter()
            .map(|&r| Example {
                prompt: chunk[r].prompt.clone(),
                answer: cands[r][ci].clone(),
                choices: Vec::new(),
            })
            .collect();
        let refs: Vec<&Example> = alt.iter().collect();
        let bc = tasks::batch(&refs, seq_len, device);
        let v = tasks::row_log_likelihood(fwd(&bc)?, bc.y, bc.w).to_f32s()?;
        for (k, (&r, &v)) in rows.iter().zip(&v).enumerate() {
            ll[r][ci] = f64::from(v);
            if chunk[r].answer == cands[r][ci] {
                gold_bytes[r] = Some((
                    ci,
                    bc.w_host[k * seq_len..(k + 1) * seq_len]
                        .iter()
                        .map(|&x| f64::from(x))
                        .sum::<f64>(),
                ));
            }
        }
    }
    let gold_bytes = gold_bytes
        .into_iter()
        .enumerate()
        .map(|(r, b)| {
            b.ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "{}: an answer ({:?}) is not one of its choices",
                    data.name,
                    String::from_utf8_lossy(&chunk[r].answer)
                ))
            })
        })
        .collect::<crate::Result<Vec<(usize, f64)>>>()?;
    Ok((ll, gold_bytes))
}

/// The position of the largest of `scores` (the first on ties).
fn argmax(scores: impl Iterator<Item = f64>) -> usize {
    scores
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// Scores `chunk` by the most likely of each example's candidates after subtracting
/// `offset[position]` from each candidate's log-likelihood (`None`: the plain likelihood); the
/// gold answer is one of them, so its row gives the answer loss without another pass.
fn score_choices(
    fwd: &dyn Fn(&Batch) -> crate::Result<Tensor<3>>,
    data: &TaskData,
    chunk: &[Example],
    offset: Option<&[f64]>,
    seq_len: usize,
    device: &Device,
) -> crate::Result<ChoiceScore> {
    let (ll, gold) = candidate_log_likelihoods(fwd, data, chunk, seq_len, device)?;
    let pick = |off: Option<&[f64]>| -> Vec<usize> {
        ll.iter()
            .map(|row| {
                argmax(
                    row.iter()
                        .enumerate()
                        .map(|(ci, v)| v - off.and_then(|o| o.get(ci)).copied().unwrap_or(0.0)),
                )
            })
            .collect()
    };
    let right = |picked: &[usize]| {
        picked
            .iter()
            .zip(&gold)
            .filter(|(p, (g, _))| p == &g)
            .count()
    };
    let picked = pick(offset);
    let raw = offset.map(|_| {
        let p = pick(None);
        (right(&p), p)
    });
    Ok(ChoiceScore {
        right: right(&picked),
        loss: -ll
            .iter()
            .zip(&gold)
            .map(|(row, &(g, _))| row[g])
            .sum::<f64>(),
        bytes: gold.iter().map(|&(_, b)| b).sum(),
        picked,
        raw,
    })
}

/// The development-centred readout's offsets of a choice task (its own candidates, the same for
/// every example): each candidate's mean summed log-likelihood over `dev`'s prompts. `None`
/// for other tasks, for per-example candidates, and without development examples.
fn choice_prior(
    fwd: &dyn Fn(&Batch) -> crate::Result<Tensor<3>>,
    data: &TaskData,
    dev: &[Example],
    seq_len: usize,
    device: &Device,
) -> crate::Result<Option<Vec<f64>>> {
    if data.scoring != tasks::Scoring::Choice
        || data.choices.is_empty()
        || dev.is_empty()
        || dev.iter().any(|e| !e.choices.is_empty())
    {
        return Ok(None);
    }
    let mut sum = vec![0.0; data.choices.len()];
    for chunk in dev.chunks(32) {
        let (ll, _) = candidate_log_likelihoods(fwd, data, chunk, seq_len, device)?;
        for row in ll {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
    }
    Ok(Some(sum.iter().map(|s| s / dev.len() as f64).collect()))
}

/// The share of the most common of `answers`' counts (`None` without answers).
fn majority_share<K>(answers: &std::collections::HashMap<K, usize>) -> Option<f64> {
    let total: usize = answers.values().sum();
    (total > 0).then(|| *answers.values().max().unwrap_or(&0) as f64 / total as f64)
}

/// [`TaskEval`] of `model` on `examples` of `data`; a choice task with its own candidates
/// is read out as `readout` says, centred on `dev`'s prompts for
/// [`ChoiceReadout::DevCentred`].
#[allow(clippy::too_many_arguments)]
fn task_score<M: MoeModel>(
    model: &M,
    data: &TaskData,
    examples: &[Example],
    readout: ChoiceReadout,
    dev: &[Example],
    seq_len: usize,
    device: &Device,
) -> crate::Result<TaskEval> {
    let (mut ok, mut n) = (0, 0);
    let (mut loss, mut bytes) = (0.0, 0.0);
    let mut answers: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    let mut raw_ok = 0;
    let mut raw_answers: std::collections::HashMap<usize, usize> = Default::default();
    let fwd = |b: &Batch| -> crate::Result<Tensor<3>> {
        Ok(model
            .forward_moe(b.x.clone(), Some(b.token_mask.clone()))?
            .logits)
    };
    let prior = match readout {
        ChoiceReadout::Likelihood => None,
        ChoiceReadout::DevCentred => choice_prior(&fwd, data, dev, seq_len, device)?,
    };
    for chunk in examples.chunks(32) {
        if data.scoring == tasks::Scoring::Choice {
            let c = score_choices(&fwd, data, chunk, prior.as_deref(), seq_len, device)?;
            ok += c.right;
            n += chunk.len();
            loss += c.loss;
            bytes += c.bytes;
            for p in c.picked {
                // keyed by the candidate's position: for the task's own choices the answer
                // itself, for per-example (shuffled) choices a position bias
                *answers.entry(p.to_le_bytes().to_vec()).or_default() += 1;
            }
            if let Some((r, picked)) = c.raw {
                raw_ok += r;
                for p in picked {
                    *raw_answers.entry(p).or_default() += 1;
                }
            }
            continue;
        }
        let ex: Vec<&Example> = chunk.iter().collect();
        let b = tasks::batch(&ex, seq_len, device);
        let logits = fwd(&b)?;
        let w: f64 = b.w_host.iter().map(|&v| f64::from(v)).sum();
        let l: f32 = masked_cross_entropy(logits.clone(), b.y.clone(), b.w.clone()).into_scalar();
        loss += f64::from(l) * w;
        bytes += w;
        match data.scoring {
            tasks::Scoring::ExactMatch => {
                let [rows, s, _] = logits.dims();
                let pred = logits.clone().argmax(2).reshape([rows * s]).to_i64s()?;
                for r in 0..rows {
                    let said: Vec<u8> = (r * s..(r + 1) * s)
                        .filter(|&i| b.w_host[i] > 0.0)
                        .map(|i| pred[i] as u8)
                        .collect();
                    *answers.entry(said).or_default() += 1;
                }
                let (c, k) = score_batch(logits, &b, data.scoring)?;
                ok += c;
                n += k;
            }
            // (choice tasks are scored above)
            tasks::Scoring::NextByte | tasks::Scoring::Choice => {
                let (c, k) = score_batch(logits, &b, data.scoring)?;
                ok += c;
                n += k;
            }
        }
    }
    Ok(TaskEval {
        score: ok as f64 / n.max(1) as f64,
        loss: loss / bytes.max(1.0),
        majority: majority_share(&answers),
        raw: prior
            .is_some()
            .then(|| majority_share(&raw_answers).map(|m| (raw_ok as f64 / n.max(1) as f64, m)))
            .flatten(),
    })
}

/// Held-out general-text loss (nats/byte).
fn retention<M: MoeModel>(
    model: &M,
    valid: &LmWindows,
    n: usize,
    device: &Device,
) -> crate::Result<f64> {
    plm::llama::mean_window_loss(valid, n, device, |x| {
        Ok::<_, Error>(model.forward_moe(x, None)?.logits)
    })
}

/// Relevance scores of a task: the full sample and its two halves (for the self-overlap).
fn task_scores<M: MoeModel>(
    model: &M,
    data: &TaskData,
    cfg: &EsftConfig,
    n_routed: usize,
    device: &Device,
) -> crate::Result<[RelevanceScores; 3]> {
    let mut rng = trainer::Rng::seed_from(cfg.seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    rng.shuffle(&mut order);
    order.truncate(cfg.score_sequences.max(2));
    let (mut all, mut a, mut b) = (
        ScoreAccumulator::new(),
        ScoreAccumulator::new(),
        ScoreAccumulator::new(),
    );
    for (ci, chunk) in order.chunks(16).enumerate() {
        let ex: Vec<&Example> = chunk.iter().map(|&i| &data.train[i]).collect();
        let bt = tasks::batch(&ex, cfg.seq_len, device);
        let out = model.forward_moe(bt.x, Some(bt.token_mask.clone()))?;
        for acc in [&mut all, if ci % 2 == 0 { &mut a } else { &mut b }] {
            acc.add(
                &out.routing,
                Some(bt.token_mask.clone()),
                ex.len(),
                cfg.seq_len,
                n_routed,
            )?;
        }
    }
    Ok([all.finish(), a.finish(), b.finish()])
}

/// One fine-tuning result (one task, method and seed).
#[derive(Serialize, Debug, Clone)]
pub struct MethodResult {
    /// Task.
    pub task: String,
    /// Method.
    pub method: String,
    /// Fine-tuning seed (0 for the untuned base).
    pub seed: u64,
    /// Learning rate used (chosen on the development split).
    pub lr: f64,
    /// Task score (label choice, exact match or next-byte accuracy).
    pub score: f64,
    /// Share of test examples given the most common answer (1: a constant answer).
    pub majority_answer_share: Option<f64>,
    /// Task score and majority share under the plain likelihood readout, where the configured
    /// readout differs ([`ChoiceReadout::DevCentred`] on a task with its own labels).
    pub likelihood_readout: Option<(f64, f64)>,
    /// Held-out answer loss (nats/byte).
    pub task_loss: f64,
    /// General-text loss after fine-tuning (nats/byte; lower = better retention).
    pub general_loss: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Mean routed experts trained per MoE layer (expert methods).
    pub experts_per_layer: Option<f64>,
    /// Bytes on disk of what must be stored for this fine-tune.
    pub storage_bytes: u64,
    /// Training wall time (s).
    pub train_s: f64,
}

/// Routing concentration of a task.
#[derive(Serialize, Debug, Clone)]
pub struct Concentration {
    /// Task.
    pub task: String,
    /// Experts covering 10 / 20 / 50 % of the token-selection mass (mean over layers).
    pub token_experts: [f64; 3],
    /// Experts covering 50 % of the gate mass.
    pub gate_experts_50: f64,
    /// ESFT-Gate / ESFT-Token experts per layer at the configured p.
    pub selected: [f64; 2],
}

/// One learning rate tried on a task's development split.
#[derive(Serialize, Debug, Clone)]
pub struct LrTrial {
    /// Task.
    pub task: String,
    /// Method.
    pub method: String,
    /// Learning rate.
    pub lr: f64,
    /// Answer loss on the development split (nats/byte; the selection criterion).
    pub dev_loss: f64,
    /// Task score on the development split.
    pub dev_score: f64,
    /// Whether this rate was chosen.
    pub chosen: bool,
}

/// Everything `metrics.json` holds.
#[derive(Serialize, Debug)]
pub struct EsftMetrics {
    /// Device.
    pub device: String,
    /// Base model origin.
    pub base: String,
    /// General-text loss of the base.
    pub base_general_loss: f64,
    /// Data sources per task.
    pub sources: Vec<(String, String)>,
    /// Base scores per task.
    pub vanilla: Vec<(String, f64)>,
    /// Per task, method and seed.
    pub results: Vec<MethodResult>,
    /// The learning-rate search on the development splits (first seed).
    pub lr_search: Vec<LrTrial>,
    /// Routing concentration per task.
    pub concentration: Vec<Concentration>,
    /// `overlap[i][j]`: shared top-k experts per layer between tasks i and j (diagonal: two
    /// halves of one task's sample).
    pub overlap: Vec<Vec<f64>>,
    /// p sweep: `(p, experts per layer, score, general loss, trainable params)`.
    pub p_sweep: Vec<(f64, f64, f64, f64, usize)>,
    /// The paper's claims with their paired per-seed evidence (also in `claims.json`).
    pub claims: Vec<ClaimResult>,
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// What a fine-tune cost: parameters trained, routed experts per layer (expert methods), bytes
/// stored, training seconds.
struct Cost {
    trainable_params: usize,
    experts_per_layer: Option<f64>,
    storage_bytes: u64,
    train_s: f64,
}

/// How a fine-tuned model is evaluated: its task (name, scoring, choices), the examples it is
/// evaluated on, and the learning rate and seed it was trained with.
#[derive(Clone, Copy)]
struct FtRun<'a> {
    data: &'a TaskData,
    examples: &'a [Example],
    /// The development examples a [`ChoiceReadout::DevCentred`] readout centres on.
    dev: &'a [Example],
    lr: f64,
    seed: u64,
}

struct Runner<'c, 'p, S> {
    cfg: &'c EsftConfig,
    save: S,
    device: Device,
    eval_device: Device,
    valid: LmWindows,
    /// General-text training windows mixed into fine-tuning.
    general: std::sync::Arc<LmWindows>,
    ctx: &'c mut RunCtx<'p>,
}

impl<S> Runner<'_, '_, S> {
    fn progress(&mut self) -> impl FnMut(&trainer::Progress) + '_ {
        |p| self.ctx.report_progress(p)
    }

    fn ft_config(&self, lr: f64, seed: u64) -> TrainerConfig {
        TrainerConfig::new(self.cfg.finetune_steps)
            .with_lr(lr)
            .with_seed(seed)
            .with_grad_clip(Some(trainer::GradClip::GlobalNorm(1.0)))
    }

    fn task<'d>(&self, data: &'d TaskData) -> FinetuneTask<'d> {
        let b = self.cfg.batch_size;
        let n_general = ((b as f64 * self.cfg.general_mix).round() as usize).min(b - 1);
        FinetuneTask {
            data,
            general: self.general.clone(),
            n_general,
            batch: b,
            seq_len: self.cfg.seq_len,
            device: self.device.clone(),
        }
    }

    /// Task result on `examples` and the general-text loss.
    fn evaluate<M: MoeModel>(&self, model: &M, run: &FtRun<'_>) -> crate::Result<(TaskEval, f64)> {
        let t = task_score(
            model,
            run.data,
            run.examples,
            self.cfg.choice_readout,
            run.dev,
            self.cfg.seq_len,
            &self.eval_device,
        )?;
        Ok((
            t,
            retention(
                model,
                &self.valid,
                self.cfg.retention_windows,
                &self.eval_device,
            )?,
        ))
    }

    /// One method's fine-tuning: `lora` ([`Runner::train_lora`]), FFT (`experts` `None`) or
    /// expert-restricted, on `data`'s training examples at `(learning rate, seed)`; what must
    /// be stored goes to `out`. Returns the model to evaluate (LoRA merged) and what training
    /// it cost.
    fn train_method<M: EsftBase<SaveConfig = S>>(
        &mut self,
        base: &M,
        data: &TaskData,
        (lr, seed): (f64, u64),
        method: &str,
        experts: Option<&ExpertConfig>,
        out: &Path,
    ) -> crate::Result<(M, Cost)> {
        if method == "lora" {
            return self.train_lora(base, data, (lr, seed), out);
        }
        let tcfg = self.ft_config(lr, seed);
        let mut task = self.task(data);
        let began = Instant::now();
        let trainer = Trainer::new(tcfg, &self.device);
        let trainer = match experts {
            Some(e) => trainer.with_trainable(move |p| e.is_trainable(p)),
            None => trainer,
        };
        let outcome = trainer
            .with_progress(self.progress())
            .fit(base.clone(), &mut task)?;
        let train_s = began.elapsed().as_secs_f64();
        let model = outcome.model.valid();
        let storage_bytes = match experts {
            Some(e) => save_adapter(&model, e, out)?.bytes_on_disk,
            None => {
                model.save_full(&self.save, out)?;
                dir_size(out)
            }
        };
        let cost = Cost {
            trainable_params: outcome.trainable.numel(),
            experts_per_layer: experts.map(ExpertConfig::mean_experts_per_layer),
            storage_bytes,
            train_s,
        };
        Ok((model, cost))
    }

    /// Evaluates the model a run fine-tuned and records it with what it cost.
    fn record<M: MoeModel>(
        &self,
        model: &M,
        run: FtRun<'_>,
        method: &str,
        cost: &Cost,
    ) -> crate::Result<MethodResult> {
        let (t, general_loss) = self.evaluate(model, &run)?;
        Ok(MethodResult {
            task: run.data.name.clone(),
            method: method.to_string(),
            seed: run.seed,
            lr: run.lr,
            score: t.score,
            majority_answer_share: t.majority,
            likelihood_readout: t.raw,
            task_loss: t.loss,
            general_loss,
            trainable_params: cost.trainable_params,
            experts_per_layer: cost.experts_per_layer,
            storage_bytes: cost.storage_bytes,
            train_s: cost.train_s,
        })
    }

    fn train_lora<M: EsftBase<SaveConfig = S>>(
        &mut self,
        base: &M,
        data: &TaskData,
        (lr, seed): (f64, u64),
        out: &Path,
    ) -> crate::Result<(M, Cost)> {
        let tcfg = self.ft_config(lr, seed);
        let mut task = self.task(data);
        let began = Instant::now();
        // LoRA's A matrices are drawn from the device RNG: seed it per run.
        self.device.seed(seed);
        let lora = Lora::new(base.clone(), &self.cfg.lora, &self.device)?;
        let outcome = Trainer::new(tcfg, &self.device)
            .with_trainable(Lora::<M>::is_lora)
            .with_progress(self.progress())
            .fit(lora, &mut task)?;
        let train_s = began.elapsed().as_secs_f64();
        let lora = outcome.model.valid();
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        trainer::fs::write_atomic(&out.join("adapter.safetensors"), &lora.adapter_bytes()?)?;
        let cost = Cost {
            trainable_params: lora.num_params(),
            experts_per_layer: None,
            storage_bytes: dir_size(out),
            train_s,
        };
        Ok((lora.merged(), cost))
    }
}

fn overlap(a: &RelevanceScores, b: &RelevanceScores, k: usize) -> f64 {
    let ta = a.top_experts(ScoreFunction::Token, k);
    let tb = b.top_experts(ScoreFunction::Token, k);
    let per: Vec<f64> = ta
        .iter()
        .map(|(l, ea)| {
            let eb = tb.get(l).cloned().unwrap_or_default();
            ea.iter().filter(|e| eb.contains(e)).count() as f64
        })
        .collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
}

/// Runs the experiment into `ctx.dir`.
pub fn run(cfg: &EsftConfig, ctx: &mut RunCtx<'_>) -> crate::Result<Report> {
    if cfg.finetune_steps == 0 || cfg.top_k == 0 || cfg.top_k > cfg.n_routed {
        return Err(Error::InvalidConfig(
            "finetune_steps > 0 and 0 < top_k ≤ n_routed".into(),
        ));
    }
    if let Some(m) = cfg.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
        return Err(Error::InvalidConfig(format!(
            "unknown method '{m}' (one of {})",
            METHODS.join(", ")
        )));
    }
    if cfg.seeds.is_empty()
        || cfg.methods.is_empty()
        || cfg.lr_multipliers.is_empty()
        || !cfg.lr_multipliers.iter().all(|m| m.is_finite() && *m > 0.0)
        || !(0.0..1.0).contains(&cfg.general_mix)
        || cfg.batch_size < 2
    {
        return Err(Error::InvalidConfig(
            "seeds, methods and lr_multipliers (> 0) non-empty, general_mix in [0, 1), batch_size ≥ 2"
                .into(),
        ));
    }
    let eval_device = ctx.device.clone();
    let device = ctx.device.clone().autodiff();
    let general = ByteCorpus::load(
        cfg.corpus_dir.as_deref().map(Path::new),
        GENERAL_VALID_FRACTION,
        0,
    )?;
    let valid = LmWindows::new(general.valid.clone(), cfg.seq_len, cfg.seq_len)?;
    let general_train = LmWindows::new(general.train.clone(), cfg.seq_len, 1)?;
    let path = |s: &Option<String>| s.as_deref().map(PathBuf::from);
    let task_names = cfg.task_names();
    let mut task_data = Vec::with_capacity(task_names.len());
    for name in &task_names {
        if task_data.iter().any(|t: &TaskData| &t.name == name) {
            return Err(Error::InvalidConfig(format!(
                "task '{name}' is listed twice"
            )));
        }
        task_data.push(match name.as_str() {
            "sentiment" => tasks::sentiment(
                path(&cfg.movie_path).as_deref(),
                cfg.sentiment_min_rating,
                cfg.test_examples,
                cfg.seed,
            )?,
            "arithmetic" => tasks::arithmetic(
                cfg.arithmetic_train,
                cfg.test_examples,
                cfg.arithmetic_choices,
                cfg.seed,
            ),
            "chinese" => tasks::chinese(
                path(&cfg.fortunes_dir).as_deref(),
                cfg.test_examples,
                cfg.seed,
            )?,
            "topic" => {
                let Some(dir) = path(&cfg.corpus_dir) else {
                    return Err(Error::InvalidConfig(
                        "the topic task reads BBC News from corpus_dir: give corpus_dir".into(),
                    ));
                };
                // room for the prompt's frame and the longest topic within seq_len
                let frame = "User: Article: \nTopic?\n\nAssistant: entertainment\n".len();
                tasks::topic(
                    &dir,
                    GENERAL_VALID_FRACTION,
                    cfg.seq_len.saturating_sub(frame).max(16),
                    cfg.test_examples,
                    cfg.seed,
                )?
            }
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown task '{other}' (sentiment, topic, arithmetic, chinese)"
                )));
            }
        });
    }
    if task_data.is_empty() {
        return Err(Error::InvalidConfig("tasks must not be empty".into()));
    }

    // 1. The base model.
    let arch = match &cfg.model_dir {
        Some(dir) => Some(plm::checkpoint::Architecture::detect(Path::new(dir))?),
        None => None,
    };
    let vocab_check = |dir: &str, vocab: usize| {
        if vocab < textdata::ByteTokenizer::VOCAB {
            return Err(Error::InvalidConfig(format!(
                "{dir}: the tasks are byte-level and need a vocabulary of at least 256"
            )));
        }
        Ok(())
    };
    let data = Inputs {
        general,
        general_train,
        valid,
        task_data,
        device,
        eval_device,
    };
    match (&cfg.model_dir, arch) {
        (Some(dir), Some(Architecture::DeepseekV2 | Architecture::DeepseekV3)) => {
            let path = Path::new(dir);
            let hf: DeepseekV2HfConfig = plm::checkpoint::read_config(path)?;
            let text = std::fs::read_to_string(path.join("config.json"))
                .map_err(|e| Error::io(&path.join("config.json"), e))?;
            let m = DeepseekV2Lm::load_hf(path, &data.device)?;
            vocab_check(dir, m.embed_tokens.weight.dims()[0])?;
            let shape = BaseShape {
                n_layers: hf.num_hidden_layers,
                d_model: hf.hidden_size,
                n_shared: hf.moe.n_shared_experts.unwrap_or(0),
                expert_width: hf.moe.moe_intermediate_size,
            };
            run_with(cfg, ctx, m, dir.clone(), text, shape, data)
        }
        (Some(dir), Some(Architecture::Deepseek)) => {
            let (hf, _) = plm::layers::read_hf_folder::<DeepseekHfConfig>(Path::new(dir))?;
            let m = DeepseekLm::load_hf(Path::new(dir), &data.device)?;
            vocab_check(dir, m.embed_tokens.weight.dims()[0])?;
            let shape = v1_shape(&hf);
            run_with(cfg, ctx, m, dir.clone(), hf, shape, data)
        }
        (Some(dir), Some(other)) => Err(Error::InvalidConfig(format!(
            "{dir}: esft needs a deepseek, deepseek_v2 or deepseek_v3 checkpoint, not {other}"
        ))),
        _ => {
            let device = &data.device;
            device.seed(cfg.seed);
            let model = cfg.hf().init(device)?;
            let mut task = moe_arch::experiment::LmTask::new(
                data.general_train.clone(),
                cfg.batch_size,
                device.clone(),
            );
            let outcome = Trainer::new(cfg.pretrain.clone().with_seed(cfg.seed), device)
                .with_progress(|p| ctx.report_progress(p))
                .fit(model, &mut task)?;
            outcome
                .model
                .valid()
                .save_hf(&cfg.hf(), &ctx.path("base"))?;
            let name = format!(
                "pretrained here on {} ({} steps)",
                data.general.name, cfg.pretrain.max_steps
            );
            let shape = v1_shape(&cfg.hf());
            run_with(cfg, ctx, outcome.model, name, cfg.hf(), shape, data)
        }
    }
}

fn v1_shape(hf: &DeepseekHfConfig) -> BaseShape {
    BaseShape {
        n_layers: hf.num_hidden_layers,
        d_model: hf.hidden_size,
        n_shared: hf.moe.n_shared_experts.unwrap_or(0),
        expert_width: hf.moe.moe_intermediate_size,
    }
}

/// Data and devices shared by every base model.
struct Inputs {
    general: ByteCorpus,
    /// Windows of the general corpus's training part (pretraining, the fine-tuning mixture).
    general_train: LmWindows,
    valid: LmWindows,
    task_data: Vec<TaskData>,
    device: Device,
    eval_device: Device,
}

/// Stages 2–4 on a loaded base model.
fn run_with<M: EsftBase>(
    cfg: &EsftConfig,
    ctx: &mut RunCtx<'_>,
    base: M,
    base_name: String,
    save: M::SaveConfig,
    shape: BaseShape,
    inputs: Inputs,
) -> crate::Result<Report> {
    let Inputs {
        general,
        general_train,
        valid,
        task_data,
        device,
        eval_device,
    } = inputs;
    let base_eval = base.valid();
    let layers = base_eval.moe_layers();
    let (n_routed, top_k) = match layers.first() {
        Some(l) if layers.iter().all(|m| m.n_experts == l.n_experts) => (l.n_experts, l.top_k),
        _ => {
            return Err(Error::InvalidConfig(format!(
                "{base_name}: needs MoE layers with one expert count"
            )));
        }
    };
    let mut runner = Runner {
        cfg,
        save,
        device: device.clone(),
        eval_device: eval_device.clone(),
        valid,
        general: std::sync::Arc::new(general_train),
        ctx,
    };
    let base_general_loss = retention(
        &base_eval,
        &runner.valid,
        cfg.retention_windows,
        &eval_device,
    )?;
    let mut out = Collected::default();
    let mut rng = trainer::Rng::seed_from(cfg.seed ^ 0xabcd);
    for data in &task_data {
        run_task(
            &mut runner,
            &base,
            &base_eval,
            data,
            &layers,
            base_general_loss,
            &mut rng,
            &mut out,
        )?;
    }
    let ctx = runner.ctx;
    let overlap_m = overlap_matrix(&out.all_scores, top_k);
    let claims = evaluate_claims(&out.results, &cfg.seeds)?;
    trainer::claims::write_claims(&ctx.path("claims.json"), &claims)?;
    let metrics = EsftMetrics {
        device: ctx.device_name.clone(),
        base: base_name,
        base_general_loss,
        sources: task_data
            .iter()
            .map(|d| (d.name.clone(), d.source.clone()))
            .collect(),
        vanilla: out.vanilla,
        results: out.results,
        lr_search: out.lr_search,
        concentration: out.concentration,
        overlap: overlap_m,
        p_sweep: out.sweep,
        claims,
    };
    let shape_info = ShapeInfo {
        general: general.name.clone(),
        shape,
        n_routed,
        top_k,
    };
    let (table, body) = write_report(cfg, ctx, &metrics, &out.all_scores, &task_data, &shape_info)?;
    Ok(ctx.finish(cfg, &metrics, "esft", table, body)?)
}

/// What the tasks produce, gathered.
#[derive(Default)]
struct Collected {
    results: Vec<MethodResult>,
    lr_search: Vec<LrTrial>,
    vanilla: Vec<(String, f64)>,
    concentration: Vec<Concentration>,
    /// Per task: the scores, and the scores of two disjoint halves of its sample.
    all_scores: Vec<(RelevanceScores, RelevanceScores, RelevanceScores)>,
    sweep: Vec<(f64, f64, f64, f64, usize)>,
}

/// One task: the base's score, the relevance scores and expert configs (written beside the
/// results), every method, and the p sweep on the sweep task.
#[allow(clippy::too_many_arguments)]
fn run_task<M: EsftBase>(
    runner: &mut Runner<'_, '_, M::SaveConfig>,
    base: &M,
    base_eval: &M,
    data: &TaskData,
    layers: &[crate::MoeLayerInfo],
    base_general_loss: f64,
    rng: &mut trainer::Rng,
    out: &mut Collected,
) -> crate::Result<()> {
    let cfg = runner.cfg;
    let n_routed = layers.first().map_or(0, |l| l.n_experts);
    let tdir = runner.ctx.path(&format!("tasks/{}", data.name));
    std::fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, e))?;
    // Every fine-tune trains on the training split without the development examples, so the
    // first seed's run at the chosen rate is the search's trial at that rate: kept, not redone.
    let (dev_data, dev) = data.split_dev(cfg.dev_examples);
    let t0 = task_score(
        base_eval,
        data,
        &data.test,
        cfg.choice_readout,
        &dev,
        cfg.seq_len,
        &runner.eval_device,
    )?;
    out.vanilla.push((data.name.clone(), t0.score));
    out.results.push(MethodResult {
        task: data.name.clone(),
        method: "vanilla".into(),
        seed: 0,
        lr: 0.0,
        score: t0.score,
        majority_answer_share: t0.majority,
        likelihood_readout: t0.raw,
        task_loss: t0.loss,
        general_loss: base_general_loss,
        trainable_params: 0,
        experts_per_layer: None,
        storage_bytes: 0,
        train_s: 0.0,
    });

    // 2. Scores and expert configs.
    let [scores, half_a, half_b] =
        task_scores(base_eval, data, cfg, n_routed, &runner.eval_device)?;
    trainer::fs::write_atomic(
        &tdir.join("summary.json"),
        scores.to_summary_json().as_bytes(),
    )?;
    let gate = ExpertConfig::select(
        &scores,
        &SelectionConfig {
            top_p: cfg.p_gate,
            normalise_gate: cfg.normalise_gate,
            ..SelectionConfig::gate()
        },
    )?;
    let token = ExpertConfig::select(
        &scores,
        &SelectionConfig {
            top_p: cfg.p_token,
            ..SelectionConfig::token()
        },
    )?;
    let shared = ExpertConfig::shared_only(layers);
    for (name, c) in [("gate", &gate), ("token", &token)] {
        c.write(&tdir.join(format!("expert_config_{name}.json")))?;
    }
    out.concentration.push(Concentration {
        task: data.name.clone(),
        token_experts: [0.1, 0.2, 0.5].map(|f| scores.experts_to_cover(ScoreFunction::Token, f)),
        gate_experts_50: scores.experts_to_cover(ScoreFunction::Gate, 0.5),
        selected: [
            gate.mean_experts_per_layer(),
            token.mean_experts_per_layer(),
        ],
    });
    out.all_scores.push((scores.clone(), half_a, half_b));

    // 3. The methods: (name, trained experts — None for FFT and LoRA —, base learning rate).
    let has_shared = layers.iter().any(|l| l.has_shared);
    let first = cfg.seeds[0];
    let methods: Vec<(&str, f64)> = METHODS
        .iter()
        .filter(|&&m| cfg.methods.iter().any(|c| c == m) && (m != "shared-only" || has_shared))
        .map(|&m| match m {
            "fft" => (m, cfg.lr_fft),
            "lora" => (m, cfg.lr_lora),
            _ => (m, cfg.lr_esft),
        })
        .collect();
    let random_salt = rng.next_u64();
    let experts_of = |method: &str, seed: u64| -> crate::Result<Option<ExpertConfig>> {
        Ok(match method {
            "esft-gate" => Some(gate.clone()),
            "esft-token" => Some(token.clone()),
            "random-experts" => {
                Some(token.random_like(layers, &mut trainer::Rng::seed_from(seed ^ random_salt))?)
            }
            "shared-only" => Some(shared.clone()),
            _ => None,
        })
    };
    let dir_of = |seed: u64, method: &str| {
        // the first seed's artefacts where a user looks for them, the others beside
        let sdir = if seed == first {
            tdir.clone()
        } else {
            tdir.join(format!("seed-{seed}"))
        };
        sdir.join(match method {
            "random-experts" => "random",
            m => m,
        })
    };
    let test_run = |lr: f64, seed: u64| FtRun {
        data: &dev_data,
        examples: &data.test,
        dev: &dev,
        lr,
        seed,
    };
    if let Some(c) = experts_of("random-experts", first)? {
        c.write(&tdir.join("expert_config_random.json"))?;
    }
    let mut chosen = std::collections::HashMap::new();
    for &(method, base_lr) in &methods {
        if cfg.lr_multipliers.len() == 1 {
            chosen.insert(method, base_lr * cfg.lr_multipliers[0]);
            continue;
        }
        let experts = experts_of(method, first)?;
        let mut trials = Vec::new();
        let mut best: Option<(f64, M, Cost, PathBuf, usize)> = None;
        for (i, &m) in cfg.lr_multipliers.iter().enumerate() {
            let lr = base_lr * m;
            let scratch = tdir.join(format!("lr-search/{method}-{lr}"));
            let (model, cost) = runner.train_method(
                base,
                &dev_data,
                (lr, first),
                method,
                experts.as_ref(),
                &scratch,
            )?;
            let on_dev = FtRun {
                data: &dev_data,
                examples: &dev,
                dev: &dev,
                lr,
                seed: first,
            };
            let r = runner.record(&model, on_dev, method, &cost)?;
            trials.push(LrTrial {
                task: data.name.clone(),
                method: method.to_string(),
                lr,
                dev_loss: r.task_loss,
                dev_score: r.score,
                chosen: false,
            });
            if best
                .as_ref()
                .is_none_or(|b| r.task_loss.total_cmp(&b.0).is_lt())
            {
                best = Some((r.task_loss, model, cost, scratch, i));
            }
        }
        let Some((_, model, cost, scratch, i)) = best else {
            continue;
        };
        trials[i].chosen = true;
        let lr = trials[i].lr;
        chosen.insert(method, lr);
        out.lr_search.extend(trials);
        let dir = dir_of(first, method);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::rename(&scratch, &dir).map_err(|e| Error::io(&dir, e))?;
        out.results
            .push(runner.record(&model, test_run(lr, first), method, &cost)?);
    }
    let search = tdir.join("lr-search");
    if search.exists() {
        std::fs::remove_dir_all(&search).map_err(|e| Error::io(&search, e))?;
    }
    for &seed in &cfg.seeds {
        if seed == first && cfg.lr_multipliers.len() > 1 {
            continue;
        }
        for &(method, _) in &methods {
            let experts = experts_of(method, seed)?;
            let lr = chosen[method];
            let (model, cost) = runner.train_method(
                base,
                &dev_data,
                (lr, seed),
                method,
                experts.as_ref(),
                &dir_of(seed, method),
            )?;
            out.results
                .push(runner.record(&model, test_run(lr, seed), method, &cost)?);
        }
    }

    // 4. The p sweep (first seed, ESFT-Token's rate).
    if data.name == cfg.sweep_task {
        for &p in &cfg.p_sweep {
            let c = ExpertConfig::select(
                &scores,
                &SelectionConfig {
                    top_p: p,
                    ..SelectionConfig::token()
                },
            )?;
            if c.experts.values().all(Vec::is_empty) {
                continue;
            }
            let Some(&lr) = chosen.get("esft-token") else {
                break;
            };
            let (model, cost) = runner.train_method(
                base,
                &dev_data,
                (lr, first),
                "esft-token",
                Some(&c),
                &tdir.join(format!("sweep-{p}")),
            )?;
            let r = runner.record(
                &model,
                test_run(lr, first),
                &format!("esft-token p={p}"),
                &cost,
            )?;
            out.sweep.push((
                p,
                c.mean_experts_per_layer(),
                r.score,
                r.general_loss,
                r.trainable_params,
            ));
        }
    }
    Ok(())
}

/// `[i][j]`: shared top-k experts per layer between tasks i and j; the diagonal compares two
/// disjoint halves of one task's sample.
fn overlap_matrix(
    all_scores: &[(RelevanceScores, RelevanceScores, RelevanceScores)],
    top_k: usize,
) -> Vec<Vec<f64>> {
    let n = all_scores.len();
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    if i == j {
                        overlap(&all_scores[i].1, &all_scores[i].2, top_k)
                    } else {
                        overlap(&all_scores[i].0, &all_scores[j].0, top_k)
                    }
                })
                .collect()
        })
        .collect()
}

/// The metrics of the claims.
const SCORE: &str = "task score, mean over tasks";
const TASK_LOSS: &str = "task answer loss (nats/byte), mean over tasks";
const GENERAL_LOSS: &str = "general-text loss (nats/byte), mean over tasks";
const TRAIN_S: &str = "training time (s), mean over tasks";
const STORAGE: &str = "bytes stored, mean over tasks";

/// The paper's claims (ESFT, EMNLP 2024), declared before the run, each judged on the paired
/// per-seed differences of the mean over tasks.
pub fn claims() -> Vec<Claim> {
    vec![
        Claim::new(
            "esft-token-above-lora",
            SCORE,
            "esft-token",
            "lora",
            Direction::Greater,
            "ESFT-Token reaches a higher task score than LoRA (Table 2)",
        ),
        Claim::new(
            "esft-gate-above-lora",
            SCORE,
            "esft-gate",
            "lora",
            Direction::Greater,
            "ESFT-Gate reaches a higher task score than LoRA (Table 2)",
        ),
        Claim::new(
            "esft-token-keeps-general-ability",
            GENERAL_LOSS,
            "esft-token",
            "fft",
            Direction::Less,
            "ESFT-Token loses less general ability than FFT (Table 2, general tasks)",
        ),
        Claim::new(
            "esft-gate-keeps-general-ability",
            GENERAL_LOSS,
            "esft-gate",
            "fft",
            Direction::Less,
            "ESFT-Gate loses less general ability than FFT (Table 2, general tasks)",
        ),
        Claim::new(
            "selected-experts-beat-random",
            TASK_LOSS,
            "esft-token",
            "random-experts",
            Direction::Less,
            "the experts ESFT selects learn the task better than as many random experts (§6)",
        ),
        Claim::new(
            "esft-trains-faster",
            TRAIN_S,
            "esft-token",
            "fft",
            Direction::Less,
            "ESFT trains faster than FFT (§5, efficiency)",
        ),
        Claim::new(
            "esft-stores-less",
            STORAGE,
            "esft-token",
            "fft",
            Direction::Less,
            "ESFT stores far fewer bytes than FFT (§5, efficiency)",
        ),
    ]
}

/// Per seed (in `seeds`' order), the mean over tasks of `method`'s `metric`; `None` when the
/// method did not run with every seed.
fn per_seed(
    results: &[MethodResult],
    seeds: &[u64],
    method: &str,
    metric: &str,
) -> Option<Vec<f64>> {
    seeds
        .iter()
        .map(|&seed| {
            let v: Vec<f64> = results
                .iter()
                .filter(|r| r.method == method && r.seed == seed)
                .map(|r| match metric {
                    SCORE => r.score,
                    TASK_LOSS => r.task_loss,
                    GENERAL_LOSS => r.general_loss,
                    TRAIN_S => r.train_s,
                    _ => r.storage_bytes as f64,
                })
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        })
        .collect()
}

/// Evaluates the [`claims`] whose methods ran.
fn evaluate_claims(results: &[MethodResult], seeds: &[u64]) -> crate::Result<Vec<ClaimResult>> {
    Ok(trainer::claims::evaluate_available(
        &claims(),
        |m, metric| per_seed(results, seeds, m, metric),
    )?)
}

/// The base model's shape, for the report.
struct ShapeInfo {
    general: String,
    shape: BaseShape,
    n_routed: usize,
    top_k: usize,
}

/// The plots, the README-ready table and the report body.
fn write_report(
    cfg: &EsftConfig,
    ctx: &RunCtx<'_>,
    m: &EsftMetrics,
    all_scores: &[(RelevanceScores, RelevanceScores, RelevanceScores)],
    task_data: &[TaskData],
    info: &ShapeInfo,
) -> crate::Result<(String, String)> {
    let (results, concentration, sweep, claims) =
        (&m.results, &m.concentration, &m.p_sweep, &m.claims);
    let (overlap_m, base_name, base_general_loss) = (&m.overlap, &m.base, m.base_general_loss);
    let (shape, n_routed, top_k) = (&info.shape, info.n_routed, info.top_k);
    let conc_series: Vec<Series> = all_scores
        .iter()
        .zip(task_data)
        .map(|((s, _, _), d)| {
            // Mean over layers of the sorted, normalised token scores (ESFT Fig. 2).
            let mut acc = vec![0.0; n_routed];
            for l in &s.layers {
                let mut v = l.token.clone();
                v.sort_by(|a, b| b.total_cmp(a));
                for (i, x) in v.iter().enumerate() {
                    acc[i] += x / s.layers.len() as f64;
                }
            }
            Series::new(
                d.name.clone(),
                acc.iter()
                    .enumerate()
                    .map(|(i, &v)| ((i + 1) as f64, v))
                    .collect(),
            )
        })
        .collect();
    write_line_plot(
        &ctx.path("concentration.svg"),
        "token-selection share of the k-th most used expert (mean over layers)",
        "expert rank",
        "share of routed selections",
        &conc_series,
    )?;
    if !sweep.is_empty() {
        let s1 = Series::new("task score", sweep.iter().map(|r| (r.0, r.2)).collect());
        write_line_plot(
            &ctx.path("p_sweep.svg"),
            &format!("ESFT-Token p sweep on {}", cfg.sweep_task),
            "p",
            "task score",
            &[s1],
        )?;
    }

    // One row per task and method: mean ± half the 95 % t interval over the seeds.
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in results.iter() {
        let k = (r.task.clone(), r.method.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let ms = |v: &[f64], prec: usize| trainer::claims::format_mean_interval(v, 1.0, prec);
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|(task, method)| {
            let rs: Vec<&MethodResult> = results
                .iter()
                .filter(|r| &r.task == task && &r.method == method)
                .collect();
            let col =
                |f: &dyn Fn(&MethodResult) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
            let majority = col(&|r| r.majority_answer_share.unwrap_or(f64::NAN));
            vec![
                task.clone(),
                method.clone(),
                ms(&col(&|r| r.score), 3),
                ms(&col(&|r| r.task_loss), 4),
                ms(&col(&|r| r.general_loss), 4),
                if majority.iter().all(|m| m.is_finite()) {
                    ms(&majority, 2)
                } else {
                    "–".into()
                },
                if rs.iter().all(|r| r.likelihood_readout.is_some()) {
                    let raw = |i: usize| {
                        col(&|r| r.likelihood_readout.map_or(f64::NAN, |p| [p.0, p.1][i]))
                    };
                    format!("{} / {}", ms(&raw(0), 3), ms(&raw(1), 2))
                } else {
                    "–".into()
                },
                rs[0].trainable_params.to_string(),
                rs[0]
                    .experts_per_layer
                    .map(|e| format!("{e:.1}"))
                    .unwrap_or_default(),
                rs[0].storage_bytes.to_string(),
                ms(&col(&|r| r.train_s), 1),
                if rs[0].lr > 0.0 {
                    format!("{:.0e}", rs[0].lr)
                } else {
                    "–".into()
                },
            ]
        })
        .collect();
    let table = markdown_table(
        &[
            "task",
            "method",
            "score",
            "task loss",
            "general loss",
            "majority answer",
            "likelihood readout (score / majority)",
            "trainable",
            "experts/layer",
            "storage bytes",
            "train s",
            "lr",
        ],
        &rows,
    );
    let lr_rows: Vec<Vec<String>> = m
        .lr_search
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                t.method.clone(),
                format!("{:.0e}", t.lr),
                format!("{:.4}", t.dev_loss),
                format!("{:.3}", t.dev_score),
                if t.chosen {
                    "chosen".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let conc_rows: Vec<Vec<String>> = concentration
        .iter()
        .map(|c| {
            vec![
                c.task.clone(),
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    c.token_experts[0], c.token_experts[1], c.token_experts[2]
                ),
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    0.1 * n_routed as f64,
                    0.2 * n_routed as f64,
                    0.5 * n_routed as f64
                ),
                format!("{:.1}", c.gate_experts_50),
                format!("{:.1} / {:.1}", c.selected[0], c.selected[1]),
            ]
        })
        .collect();
    let mut ov_header = vec!["top-k overlap".to_string()];
    ov_header.extend(task_data.iter().map(|d| d.name.clone()));
    let ov_rows: Vec<Vec<String>> = overlap_m
        .iter()
        .zip(task_data)
        .map(|(row, d)| {
            std::iter::once(d.name.clone())
                .chain(row.iter().map(|v| format!("{v:.2}")))
                .collect()
        })
        .collect();
    let ov_header_ref: Vec<&str> = ov_header.iter().map(String::as_str).collect();
    let sweep_rows: Vec<Vec<String>> = sweep
        .iter()
        .map(|r| {
            vec![
                format!("{}", r.0),
                format!("{:.1}", r.1),
                format!("{:.3}", r.2),
                format!("{:.4}", r.3),
                r.4.to_string(),
            ]
        })
        .collect();
    let body = format!(
        "Base: {base_name}; general loss {base_general_loss:.4} nats/byte on held-out {}. Model: {} layers (the first `first_k_dense_replace` dense), d_model {}, {} shared + {} routed experts of width {}, top-{}. Each method: {} steps of {} × {} bytes, a share {} of the rows general text; seeds {:?} (the table: mean ± half the 95 % t interval over seeds; majority answer: the share of test examples given the most common answer, or for per-example choices the most common position). Scores: {} (sentiment, topic), {} (arithmetic), next-byte accuracy (chinese). Data: {}.\n\n## Claims (paired per-seed differences A − B of the means over tasks; `claims.json`)\n\n{}\n## Learning rates (development split, first seed; lowest answer loss chosen)\n\n{}\n## Routing concentration\n\nRouted experts covering 10 / 20 / 50 % of the token-selection mass (mean over MoE layers) against a uniform router, experts covering 50 % of the gate mass, and the experts selected per layer (Gate p={} / Token p={}).\n\n{}\n![concentration](concentration.svg)\n\n## Top-{} expert overlap between tasks\n\nShared experts per layer among each task's top-{} by token score; the diagonal compares two disjoint halves of the same task's sample.\n\n{}\n## p sweep (ESFT-Token, {})\n\n{}\n",
        info.general,
        shape.n_layers,
        shape.d_model,
        shape.n_shared,
        n_routed,
        shape.expert_width,
        top_k,
        cfg.finetune_steps,
        cfg.batch_size,
        cfg.seq_len,
        cfg.general_mix,
        cfg.seeds,
        match cfg.choice_readout {
            ChoiceReadout::Likelihood => "the more likely label",
            ChoiceReadout::DevCentred =>
                "the label whose log-likelihood most exceeds its mean over the development prompts (the plain likelihood readout in its own column)",
        },
        if cfg.arithmetic_choices >= 2 {
            format!(
                "the more likely of the right number and {} slips",
                cfg.arithmetic_choices - 1
            )
        } else {
            "exact match of the greedy answer".to_string()
        },
        task_data
            .iter()
            .map(|d| format!(
                "{} — {} ({} train / {} test)",
                d.name,
                d.source,
                d.train.len(),
                d.test.len()
            ))
            .collect::<Vec<_>>()
            .join("; "),
        trainer::claims::claims_table(claims),
        markdown_table(
            &["task", "method", "lr", "dev loss", "dev score", ""],
            &lr_rows
        ),
        cfg.p_gate,
        cfg.p_token,
        markdown_table(
            &[
                "task",
                "token 10/20/50 %",
                "uniform",
                "gate 50 %",
                "selected gate / token"
            ],
            &conc_rows
        ),
        top_k,
        top_k,
        markdown_table(&ov_header_ref, &ov_rows),
        cfg.sweep_task,
        markdown_table(
            &["p", "experts/layer", "score", "general loss", "trainable"],
            &sweep_rows
        ),
    );
    Ok((table, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tasks_put_topic_first_only_with_a_corpus() {
        let offline = EsftConfig::new();
        assert_eq!(offline.task_names(), ["sentiment", "arithmetic", "chinese"]);
        let with_corpus = EsftConfig::new().with_corpus_dir(Some("bbc".into()));
        assert_eq!(with_corpus.task_names(), ["topic", "arithmetic", "chinese"]);
        // a list given is used as it is
        let given = with_corpus.with_tasks(Some(vec!["sentiment".into()]));
        assert_eq!(given.task_names(), ["sentiment"]);
    }

    /// With a model that prefers "positive" everywhere but more after a `+`, the likelihood
    /// readout is constant and the development-centred one answers by the `+`; the gold loss
    /// does not depend on the readout, and tasks with per-example candidates get no prior.
    #[test]
    fn the_dev_centred_readout_answers_by_what_the_prompt_adds() {
        let device = Device::flex();
        let fwd = |b: &Batch| -> crate::Result<Tensor<3>> {
            let [rows, s] = b.x.dims();
            let x = b.x.clone().to_i64s()?;
            let mut l = vec![0f32; rows * s * 256];
            for r in 0..rows {
                let plus = x[r * s..(r + 1) * s].contains(&i64::from(b'+'));
                for t in 0..s {
                    let at = (r * s + t) * 256;
                    l[at + usize::from(b'p')] = if plus { 3.0 } else { 2.0 };
                    l[at + usize::from(b'n')] = 1.0;
                }
            }
            Ok(Tensor::<1>::from_floats(l.as_slice(), &device).reshape([rows, s, 256]))
        };
        let data = TaskData {
            name: "sentiment".into(),
            source: "test".into(),
            train: Vec::new(),
            test: Vec::new(),
            scoring: tasks::Scoring::Choice,
            choices: ["positive", "negative"]
                .iter()
                .map(|l| tasks::chat("", l).answer)
                .collect(),
        };
        let test: Vec<Example> = [
            ("good +", "positive"),
            ("bad -", "negative"),
            ("fine +", "positive"),
            ("awful -", "negative"),
        ]
        .iter()
        .map(|(c, a)| tasks::chat(c, a))
        .collect();
        let dev = vec![
            tasks::chat("a +", "positive"),
            tasks::chat("b -", "negative"),
        ];
        let plain = score_choices(&fwd, &data, &test, None, 64, &device).unwrap();
        assert_eq!(plain.picked, vec![0; 4]);
        assert_eq!(plain.right, 2);
        assert!(plain.raw.is_none());
        let prior = choice_prior(&fwd, &data, &dev, 64, &device)
            .unwrap()
            .unwrap();
        // log p(positive) − log p(negative) is the 'p' − 'n' logit gap: 2 after '+', 1 else
        assert!((prior[0] - prior[1] - 1.5).abs() < 1e-4, "{prior:?}");
        let centred = score_choices(&fwd, &data, &test, Some(&prior), 64, &device).unwrap();
        assert_eq!(centred.picked, vec![0, 1, 0, 1]);
        assert_eq!(centred.right, 4);
        assert_eq!(centred.raw, Some((2, vec![0; 4])));
        assert_eq!(centred.loss, plain.loss);
        assert_eq!(centred.bytes, plain.bytes);
        assert!(
            choice_prior(&fwd, &data, &[], 64, &device)
                .unwrap()
                .is_none()
        );
        let arithmetic = tasks::arithmetic(16, 4, 4, 1);
        assert!(
            choice_prior(&fwd, &arithmetic, &arithmetic.test, 64, &device)
                .unwrap()
                .is_none()
        );
        // an answer outside the labels is a typed error, not a wrong score
        let odd = [tasks::chat("x", "neutral")];
        assert!(matches!(
            score_choices(&fwd, &data, &odd, Some(&prior), 64, &device),
            Err(Error::InvalidConfig(_))
        ));
    }

    /// The fused step (one pass over task and general rows) gives the loss of the two
    /// separate passes mixed in proportion, balance loss included.
    #[test]
    fn the_fused_mixture_step_equals_two_separate_passes_mixed() {
        let _guard = testkit::device_rng_lock();
        let device = Device::flex();
        device.seed(7);
        let cfg = EsftConfig::quick();
        let model = cfg.hf().init(&device).unwrap();
        let data = tasks::arithmetic(32, 4, 0, 1);
        let corpus = ByteCorpus::load(None, 0.1, 0).unwrap();
        let general = std::sync::Arc::new(LmWindows::new(corpus.train, cfg.seq_len, 1).unwrap());
        let task = FinetuneTask {
            data: &data,
            general: general.clone(),
            n_general: 3,
            batch: 8,
            seq_len: cfg.seq_len,
            device: device.clone(),
        };
        let mut rng = trainer::Rng::seed_from(3);
        let mut ctx = BatchCtx {
            step: 0,
            micro: 0,
            rng: &mut rng,
        };
        let fused: f32 = task.step(&model, &mut ctx).unwrap().loss.into_scalar();

        // the same draws, two passes
        let mut rng = trainer::Rng::seed_from(3);
        let b = sample_batch(&data.train, 5, cfg.seq_len, &mut rng, &device);
        let idx: Vec<usize> = (0..3).map(|_| rng.below(general.len())).collect();
        let (gx, gy) = general.batch(&idx, &device).unwrap();
        let t = model.forward_moe(b.x, Some(b.token_mask)).unwrap();
        let g = model.forward_moe(gx, None).unwrap();
        let mix = 3.0 / 8.0;
        let task_loss: f32 = masked_cross_entropy(t.logits, b.y, b.w).into_scalar();
        let general_loss: f32 = plm::llama::cross_entropy(g.logits, gy).into_scalar();
        let aux: f32 = (t.aux_loss * 5.0 + g.aux_loss * 3.0)
            .div_scalar(8.0)
            .into_scalar();
        let separate = (1.0 - mix) * task_loss + mix * general_loss + aux;
        assert!(
            (fused - separate).abs() < 1e-4 * separate.abs().max(1.0),
            "fused {fused} vs separate {separate}"
        );
        // and the mixture weights matter: task and general losses differ
        assert!((task_loss - general_loss).abs() > 1e-3);
    }
}
