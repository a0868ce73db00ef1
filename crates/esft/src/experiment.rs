//! `esft`: ESFT against FFT, LoRA and the controls on a byte-level DeepSeekMoE model.
//!
//! 1. Base model: a DeepSeekMoE LM (layer 0 dense, the others fine-grained MoE with shared
//!    experts, as the V2-Lite backbone) pretrained on general text (BBC News; the embedded
//!    text offline), or a user's checkpoint (`model_dir`: a `deepseek`, `deepseek_v2` or
//!    `deepseek_v3` folder, single-file or sharded, with a vocabulary of at least 256 since the
//!    tasks are byte-level).
//! 2. For each task: relevance scores on a sample of its training data, expert configs
//!    (ESFT-Gate p, ESFT-Token p, random experts with Token's counts, shared experts only).
//! 3. Every method fine-tunes a copy of the base for the same steps: task score, general
//!    ability retention (held-out general-text loss), trainable parameters, adapter size on
//!    disk, training time.
//! 4. Routing concentration per task, top-expert overlap between tasks (the diagonal compares
//!    two disjoint halves of one task's sample), and a p sweep for ESFT-Token.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use moe_arch::deepseek::{DeepseekHfConfig, DeepseekLm, MoeHfFields};
use moe_arch::deepseek_v2::{DeepseekV2HfConfig, DeepseekV2Lm};
use plm::checkpoint::Architecture;
use serde::Serialize;
use textdata::{ByteCorpus, LmWindows};
use trainer::report::{Series, markdown_table, write_line_plot};
use trainer::{BatchCtx, Report, RunCtx, StepLoss, Task, Trainer, TrainerConfig};

use crate::lora::{Lora, LoraConfig};
use crate::model::MoeModel;
use crate::scores::{RelevanceScores, ScoreAccumulator, ScoreFunction};
use crate::select::{ExpertConfig, SelectionConfig};
use crate::tasks::{self, Batch, Example, TaskData, masked_cross_entropy, score_batch};
use crate::{Error, save_adapter};

/// Configuration of the `esft` experiment.
#[derive(Config, Debug)]
pub struct EsftConfig {
    /// General-text corpus folder (BBC News); `None`: the embedded text.
    #[config(default = "None")]
    pub corpus_dir: Option<String>,
    /// `movieReviewSnippets_GroundTruth.txt`; `None`: templated reviews.
    #[config(default = "None")]
    pub movie_path: Option<String>,
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
    /// Fine-tuning steps per method.
    #[config(default = 200)]
    pub finetune_steps: usize,
    /// Learning rate of FFT.
    #[config(default = 5e-4)]
    pub lr_fft: f64,
    /// Learning rate of ESFT and the expert controls.
    #[config(default = 1e-3)]
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
    /// General-text validation windows for retention.
    #[config(default = 64)]
    pub retention_windows: usize,
    /// Seed (base init, data order, random experts).
    #[config(default = 42)]
    pub seed: u64,
}

impl EsftConfig {
    /// The full size (CPU: about a quarter of an hour).
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

/// Fine-tuning on a task: masked answer loss + balance loss.
struct FinetuneTask<'a> {
    data: &'a TaskData,
    batch: usize,
    seq_len: usize,
    device: Device,
}

