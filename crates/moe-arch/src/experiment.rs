//! `moe-compare`: the baselines of DeepSeekMoE's Table 1 (Dense, Hash Layer, Switch, GShard)
//! against DeepSeekMoE, at the paper's activated parameters and equal training tokens, on
//! byte-level BBC News (§4.2); the shared-expert ablation (§4.4); and §4.5's two tests of
//! specialisation: the trained DeepSeekMoE with its shared expert switched off and one more
//! routed expert activated, and the redundancy curve (validation loss as each token's top routed
//! experts are disabled) of every learned-routing model.
//!
//! With `w` the width of one standard FFN (one GShard expert), the variants are (as in Table 1,
//! Dense, Hash and Switch activate one FFN's parameters, GShard and DeepSeekMoE two):
//! - `dense`: one SwiGLU of width w;
//! - `dense-2w`: one SwiGLU of width 2w, the activated FFN width of GShard and DeepSeekMoE (not
//!   in the paper's table; the equal-activated-parameters dense control for them);
//! - `hash`: 16 experts of width w, each token routed to one fixed by a balanced random map of
//!   its byte (Roller et al. 2021; no balance loss, the router unused);
//! - `switch`: 16 experts of width w, learned top-1;
//! - `gshard`: 16 experts of width w, top-2;
//! - `deepseekmoe`: 1 shared + 63 routed experts of width w/4, top-7 (m = 4);
//! - `deepseekmoe-no-shared`: 64 routed of width w/4, top-8;
//! - `deepseekmoe-auxfree`: the DeepSeekMoE model balanced as DeepSeek-V3 is — no balance
//!   loss, experts chosen by score plus a per-expert bias that moves by γ (`aux_free_gamma`)
//!   towards balance after every step.
//!
//! All are [`DeepseekLm`]s (Llama attention, every layer's FFN replaced); the learned-routing
//! MoE models but the last train with the expert-level balance loss (α1, logged apart from the
//! LM loss). Each MoE model's load balance on the validation windows is reported as MaxVio
//! (DeepSeek-V3 §4.5.3), and its training tokens per routed expert.
//!
//! The claims ([`claims`]) are declared before the run and judged on paired per-seed
//! differences with a 95 % t interval (`trainer::claims`); a claim whose variants are not in
//! `variants` is left out. Budget: the full size (8 variants × 5 seeds, 400 steps each) is
//! sized for about 70 minutes on the 2-core CPU.

use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;
use textdata::{ByteCorpus, LmWindows};
use trainer::claims::{Claim, ClaimResult, Direction};
use trainer::metrics::mean_std;
use trainer::report::{Series, markdown_table, write_line_plot};
use trainer::{BatchCtx, Record, Report, RunCtx, StepLoss, Task, Trainer, TrainerConfig};

use crate::Error;
use crate::deepseek::{DeepseekHfConfig, DeepseekLm, MoeHfFields};
use trainer::host::ToHost;

