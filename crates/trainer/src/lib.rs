//! The one training loop of the workspace.
//!
//! Every paper crate trains through [`Trainer`]: a seeded, deterministic (on CPU) loop over a
//! [`Task`] — the model-plus-data part that differs between papers — with burn's AdamW or SGD,
//! gradient accumulation, global-norm or per-tensor clipping, the learning-rate schedules the
//! papers use ([`LrSchedule`]: constant, warmup + cosine, and DeepSeekMoE's warmup + step decay),
//! freezing by a predicate over parameter paths (so ESFT can train chosen experts only and save
//! them as an adapter), atomic checkpoints that `resume` continues bit-for-bit, a NaN/inf guard,
//! metrics streamed as JSON lines and a progress callback.
//!
//! It also holds the small output helpers every experiment shares: SVG line plots, Markdown
//! tables, atomic file writes and run identifiers ([`report`], [`fs`]), and the claims with
//! verdicts every experiment reports ([`claims`]: paired per-seed differences, a 95 % t interval,
//! holds / contradicted / not shown).
//!
//! ```
//! use burn::nn::{Linear, LinearConfig};
//! use burn::prelude::*;
//! use trainer::{BatchCtx, LrSchedule, StepLoss, Task, Trainer, TrainerConfig};
//!
//! /// Fit y = 2x with one linear layer.
//! struct Line(Device);
//! impl Task<Linear> for Line {
//!     fn loss(&mut self, m: &Linear, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
//!         let x: Vec<f32> = (0..16).map(|_| ctx.rng.next_f64() as f32).collect();
//!         let x = Tensor::<2>::from_data(TensorData::new(x, [16, 1]), &self.0);
//!         let y = x.clone() * 2.0;
//!         Ok((m.forward(x) - y).powi_scalar(2).mean().into())
//!     }
//! }
//!
//! # fn main() -> trainer::Result<()> {
//! let device = Device::flex().autodiff();
//! let run_dir = tempfile::tempdir().map_err(|e| trainer::Error::io("tempdir", e))?;
//! let config = TrainerConfig::new(200)
//!     .with_lr(3e-2)
//!     .with_schedule(LrSchedule::WarmupCosine { warmup_steps: 10, min_ratio: 0.1 });
//! let outcome = Trainer::new(config, &device)
//!     .with_run_dir(run_dir.path())     // metrics.jsonl + checkpoints
//!     .with_progress(|p| if p.step % 100 == 0 { eprintln!("step {} loss {:.4}", p.step, p.loss) })
//!     .fit(LinearConfig::new(1, 1).init(&device), &mut Line(device.clone()))?;
//! let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32], [1, 1]), &device);
//! let y: f32 = outcome.model.forward(x).into_scalar();
//! assert!((y - 1.0).abs() < 0.05, "{y}");
//! # Ok(()) }
//! ```
//!
//! Determinism: the trainer owns a [`Rng`] that a task uses to draw batches, and it reseeds the
//! device RNG from that generator before every step, so dropout masks depend only on the seed
//! and the step. Both are restored from a checkpoint, which is why a resumed run reproduces an
//! uninterrupted one.

pub mod checkpoint;
pub mod claims;
mod config;
pub mod device;
mod error;
pub mod experiment;
pub mod fs;
pub mod host;
pub mod metrics;
pub mod params;
pub mod report;
mod rng;
mod train;

pub use config::{GradClip, LrSchedule, OptimizerKind, TrainerConfig};
pub use error::{Error, Result};
pub use experiment::{Report, RunCtx, Stage};
pub use metrics::{Metrics, Record};
pub use params::{ParamInfo, TrainableSet, inventory, load_adapter};
pub use rng::Rng;
pub use train::{BatchCtx, Progress, StepLoss, Task, TrainOutcome, Trainer, latest_checkpoint};