impl FinetuneTask<'_> {
    fn step<M: MoeModel>(&self, model: &M, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let b = sample_batch(
            &self.data.train,
            self.batch,
            self.seq_len,
            ctx.rng,
            &self.device,
        );
        let out = model
            .forward_moe(b.x, Some(b.token_mask))
            .map_err(trainer::Error::task)?;
        let aux: f32 = out.aux_loss.clone().into_scalar();
        Ok(StepLoss {
            loss: masked_cross_entropy(out.logits, b.y, b.w) + out.aux_loss,
            extra: [("aux_loss".to_string(), f64::from(aux))].into(),
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

/// Task score in [0, 1] and the answer loss (nats/byte) on the held-out examples.
fn task_score<M: MoeModel>(
    model: &M,
    data: &TaskData,
    seq_len: usize,
    device: &Device,
) -> crate::Result<(f64, f64)> {
    let (mut ok, mut n) = (0, 0);
    let (mut loss, mut bytes) = (0.0, 0.0);
    for chunk in data.test.chunks(32) {
        let ex: Vec<&Example> = chunk.iter().collect();
        let b = tasks::batch(&ex, seq_len, device);
        let logits = model
            .forward_moe(b.x.clone(), Some(b.token_mask.clone()))?
            .logits;
        let w: f64 = b.w_host.iter().map(|&v| f64::from(v)).sum();
        let l: f32 = masked_cross_entropy(logits.clone(), b.y.clone(), b.w.clone()).into_scalar();
        loss += f64::from(l) * w;
        bytes += w;
        let (c, k) = score_batch(logits, &b, data.scoring)?;
        ok += c;
        n += k;
    }
    Ok((ok as f64 / n.max(1) as f64, loss / bytes.max(1.0)))
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

/// One fine-tuning result.
#[derive(Serialize, Debug, Clone)]
pub struct MethodResult {
    /// Task.
    pub task: String,
    /// Method.
    pub method: String,
    /// Task score (exact match or next-byte accuracy).
    pub score: f64,
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
    /// Per task and method.
    pub results: Vec<MethodResult>,
    /// Routing concentration per task.
    pub concentration: Vec<Concentration>,
    /// `overlap[i][j]`: shared top-k experts per layer between tasks i and j (diagonal: two
    /// halves of one task's sample).
    pub overlap: Vec<Vec<f64>>,
    /// p sweep: `(p, experts per layer, score, general loss, trainable params)`.
    pub p_sweep: Vec<(f64, f64, f64, f64, usize)>,
    /// Directions of the paper's claims, as measured.
    pub claims: Vec<(String, bool)>,
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

struct Runner<'c, 'p, S> {
    cfg: &'c EsftConfig,
    save: S,
    device: Device,
    eval_device: Device,
    valid: LmWindows,
    ctx: &'c mut RunCtx<'p>,
}

impl<S> Runner<'_, '_, S> {
    fn progress(&mut self) -> impl FnMut(&trainer::Progress) + '_ {
        |p| self.ctx.report_progress(p)
    }

    fn ft_config(&self, steps: usize, lr: f64) -> TrainerConfig {
        TrainerConfig::new(steps)
            .with_lr(lr)
            .with_seed(self.cfg.seed)
            .with_grad_clip(Some(trainer::GradClip::GlobalNorm(1.0)))
    }

    fn evaluate<M: MoeModel>(&self, model: &M, data: &TaskData) -> crate::Result<(f64, f64, f64)> {
        let (score, loss) = task_score(model, data, self.cfg.seq_len, &self.eval_device)?;
        Ok((
            score,
            loss,
            retention(
                model,
                &self.valid,
                self.cfg.retention_windows,
                &self.eval_device,
            )?,
        ))
    }

    /// FFT or expert-restricted fine-tuning.
    fn train_experts<M: EsftBase<SaveConfig = S>>(
        &mut self,
        base: &M,
        data: &TaskData,
        method: &str,
        experts: Option<&ExpertConfig>,
        out: &Path,
    ) -> crate::Result<MethodResult> {
        let lr = if experts.is_some() {
            self.cfg.lr_esft
        } else {
            self.cfg.lr_fft
        };
        let tcfg = self.ft_config(self.cfg.finetune_steps, lr);
        let mut task = FinetuneTask {
            data,
            batch: self.cfg.batch_size,
            seq_len: self.cfg.seq_len,
            device: self.device.clone(),
        };
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
        let (score, task_loss, general_loss) = self.evaluate(&model, data)?;
        Ok(MethodResult {
            task: data.name.clone(),
            method: method.to_string(),
            score,
            task_loss,
            general_loss,
            trainable_params: outcome.trainable.numel(),
            experts_per_layer: experts.map(ExpertConfig::mean_experts_per_layer),
            storage_bytes,
            train_s,
        })
    }

    fn train_lora<M: EsftBase<SaveConfig = S>>(
        &mut self,
        base: &M,
        data: &TaskData,
        out: &Path,
    ) -> crate::Result<MethodResult> {
        let tcfg = self.ft_config(self.cfg.finetune_steps, self.cfg.lr_lora);
        let mut task = FinetuneTask {
            data,
            batch: self.cfg.batch_size,
            seq_len: self.cfg.seq_len,
            device: self.device.clone(),
        };
        let began = Instant::now();
        let lora = Lora::new(base.clone(), &self.cfg.lora, &self.device)?;
        let outcome = Trainer::new(tcfg, &self.device)
            .with_trainable(Lora::<M>::is_lora)
            .with_progress(self.progress())
            .fit(lora, &mut task)?;
        let train_s = began.elapsed().as_secs_f64();
        let lora = outcome.model.valid();
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        trainer::fs::write_atomic(&out.join("adapter.safetensors"), &lora.adapter_bytes()?)?;
        let model = lora.merged();
        let (score, task_loss, general_loss) = self.evaluate(&model, data)?;
        Ok(MethodResult {
            task: data.name.clone(),
            method: "lora".into(),
            score,
            task_loss,
            general_loss,
            trainable_params: lora.num_params(),
            experts_per_layer: None,
            storage_bytes: dir_size(out),
            train_s,
        })
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
    let eval_device = ctx.device.clone();
    let device = ctx.device.clone().autodiff();
    let general = ByteCorpus::load(cfg.corpus_dir.as_deref().map(Path::new), 0.1, 0)?;
    let valid = LmWindows::new(general.valid.clone(), cfg.seq_len, cfg.seq_len)?;
    let path = |s: &Option<String>| s.as_deref().map(PathBuf::from);
    let task_data = vec![
        tasks::sentiment(
            path(&cfg.movie_path).as_deref(),
            cfg.test_examples,
            cfg.seed,
        )?,
        tasks::arithmetic(cfg.arithmetic_train, cfg.test_examples, cfg.seed),
        tasks::chinese(
            path(&cfg.fortunes_dir).as_deref(),
            cfg.test_examples,
            cfg.seed,
        )?,
    ];

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
                LmWindows::new(data.general.train.clone(), cfg.seq_len, 1)?,
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
    let claims = claims(&out.results);
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
    let (score0, loss0) = task_score(base_eval, data, cfg.seq_len, &runner.eval_device)?;
    out.vanilla.push((data.name.clone(), score0));
    out.results.push(MethodResult {
        task: data.name.clone(),
        method: "vanilla".into(),
        score: score0,
        task_loss: loss0,
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
    let random = token.random_like(layers, rng)?;
    let shared = ExpertConfig::shared_only(layers);
    for (name, c) in [("gate", &gate), ("token", &token), ("random", &random)] {
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

    // 3. The methods.
    out.results
        .push(runner.train_experts(base, data, "fft", None, &tdir.join("fft"))?);
    out.results
        .push(runner.train_lora(base, data, &tdir.join("lora"))?);
    for (name, experts, dir) in [
        ("esft-gate", &gate, "esft-gate"),
        ("esft-token", &token, "esft-token"),
        ("random-experts", &random, "random"),
    ] {
        out.results
            .push(runner.train_experts(base, data, name, Some(experts), &tdir.join(dir))?);
    }
    if layers.iter().any(|l| l.has_shared) {
        out.results.push(runner.train_experts(
            base,
            data,
            "shared-only",
            Some(&shared),
            &tdir.join("shared-only"),
        )?);
    }

    // 4. The p sweep.
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
            let r = runner.train_experts(
                base,
                data,
                &format!("esft-token p={p}"),
                Some(&c),
                &tdir.join(format!("sweep-{p}")),
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

/// The paper's claims, checked in direction on the means over tasks.
fn claims(results: &[MethodResult]) -> Vec<(String, bool)> {
    let mean_of = |m: &str, f: &dyn Fn(&MethodResult) -> f64| {
        let v: Vec<f64> = results.iter().filter(|r| r.method == m).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let score = |m: &str| mean_of(m, &|r| r.score);
    let gl = |m: &str| mean_of(m, &|r| r.general_loss);
    let tl = |m: &str| mean_of(m, &|r| r.task_loss);
    let stor = |m: &str| mean_of(m, &|r| r.storage_bytes as f64);
    let time = |m: &str| mean_of(m, &|r| r.train_s);
    let esft_score = (score("esft-gate") + score("esft-token")) / 2.0;
    let esft_loss = (tl("esft-gate") + tl("esft-token")) / 2.0;
    vec![
        (
            format!(
                "ESFT ≈ FFT on the task score (mean {:.3} vs {:.3}, within 0.05 or above)",
                esft_score,
                score("fft")
            ),
            esft_score >= score("fft") - 0.05,
        ),
        (
            format!(
                "ESFT ≈ FFT on the task loss (mean {:.4} vs {:.4}, within 5 % or below)",
                esft_loss,
                tl("fft")
            ),
            esft_loss <= 1.05 * tl("fft"),
        ),
        (
            format!(
                "ESFT retains general ability better than FFT (general loss {:.4}/{:.4} vs {:.4})",
                gl("esft-gate"),
                gl("esft-token"),
                gl("fft")
            ),
            gl("esft-gate") < gl("fft") && gl("esft-token") < gl("fft"),
        ),
        (
            format!(
                "ESFT adapters are far smaller than FFT checkpoints ({:.0} / {:.0} vs {:.0} bytes)",
                stor("esft-gate"),
                stor("esft-token"),
                stor("fft")
            ),
            stor("esft-token") < 0.5 * stor("fft"),
        ),
        (
            format!(
                "ESFT trains faster than FFT ({:.1} / {:.1} vs {:.1} s)",
                time("esft-gate"),
                time("esft-token"),
                time("fft")
            ),
            time("esft-token") < time("fft"),
        ),
        (
            format!(
                "selected experts beat random experts (task loss {:.4} vs {:.4})",
                tl("esft-token"),
                tl("random-experts")
            ),
            tl("esft-token") < tl("random-experts"),
        ),
    ]
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

    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.task.clone(),
                r.method.clone(),
                format!("{:.3}", r.score),
                format!("{:.4}", r.task_loss),
                format!("{:.4}", r.general_loss),
                r.trainable_params.to_string(),
                r.experts_per_layer
                    .map(|e| format!("{e:.1}"))
                    .unwrap_or_default(),
                r.storage_bytes.to_string(),
                format!("{:.2}", r.train_s),
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
            "trainable",
            "experts/layer",
            "storage bytes",
            "train s",
        ],
        &rows,
    );
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
    let claim_rows: Vec<Vec<String>> = claims
        .iter()
        .map(|(c, ok)| {
            vec![
                c.clone(),
                if *ok {
                    "holds".into()
                } else {
                    "does not hold".into()
                },
            ]
        })
        .collect();
    let body = format!(
        "Base: {base_name}; general loss {base_general_loss:.4} nats/byte on held-out {}. Model: {} layers (the first `first_k_dense_replace` dense), d_model {}, {} shared + {} routed experts of width {}, top-{}. Each method: {} steps of {} × {} bytes. Scores: exact match of the greedy answer (sentiment, arithmetic), next-byte accuracy (chinese). Data: {}.\n\n## Claims (direction)\n\n{}\n## Routing concentration\n\nRouted experts covering 10 / 20 / 50 % of the token-selection mass (mean over MoE layers) against a uniform router, experts covering 50 % of the gate mass, and the experts selected per layer (Gate p={} / Token p={}).\n\n{}\n![concentration](concentration.svg)\n\n## Top-{} expert overlap between tasks\n\nShared experts per layer among each task's top-{} by token score; the diagonal compares two disjoint halves of the same task's sample.\n\n{}\n## p sweep (ESFT-Token, {})\n\n{}\n",
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
        markdown_table(&["claim", "here"], &claim_rows),
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