/// Configuration of `moe-compare`.
#[derive(Config, Debug)]
pub struct MoeCompareConfig {
    /// Folder of `.txt` documents; `None` uses the embedded text.
    #[config(default = "None")]
    pub corpus_dir: Option<String>,
    /// Fraction of documents held out.
    #[config(default = 0.1)]
    pub valid_fraction: f64,
    /// Training bytes used (0 = all).
    #[config(default = 0)]
    pub max_train_bytes: usize,
    /// Bytes per window.
    #[config(default = 128)]
    pub seq_len: usize,
    /// Windows per batch.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Validation windows evaluated.
    #[config(default = 64)]
    pub eval_windows: usize,
    /// Hidden size.
    #[config(default = 128)]
    pub d_model: usize,
    /// Layers.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Width w of one GShard expert (divisible by 4).
    #[config(default = 128)]
    pub expert_width: usize,
    /// Expert-level balance factor α1 (the paper's 2B models: 0.01).
    #[config(default = 0.01)]
    pub aux_alpha: f64,
    /// Bias step γ of the auxiliary-loss-free variant (DeepSeek-V3: 0.001 for most of
    /// training).
    #[config(default = 0.001)]
    pub aux_free_gamma: f64,
    /// Seeds; every variant trains once per seed.
    #[config(default = "vec![1, 2, 3, 4, 5]")]
    pub seeds: Vec<u64>,
    /// The variants trained (names in [`VARIANTS`]).
    #[config(default = "VARIANTS.iter().map(|v| v.to_string()).collect()")]
    pub variants: Vec<String>,
    /// Routed experts added when §4.5's test switches the shared expert off (the paper: 1).
    #[config(default = 1)]
    pub shared_off_extra_routed: usize,
    /// Fractions of each token's routed experts disabled in the redundancy test.
    #[config(default = "vec![0.0, 0.0625, 0.125, 0.1875, 0.25]")]
    pub mask_fractions: Vec<f64>,
    /// The training loop (its seed is replaced by each entry of `seeds`).
    #[config(
        default = "TrainerConfig::new(400).with_lr(2e-3).with_schedule(trainer::LrSchedule::deepseek(20)).with_grad_clip(Some(trainer::GradClip::GlobalNorm(1.0)))"
    )]
    pub train: TrainerConfig,
}

impl MoeCompareConfig {
    /// The full size (400 steps, d 128, 2 layers, 5 seeds, every variant).
    pub fn full() -> Self {
        Self::new()
    }

    /// Seconds: 8 steps of d 32, 1 layer, w 32, 2 seeds, 64-byte windows.
    pub fn quick() -> Self {
        Self::new()
            .with_seq_len(64)
            .with_batch_size(4)
            .with_eval_windows(8)
            .with_d_model(32)
            .with_n_layers(1)
            .with_n_heads(2)
            .with_expert_width(32)
            .with_seeds(vec![1, 2])
            .with_mask_fractions(vec![0.0, 0.125, 0.25])
            .with_max_train_bytes(100_000)
            .with_train(TrainerConfig::new(8).with_lr(3e-3))
    }
}

/// The models compared (see the module docs).
pub const VARIANTS: [&str; 8] = [
    "dense",
    "dense-2w",
    "hash",
    "switch",
    "gshard",
    "deepseekmoe",
    "deepseekmoe-no-shared",
    "deepseekmoe-auxfree",
];

/// The pseudo-variant of §4.5's test: the trained `deepseekmoe` with its shared expert off and
/// `shared_off_extra_routed` more routed experts.
pub const SHARED_OFF: &str = "deepseekmoe, shared expert off, more routed";

/// Experts of the hash variant's map (its layers are GShard's 16).
const HASH_EXPERTS: usize = 16;

fn hf_config(cfg: &MoeCompareConfig, variant: &str) -> crate::Result<DeepseekHfConfig> {
    let w = cfg.expert_width;
    // DeepSeekMoE balanced by expert biases instead of the balance loss (DeepSeek-V3 §2.1.2):
    // the same softmax router and weights, experts chosen by score + bias.
    let auxfree = variant == "deepseekmoe-auxfree";
    let (n_routed, n_shared, k, width) = match variant {
        "hash" | "switch" => (Some(HASH_EXPERTS), 0, 1, w),
        "gshard" => (Some(16), 0, 2, w),
        "deepseekmoe" | "deepseekmoe-auxfree" => (Some(63), 1, 7, w / 4),
        "deepseekmoe-no-shared" => (Some(64), 0, 8, w / 4),
        "dense" | "dense-2w" => (None, 0, 1, w),
        other => {
            return Err(Error::InvalidConfig(format!(
                "unknown moe-compare variant '{other}' (expected one of {VARIANTS:?})"
            )));
        }
    };
    Ok(DeepseekHfConfig {
        vocab_size: textdata::ByteTokenizer::VOCAB,
        hidden_size: cfg.d_model,
        num_hidden_layers: cfg.n_layers,
        num_attention_heads: cfg.n_heads,
        num_key_value_heads: None,
        intermediate_size: if variant == "dense-2w" { 2 * w } else { w },
        moe: MoeHfFields {
            topk_method: auxfree.then(|| "noaux_tc".to_string()),
            // the hash layer has no router to balance
            aux_loss_alpha: Some(if auxfree || variant == "hash" {
                0.0
            } else {
                cfg.aux_alpha
            }),
            seq_aux: Some(false),
            ..MoeHfFields::new(n_routed, n_shared, k, width)
        },
        rms_norm_eps: Some(1e-6),
        rope_theta: None,
        max_position_embeddings: Some(cfg.seq_len),
    })
}

