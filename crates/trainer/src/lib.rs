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
//! tables, atomic file writes and run identifiers ([`report`], [`fs`]).
//!
//! ```ignore
//! use trainer::{Trainer, TrainerConfig, LrSchedule, Task, StepLoss, BatchCtx};
//! let config = TrainerConfig::new(1000)
//!     .with_lr(3e-4)
//!     .with_schedule(LrSchedule::WarmupCosine { warmup_steps: 50, min_ratio: 0.1 });
//! let outcome = Trainer::new(config, &device)
//!     .with_run_dir("runs/my-run")
//!     .with_progress(|p| eprintln!("step {}/{} loss {:.3}", p.step, p.total, p.loss))
//!     .fit(model, &mut my_task)?;
//! ```
//!
//! Determinism: the trainer owns a [`Rng`] that a task uses to draw batches, and it reseeds the
//! device RNG from that generator before every step, so dropout masks depend only on the seed
//! and the step. Both are restored from a checkpoint, which is why a resumed run reproduces an
//! uninterrupted one.

pub mod checkpoint;
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