/// (total parameters, activated parameters per token) of a variant, embeddings excluded.
fn param_counts(cfg: &MoeCompareConfig, variant: &str) -> crate::Result<(usize, usize)> {
    let d = cfg.d_model;
    let h = hf_config(cfg, variant)?;
    let attn = 4 * d * d;
    let (total, active) = match h.moe.n_routed_experts {
        None => (3 * d * h.intermediate_size, 3 * d * h.intermediate_size),
        Some(e) => {
            let per = 3 * d * h.moe.moe_intermediate_size;
            let shared = h.moe.n_shared_experts.unwrap_or(0) * per;
            // the hash layer's router exists but is never used
            let router = if variant == "hash" { 0 } else { d * e };
            (
                e * per + shared + router,
                h.moe.num_experts_per_tok * per + shared + router,
            )
        }
    };
    Ok((
        cfg.n_layers * (attn + total),
        cfg.n_layers * (attn + active),
    ))
}

/// Language-model pretraining of a [`DeepseekLm`] on random windows: the LM loss plus the
/// balance loss (logged apart as `aux_loss`). Used by `moe-compare`, and by ESFT to pretrain
/// its base model.
pub struct LmTask {
    /// Training windows.
    pub train: LmWindows,
    /// Windows per batch.
    pub batch: usize,
    /// Device of the batches.
    pub device: Device,
    /// Auxiliary-loss-free balancing step γ (DeepSeek-V3): after every optimizer step each
    /// MoE layer's expert biases move by γ towards balance, from the loads of that step's
    /// batches. Needs `noaux_tc` routing; `None`: off.
    pub aux_free_gamma: Option<f64>,
    /// Loads of the current step, per MoE layer.
    pub loads: Vec<Tensor<1>>,
}

impl LmTask {
    /// A task without auxiliary-loss-free balancing.
    pub fn new(train: LmWindows, batch: usize, device: Device) -> Self {
        Self {
            train,
            batch,
            device,
            aux_free_gamma: None,
            loads: Vec::new(),
        }
    }
}

impl Task<DeepseekLm> for LmTask {
    fn after_step(&mut self, model: DeepseekLm, _step: usize) -> trainer::Result<DeepseekLm> {
        let Some(gamma) = self.aux_free_gamma else {
            return Ok(model);
        };
        let loads = std::mem::take(&mut self.loads);
        model
            .update_score_biases(&loads, gamma)
            .map_err(trainer::Error::task)
    }

    fn loss(&mut self, model: &DeepseekLm, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let idx: Vec<usize> = (0..self.batch)
            .map(|_| ctx.rng.below(self.train.len()))
            .collect();
        let (x, y) = self
            .train
            .batch(&idx, &self.device)
            .map_err(trainer::Error::task)?;
        let out = model.forward(x, None).map_err(trainer::Error::task)?;
        if self.aux_free_gamma.is_some() {
            add_loads(&mut self.loads, model.expert_loads(&out.routing));
        }
        let lm = plm::llama::cross_entropy(out.logits, y);
        let aux: f32 = out.aux_loss.clone().into_scalar();
        Ok(StepLoss {
            loss: lm + out.aux_loss,
            extra: [("aux_loss".to_string(), aux as f64)].into(),
        })
    }
}

fn valid_loss(
    model: &DeepseekLm,
    windows: &LmWindows,
    n: usize,
    device: &Device,
) -> crate::Result<f64> {
    plm::llama::mean_window_loss(windows, n, device, |x| Ok(model.forward(x, None)?.logits))
}

/// Adds per-layer expert loads to a running sum (empty: the first batch).
fn add_loads(acc: &mut Vec<Tensor<1>>, loads: Vec<Tensor<1>>) {
    *acc = if acc.is_empty() {
        loads
    } else {
        std::mem::take(acc)
            .into_iter()
            .zip(loads)
            .map(|(a, b)| a + b)
            .collect()
    };
}

/// Validation loss and, for MoE models, the load imbalance MaxVio (DeepSeek-V3 §4.5.3:
/// `(max_i load_i − mean load) / mean load`, per MoE layer over the windows, averaged over
/// layers).
fn valid_loss_and_balance(
    model: &DeepseekLm,
    windows: &LmWindows,
    n: usize,
    device: &Device,
) -> crate::Result<(f64, Option<f64>)> {
    let mut loads: Vec<Tensor<1>> = Vec::new();
    let loss = plm::llama::mean_window_loss(windows, n, device, |x| {
        let out = model.forward(x, None)?;
        add_loads(&mut loads, model.expert_loads(&out.routing));
        Ok::<_, Error>(out.logits)
    })?;
    if loads.is_empty() {
        return Ok((loss, None));
    }
    let mut vio = 0.0;
    for l in &loads {
        let v: Vec<f32> = l.clone().to_f32s()?;
        let mean = v.iter().sum::<f32>() as f64 / v.len() as f64;
        let max = v.iter().fold(0.0f32, |m, &x| m.max(x)) as f64;
        vio += (max - mean) / mean.max(1e-9);
    }
    Ok((loss, Some(vio / loads.len() as f64)))
}

/// One variant's results over the seeds.
#[derive(Serialize, Debug)]
pub struct VariantResult {
    /// Variant name.
    pub variant: String,
    /// Validation loss (nats/byte) per seed.
    pub valid_loss: Vec<f64>,
    /// Mean over seeds.
    pub valid_loss_mean: f64,
    /// Standard deviation over seeds.
    pub valid_loss_std: f64,
    /// exp(mean loss): perplexity per byte.
    pub perplexity: f64,
    /// Parameters without embeddings.
    pub params: usize,
    /// Activated parameters per token without embeddings.
    pub activated_params: usize,
    /// ≈ 2 × activated parameters + the output projection: matmul FLOPs per token (forward).
    pub flops_per_token: usize,
    /// Mean training wall time per seed (s).
    pub train_wall_s: f64,
    /// Mean over seeds of the validation MaxVio (MoE variants only).
    pub max_violation: Option<f64>,
    /// Validation MaxVio per seed (MoE variants only; empty for dense).
    pub max_violation_per_seed: Vec<f64>,
    /// `(fraction disabled, mean valid loss)` — learned-routing MoE variants only.
    pub redundancy: Vec<(f64, f64)>,
    /// Per seed: the mean over the nonzero disabled fractions of the validation-loss increase
    /// over no experts disabled (learned-routing MoE variants only).
    pub redundancy_increase: Vec<f64>,
    /// Per seed: validation loss with the shared experts off and `shared_off_extra_routed` more
    /// routed experts (§4.5; variants with shared experts only).
    pub shared_off_loss: Vec<f64>,
    /// Training tokens each routed expert processed on average: tokens per run × top-k ÷
    /// routed experts (MoE variants only).
    pub tokens_per_expert: Option<f64>,
}

/// Everything `metrics.json` holds.
#[derive(Serialize, Debug)]
pub struct MoeCompareMetrics {
    /// Corpus used.
    pub corpus: String,
    /// Training bytes.
    pub train_tokens: usize,
    /// Steps per run.
    pub steps: usize,
    /// Tokens seen per run.
    pub tokens_per_run: usize,
    /// Device.
    pub device: String,
    /// Per variant.
    pub results: Vec<VariantResult>,
    /// The papers' claims with their paired per-seed evidence (also in `claims.json`).
    pub claims: Vec<ClaimResult>,
}

/// The claims this experiment can test, declared before it runs: DeepSeekMoE (ACL 2024) and
/// DeepSeek-V3's auxiliary-loss-free balancing, each as "metric of A below metric of B", judged
/// on paired per-seed differences (see `trainer::claims`).
pub fn claims() -> Vec<Claim> {
    let loss = LOSS;
    vec![
        Claim::new(
            "hash-below-dense",
            loss,
            "hash",
            "dense",
            Direction::Less,
            "at one FFN's activated parameters, the Hash Layer beats Dense (Table 1)",
        ),
        Claim::new(
            "switch-below-dense",
            loss,
            "switch",
            "dense",
            Direction::Less,
            "at one FFN's activated parameters, Switch (learned top-1) beats Dense (Table 1)",
        ),
        Claim::new(
            "switch-below-hash",
            loss,
            "switch",
            "hash",
            Direction::Less,
            "learned top-1 routing beats the fixed hash at equal parameters (Table 1)",
        ),
        Claim::new(
            "gshard-below-switch",
            loss,
            "gshard",
            "switch",
            Direction::Less,
            "GShard, activating two experts, beats Switch (Table 1)",
        ),
        Claim::new(
            "gshard-below-dense-2w",
            loss,
            "gshard",
            "dense-2w",
            Direction::Less,
            "an MoE model beats the dense model of equal activated parameters (§4.2)",
        ),
        Claim::new(
            "deepseekmoe-below-gshard",
            loss,
            "deepseekmoe",
            "gshard",
            Direction::Less,
            "DeepSeekMoE beats GShard at equal total and activated parameters (§4.2, Table 1)",
        ),
        Claim::new(
            "shared-expert-helps",
            loss,
            "deepseekmoe",
            "deepseekmoe-no-shared",
            Direction::Less,
            "shared-expert isolation helps at equal activated parameters (§4.4)",
        ),
        Claim::new(
            "shared-expert-irreplaceable",
            loss,
            "deepseekmoe",
            SHARED_OFF,
            Direction::Less,
            "switching the shared expert off and activating one more routed expert raises the loss: the shared expert holds knowledge the routed ones do not (§4.5)",
        ),
        Claim::new(
            "deepseekmoe-less-redundant",
            REDUNDANCY,
            "deepseekmoe",
            "gshard",
            Direction::Greater,
            "disabling each token's top routed experts hurts DeepSeekMoE more than GShard: its routed experts are less redundant (§4.5, Figure 4)",
        ),
        Claim::new(
            "auxfree-balances-better",
            "validation MaxVio",
            "deepseekmoe-auxfree",
            "deepseekmoe",
            Direction::Less,
            "auxiliary-loss-free balancing balances the experts better than the balance loss (DeepSeek-V3 §2.1.2)",
        ),
        Claim::new(
            "auxfree-below-aux",
            loss,
            "deepseekmoe-auxfree",
            "deepseekmoe",
            Direction::Less,
            "auxiliary-loss-free balancing also gives the better model (DeepSeek-V3 §4.5.2)",
        ),
    ]
}

/// The metric of most claims.
const LOSS: &str = "validation loss (nats/byte)";
/// The metric of the redundancy claim.
const REDUNDANCY: &str =
    "validation-loss increase, mean over the disabled fractions (top routed experts disabled)";

/// A claim's per-seed values of `variant` (or [`SHARED_OFF`]) for `metric`; `None` when that
/// variant was not run.
fn claim_values(results: &[VariantResult], variant: &str, metric: &str) -> Option<Vec<f64>> {
    let (name, shared_off) = if variant == SHARED_OFF {
        ("deepseekmoe", true)
    } else {
        (variant, false)
    };
    let r = results.iter().find(|r| r.variant == name)?;
    Some(if shared_off {
        r.shared_off_loss.clone()
    } else if metric == "validation MaxVio" {
        r.max_violation_per_seed.clone()
    } else if metric == REDUNDANCY {
        r.redundancy_increase.clone()
    } else {
        r.valid_loss.clone()
    })
}

/// Evaluates the [`claims`] whose variants ran on the per-seed results.
fn evaluate_claims(results: &[VariantResult]) -> crate::Result<Vec<ClaimResult>> {
    Ok(trainer::claims::evaluate_available(&claims(), |v, m| {
        claim_values(results, v, m)
    })?)
}

/// Runs the comparison into `ctx.dir`: data, then per variant training and evaluation over the
/// seeds, then the report.
pub fn run(cfg: &MoeCompareConfig, ctx: &mut RunCtx<'_>) -> crate::Result<Report> {
    if !cfg.expert_width.is_multiple_of(4) || cfg.seeds.is_empty() || cfg.variants.is_empty() {
        return Err(Error::InvalidConfig(
            "expert_width must be divisible by 4, seeds and variants non-empty".into(),
        ));
    }
    if let Some(v) = cfg
        .variants
        .iter()
        .find(|v| !VARIANTS.contains(&v.as_str()))
    {
        return Err(Error::InvalidConfig(format!(
            "unknown moe-compare variant '{v}' (expected some of {VARIANTS:?})"
        )));
    }
    let data = Data::load(cfg)?;
    let mut results = Vec::new();
    let mut curves = Vec::new();
    for variant in &cfg.variants {
        let (result, curve) = run_variant(cfg, variant, &data, ctx)?;
        results.push(result);
        curves.push(curve);
    }
    let claims = evaluate_claims(&results)?;
    trainer::claims::write_claims(&ctx.path("claims.json"), &claims)?;
    let metrics = MoeCompareMetrics {
        corpus: data.name.clone(),
        train_tokens: data.train_tokens,
        steps: cfg.train.max_steps,
        tokens_per_run: cfg.train.max_steps * cfg.batch_size * cfg.seq_len,
        device: ctx.device_name.clone(),
        results,
        claims,
    };
    let (table, body) = write_report(cfg, &metrics, &curves, ctx)?;
    Ok(ctx.finish(cfg, &metrics, "moe-compare", table, body)?)
}

/// The byte corpus split into training and validation windows.
struct Data {
    name: String,
    train_tokens: usize,
    train: LmWindows,
    valid: LmWindows,
}

impl Data {
    fn load(cfg: &MoeCompareConfig) -> crate::Result<Self> {
        let data = ByteCorpus::load(
            cfg.corpus_dir.as_deref().map(std::path::Path::new),
            cfg.valid_fraction,
            cfg.max_train_bytes,
        )?;
        Ok(Self {
            name: data.name,
            train_tokens: data.train.len(),
            train: LmWindows::new(data.train, cfg.seq_len, 1)?,
            valid: LmWindows::new(data.valid, cfg.seq_len, cfg.seq_len)?,
        })
    }
}

/// Trains `variant` once per seed and evaluates it (validation loss, MaxVio, the redundancy
/// curve); returns its result and the first seed's training curve.
fn run_variant(
    cfg: &MoeCompareConfig,
    variant: &str,
    data: &Data,
    ctx: &mut RunCtx<'_>,
) -> crate::Result<(VariantResult, Series)> {
    let eval_device = ctx.device.clone();
    let device = ctx.device.clone().autodiff();
    let hf = hf_config(cfg, variant)?;
    let (params, active) = param_counts(cfg, variant)?;
    let mut losses = Vec::new();
    let mut violations = Vec::new();
    let mut walls = Vec::new();
    let mut redundancy_runs: Vec<Vec<f64>> = Vec::new();
    let mut shared_off = Vec::new();
    let mut curve = Series::new(variant, Vec::new());
    let hash = variant == "hash";
    for (si, &seed) in cfg.seeds.iter().enumerate() {
        device.seed(seed);
        let mut model = hf.init(&device)?;
        if hash {
            let router = crate::HashRouter::new(textdata::ByteTokenizer::VOCAB, HASH_EXPERTS, seed);
            model = model.with_hash_routing(router)?;
        }
        let began = Instant::now();
        let mut task = LmTask::new(data.train.clone(), cfg.batch_size, device.clone());
        task.aux_free_gamma = (variant == "deepseekmoe-auxfree").then_some(cfg.aux_free_gamma);
        let progress = &mut ctx.progress;
        let outcome = Trainer::new(cfg.train.clone().with_seed(seed), &device)
            .with_progress(|p| {
                if let Some(cb) = progress.as_mut() {
                    cb(p);
                }
            })
            .fit(model, &mut task)?;
        walls.push(began.elapsed().as_secs_f64());
        if si == 0 {
            curve.points = outcome
                .records
                .iter()
                .filter_map(|r| match r {
                    Record::Train { step, loss, .. } => Some((*step as f64, *loss)),
                    _ => None,
                })
                .collect();
        }
        let trained = outcome.model.valid();
        if hash && trained.hash_routing().is_none() {
            return Err(Error::InvalidConfig(
                "the hash routing was lost in training".into(),
            ));
        }
        let (loss, vio) =
            valid_loss_and_balance(&trained, &data.valid, cfg.eval_windows, &eval_device)?;
        losses.push(loss);
        violations.extend(vio);
        if hf.moe.n_shared_experts.unwrap_or(0) > 0 && hf.moe.n_routed_experts.is_some() {
            let off = trained
                .clone()
                .with_shared_replaced_by_routed(cfg.shared_off_extra_routed)?;
            shared_off.push(valid_loss(
                &off,
                &data.valid,
                cfg.eval_windows,
                &eval_device,
            )?);
        }
        // The redundancy test needs learned scores to rank the experts by: not the hash layer.
        if let Some(n_routed) = hf.moe.n_routed_experts.filter(|_| !hash) {
            let mut row = Vec::new();
            for &f in &cfg.mask_fractions {
                let r = (f * n_routed as f64).round() as usize;
                let masked = trained.clone().with_masked_top(r)?;
                row.push(valid_loss(
                    &masked,
                    &data.valid,
                    cfg.eval_windows,
                    &eval_device,
                )?);
            }
            redundancy_runs.push(row);
        }
    }
    let (m, s) = mean_std(&losses);
    let redundancy_increase = redundancy_runs
        .iter()
        .map(|row| {
            let base = cfg
                .mask_fractions
                .iter()
                .position(|&f| f == 0.0)
                .map(|i| row[i]);
            let ups: Vec<f64> = cfg
                .mask_fractions
                .iter()
                .zip(row)
                .filter(|(f, _)| **f > 0.0)
                .filter_map(|(_, l)| base.map(|b| l - b))
                .collect();
            if ups.is_empty() {
                f64::NAN
            } else {
                ups.iter().sum::<f64>() / ups.len() as f64
            }
        })
        .filter(|x| x.is_finite())
        .collect();
    let tokens = (cfg.train.max_steps * cfg.batch_size * cfg.seq_len) as f64;
    let tokens_per_expert = hf
        .moe
        .n_routed_experts
        .map(|e| tokens * hf.moe.num_experts_per_tok as f64 / e as f64);
    let redundancy = cfg
        .mask_fractions
        .iter()
        .enumerate()
        .filter(|_| !redundancy_runs.is_empty())
        .map(|(i, &f)| {
            (
                f,
                redundancy_runs.iter().map(|r| r[i]).sum::<f64>() / redundancy_runs.len() as f64,
            )
        })
        .collect();
    let result = VariantResult {
        variant: variant.to_string(),
        valid_loss: losses,
        valid_loss_mean: m,
        valid_loss_std: s,
        perplexity: m.exp(),
        params,
        activated_params: active,
        flops_per_token: 2 * active + 2 * cfg.d_model * textdata::ByteTokenizer::VOCAB,
        train_wall_s: walls.iter().sum::<f64>() / walls.len() as f64,
        max_violation: (!violations.is_empty()).then(|| mean_std(&violations).0),
        max_violation_per_seed: violations.clone(),
        redundancy,
        redundancy_increase,
        shared_off_loss: shared_off,
        tokens_per_expert,
    };
    Ok((result, curve))
}

/// Writes the plots and returns the README-ready table and the report body.
fn write_report(
    cfg: &MoeCompareConfig,
    metrics: &MoeCompareMetrics,
    curves: &[Series],
    ctx: &RunCtx<'_>,
) -> crate::Result<(String, String)> {
    let results = &metrics.results;
    write_line_plot(
        &ctx.path("train_loss.svg"),
        "moe-compare: training loss (first seed)",
        "step",
        "nats per byte",
        curves,
    )?;
    let red: Vec<Series> = results
        .iter()
        .filter(|r| !r.redundancy.is_empty())
        .map(|r| Series::new(r.variant.clone(), r.redundancy.clone()))
        .collect();
    write_line_plot(
        &ctx.path("redundancy.svg"),
        "redundancy: top routed experts disabled per token",
        "fraction of routed experts disabled",
        "validation loss (nats/byte)",
        &red,
    )?;
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.variant.clone(),
                format!("{:.4} ± {:.4}", r.valid_loss_mean, r.valid_loss_std),
                format!("{:.3}", r.perplexity),
                format!("{}", r.params),
                format!("{}", r.activated_params),
                format!("{}", r.flops_per_token),
                r.tokens_per_expert
                    .map(|t| format!("{t:.0}"))
                    .unwrap_or_else(|| "–".into()),
                format!("{:.2}", r.train_wall_s),
                r.max_violation
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "–".into()),
            ]
        })
        .collect();
    let table = markdown_table(
        &[
            "model",
            "valid loss (mean ± std)",
            "ppl/byte",
            "params",
            "activated",
            "FLOPs/token",
            "tokens/expert",
            "train s/seed",
            "MaxVio",
        ],
        &rows,
    );
    let curved: Vec<&VariantResult> = results
        .iter()
        .filter(|r| !r.redundancy.is_empty())
        .collect();
    let red_rows: Vec<Vec<String>> = cfg
        .mask_fractions
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut row = vec![format!("{f:.4}")];
            row.extend(curved.iter().map(|r| {
                r.redundancy
                    .get(i)
                    .map(|p| format!("{:.4}", p.1))
                    .unwrap_or_default()
            }));
            row
        })
        .collect();
    let mut red_header = vec!["fraction disabled"];
    red_header.extend(curved.iter().map(|r| r.variant.as_str()));
    let shared_off = results
        .iter()
        .find(|r| r.variant == "deepseekmoe" && !r.shared_off_loss.is_empty())
        .map(|r| {
            format!(
                "\n\n§4.5, shared expert off and {} more routed expert(s) at inference: validation loss {:.4} (mean over seeds) against {:.4} as trained.\n",
                cfg.shared_off_extra_routed,
                mean_std(&r.shared_off_loss).0,
                r.valid_loss_mean
            )
        })
        .unwrap_or_default();
    let body = format!(
        "Byte-level LMs ({} layers, d_model {}, standard FFN width w = {}; {} steps × {} × {} bytes per run, seeds {:?}; corpus {}). Dense, Hash and Switch activate one FFN of width w, GShard and DeepSeekMoE two (dense-2w: one SwiGLU of width 2w).\n\n## Claims (paired per-seed differences A − B; `claims.json`)\n\n{}\n![training loss](train_loss.svg)\n\n## Redundancy test and the shared expert (§4.5)\n\n{}{}\n![redundancy](redundancy.svg)\n",
        cfg.n_layers,
        cfg.d_model,
        cfg.expert_width,
        cfg.train.max_steps,
        cfg.batch_size,
        cfg.seq_len,
        cfg.seeds,
        metrics.corpus,
        trainer::claims::claims_table(&metrics.claims),
        markdown_table(&red_header, &red_rows),
        shared_off,
    );
    Ok((table, body))
}
