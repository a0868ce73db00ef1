//! The training loop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use crate::checkpoint::Checkpoints;
use crate::metrics::{Metrics, MetricsLog, Record};
use crate::params::{TrainableSet, clip_each, global_grad_norm, scale_grads};
use crate::{Error, GradClip, Result, Rng, TrainerConfig};

/// What a task computes for one micro-batch.
pub struct StepLoss {
    /// The scalar to minimise, on the autodiff device.
    pub loss: Tensor<1>,
    /// Host-side scalars to log with the step (auxiliary losses, accuracies, ...).
    pub extra: Metrics,
}

impl From<Tensor<1>> for StepLoss {
    fn from(loss: Tensor<1>) -> Self {
        Self {
            loss,
            extra: Metrics::new(),
        }
    }
}

/// Where a micro-batch sits in training, and the RNG to draw it with.
pub struct BatchCtx<'a> {
    /// 0-based optimizer step.
    pub step: usize,
    /// 0-based micro-batch within the step (`< grad_accum`).
    pub micro: usize,
    /// The trainer's RNG. Drawing batches from it (and from nothing else) makes a resumed run
    /// see exactly the batches an uninterrupted run sees.
    pub rng: &'a mut Rng,
}

/// A model together with its data: the part of training that differs between papers.
pub trait Task<M: Module> {
    /// The loss of one micro-batch.
    fn loss(&mut self, model: &M, ctx: &mut BatchCtx<'_>) -> Result<StepLoss>;

    /// Called after every optimizer step with the updated model: updates that are not gradient
    /// steps (DeepSeek-V3's auxiliary-loss-free expert biases) go here. Default: none.
    fn after_step(&mut self, model: M, _step: usize) -> Result<M> {
        Ok(model)
    }

    /// Validation metrics after `step` steps, computed on `model.valid()`.
    fn evaluate(&mut self, _model: &M, _step: usize) -> Result<Metrics> {
        Ok(Metrics::new())
    }
}

/// What a progress callback sees after every step.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Steps taken.
    pub step: usize,
    /// Steps in the whole run.
    pub total: usize,
    /// This step's mean loss.
    pub loss: f64,
    /// This step's learning rate.
    pub lr: f64,
    /// Steps per second since this process started training.
    pub steps_per_sec: f64,
    /// Estimated time to the end.
    pub eta: Duration,
    /// Evaluation metrics, when this step evaluated.
    pub eval: Option<Metrics>,
}

/// The result of a run.
pub struct TrainOutcome<M> {
    /// The trained model (still on the autodiff device).
    pub model: M,
    /// Every metrics record of the run, including those before a resume.
    pub records: Vec<Record>,
    /// The step the run was resumed from, if it was.
    pub resumed_from: Option<usize>,
    /// The parameters that were trained.
    pub trainable: TrainableSet,
}

type ProgressFn<'a> = Box<dyn FnMut(&Progress) + 'a>;
type TrainableFn<'a> = Box<dyn Fn(&str) -> bool + 'a>;
type LrScaleFn<'a> = Box<dyn Fn(&str) -> f64 + 'a>;

/// Runs a [`Task`] for [`TrainerConfig::max_steps`] optimizer steps.
///
/// ```no_run
/// # use burn::prelude::*;
/// # fn demo<M: burn::module::Module, T: trainer::Task<M>>(
/// #     model: M, mut task: T, device: Device, dir: &std::path::Path,
/// # ) -> trainer::Result<()> {
/// use trainer::{Trainer, TrainerConfig};
/// let outcome = Trainer::new(TrainerConfig::new(100).with_lr(1e-3), &device)
///     .with_run_dir(dir)                                   // metrics.jsonl + checkpoints
///     .with_trainable(|path| path.contains("experts.3."))  // freeze everything else
///     .with_progress(|p| println!("{} {:.3}", p.step, p.loss))
///     .fit(model, &mut task)?;
/// # Ok(()) }
/// ```
pub struct Trainer<'a> {
    config: TrainerConfig,
    device: Device,
    run_dir: Option<PathBuf>,
    trainable: Option<TrainableFn<'a>>,
    lr_scale: Option<LrScaleFn<'a>>,
    progress: Option<ProgressFn<'a>>,
}

impl<'a> Trainer<'a> {
    /// A trainer for models living on `device` (an autodiff device).
    pub fn new(config: TrainerConfig, device: &Device) -> Self {
        Self {
            config,
            device: device.clone(),
            run_dir: None,
            trainable: None,
            lr_scale: None,
            progress: None,
        }
    }

    /// Streams `metrics.jsonl` and writes checkpoints into `dir`.
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Trains only the parameters whose dotted path satisfies `trainable`.
    pub fn with_trainable(mut self, trainable: impl Fn(&str) -> bool + 'a) -> Self {
        self.trainable = Some(Box::new(trainable));
        self
    }

    /// Per-parameter learning rates: the parameter at dotted `path` is trained with the
    /// schedule's rate times `scale(path)` (parameter groups, e.g. FormBERT's 4e-4 for the
    /// formation parameters against 5e-5 for the encoder: a scale of 8). The optimizer takes one
    /// step per distinct scale, each over its own parameters, so its per-parameter state (Adam's
    /// moments) is unaffected; gradient clipping still sees all gradients together.
    pub fn with_lr_scale(mut self, scale: impl Fn(&str) -> f64 + 'a) -> Self {
        self.lr_scale = Some(Box::new(scale));
        self
    }

    /// Calls `f` after every optimizer step.
    pub fn with_progress(mut self, f: impl FnMut(&Progress) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Trains from the model's current weights.
    pub fn fit<M: Module, T: Task<M>>(self, model: M, task: &mut T) -> Result<TrainOutcome<M>> {
        self.run(model, task, false)
    }

    /// Continues the run in the run folder from its newest checkpoint. `model` only supplies the
    /// architecture; its weights are replaced by the checkpoint's.
    pub fn resume<M: Module, T: Task<M>>(self, model: M, task: &mut T) -> Result<TrainOutcome<M>> {
        self.run(model, task, true)
    }

    fn run<M: Module, T: Task<M>>(
        mut self,
        model: M,
        task: &mut T,
        resume: bool,
    ) -> Result<TrainOutcome<M>> {
        let cfg = self.config.clone();
        cfg.validate()?;
        let checkpoints = self.run_dir.as_deref().map(Checkpoints::new);
        let metrics_path = self.run_dir.as_ref().map(|d| d.join("metrics.jsonl"));

        let mut model = model;
        let mut optim = cfg.optimizer.init();
        let mut rng = Rng::seed_from(cfg.seed);
        let mut start = 0;
        let mut records = Vec::new();
        let mut log = None;
        if resume {
            let (ckpts, mpath) = match (&checkpoints, &metrics_path) {
                (Some(c), Some(m)) => (c, m),
                _ => {
                    return Err(Error::InvalidConfig(
                        "resume needs a run folder (with_run_dir)".into(),
                    ));
                }
            };
            let latest = ckpts
                .latest()?
                .ok_or_else(|| Error::NoCheckpoint(ckpts.dir().to_path_buf()))?;
            let (m, o, state) = Checkpoints::load(&latest, model, optim)?;
            if state.step > cfg.max_steps {
                return Err(Error::InvalidConfig(format!(
                    "checkpoint is at step {} but max_steps is {}",
                    state.step, cfg.max_steps
                )));
            }
            (model, optim, rng, start) = (m, o, state.rng, state.step);
            log = Some(MetricsLog::resume(mpath, start)?);
            records = crate::metrics::read_records(mpath)?;
        } else if let Some(mpath) = &metrics_path {
            if let Some(c) = &checkpoints
                && c.latest()?.is_some()
            {
                return Err(Error::InvalidConfig(format!(
                    "{} already holds checkpoints: resume it or pick a new folder",
                    c.dir().display()
                )));
            }
            log = Some(MetricsLog::create(mpath)?);
        }

        // Parameter ids come from the checkpoint on resume, so the set is built after loading.
        let trainable = match &self.trainable {
            Some(pred) => TrainableSet::select(&model, pred),
            None => TrainableSet::all(&model),
        };
        if trainable.params().is_empty() {
            return Err(Error::InvalidConfig(
                "the trainable predicate selects no parameter".into(),
            ));
        }

        // Frozen parameters stop tracking gradients while training (autodiff then skips their
        // weight gradients); they are switched back on before the model is returned.
        let frozen: std::collections::HashSet<burn::module::ParamId> =
            crate::params::inventory(&model)
                .into_iter()
                .map(|p| p.id)
                .filter(|id| !trainable.contains(id))
                .collect();
        if !frozen.is_empty() {
            model = crate::params::set_require_grad(model, &frozen, false);
        }

        // Learning-rate groups: (scale, parameter ids), the scale-1 group left implicit.
        let mut groups: Vec<(f64, std::collections::HashSet<burn::module::ParamId>)> = Vec::new();
        if let Some(scale) = &self.lr_scale {
            for p in trainable.params() {
                let s = scale(&p.path);
                if !s.is_finite() || s < 0.0 {
                    return Err(Error::InvalidConfig(format!(
                        "learning-rate scale {s} for {}",
                        p.path
                    )));
                }
                if s == 1.0 {
                    continue;
                }
                match groups.iter_mut().find(|(v, _)| *v == s) {
                    Some((_, ids)) => {
                        ids.insert(p.id);
                    }
                    None => groups.push((s, std::iter::once(p.id).collect())),
                }
            }
        }

        let began = Instant::now();
        for step in start..cfg.max_steps {
            let lr = cfg.schedule.lr_at(step, cfg.max_steps, cfg.lr);
            // Dropout and other device randomness follow the trainer RNG, so they resume too.
            self.device.seed(rng.next_u64());

            let mut accumulator = GradientsAccumulator::<M>::new();
            let mut loss_sum = 0.0f64;
            let mut extra = Metrics::new();
            for micro in 0..cfg.grad_accum {
                let mut ctx = BatchCtx {
                    step,
                    micro,
                    rng: &mut rng,
                };
                let StepLoss { loss, extra: e } = task.loss(&model, &mut ctx)?;
                let value = crate::host::scalar(loss.clone())? as f32;
                if !value.is_finite() {
                    return Err(Error::NonFiniteLoss {
                        step: step + 1,
                        value,
                    });
                }
                loss_sum += value as f64;
                for (k, v) in e {
                    *extra.entry(k).or_insert(0.0) += v / cfg.grad_accum as f64;
                }
                let loss = if cfg.grad_accum > 1 {
                    loss.div_scalar(cfg.grad_accum as f32)
                } else {
                    loss
                };
                // A batch in which no trainable parameter took part (only routed experts that
                // none of its tokens reached are trainable, say) has no gradient: it updates
                // nothing, and backward on its untracked loss would panic.
                if loss.is_tracked() {
                    let mut grads = loss.backward();
                    accumulator.accumulate(&model, trainable.gradients(&mut grads, &model));
                }
            }
            let mut grads: GradientsParams = accumulator.grads();
            let grad_norm = global_grad_norm(&model, &mut grads)?;
            if !grad_norm.is_finite() {
                return Err(Error::NonFiniteLoss {
                    step: step + 1,
                    value: grad_norm,
                });
            }
            match &cfg.grad_clip {
                Some(GradClip::GlobalNorm(max)) if grad_norm > *max => {
                    scale_grads(&model, &mut grads, *max / (grad_norm + 1e-6));
                }
                Some(clip) => clip_each(&model, &mut grads, clip),
                None => {}
            }
            for (scale, ids) in &groups {
                let part = crate::params::split_grads(&model, &mut grads, ids);
                if !part.is_empty() {
                    model = optim.step(lr * scale, model, part);
                }
            }
            if !grads.is_empty() {
                model = optim.step(lr, model, grads);
            }
            model = task.after_step(model, step)?;

            let done = step + 1;
            let loss = loss_sum / cfg.grad_accum as f64;
            let rec = Record::Train {
                step: done,
                loss,
                lr,
                grad_norm: grad_norm as f64,
                extra,
            };
            if let Some(l) = log.as_mut() {
                l.write(&rec)?;
            }
            records.push(rec);

            let last = done == cfg.max_steps;
            let eval = if last || (cfg.eval_every > 0 && done % cfg.eval_every == 0) {
                let metrics = task.evaluate(&model.valid(), done)?;
                let rec = Record::Eval {
                    step: done,
                    metrics: metrics.clone(),
                };
                if let Some(l) = log.as_mut() {
                    l.write(&rec)?;
                }
                records.push(rec);
                Some(metrics)
            } else {
                None
            };
            if let Some(c) = &checkpoints
                && (last || (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0))
            {
                c.save(done, &model, &optim, &rng, cfg.keep_checkpoints)?;
            }
            if let Some(cb) = self.progress.as_mut() {
                let elapsed = began.elapsed().as_secs_f64();
                let steps_per_sec = (done - start) as f64 / elapsed.max(1e-9);
                let eta = Duration::from_secs_f64((cfg.max_steps - done) as f64 / steps_per_sec);
                cb(&Progress {
                    step: done,
                    total: cfg.max_steps,
                    loss,
                    lr,
                    steps_per_sec,
                    eta,
                    eval,
                });
            }
        }
        if !frozen.is_empty() {
            model = crate::params::set_require_grad(model, &frozen, true);
        }
        Ok(TrainOutcome {
            model,
            records,
            resumed_from: resume.then_some(start),
            trainable,
        })
    }
}

/// The newest checkpoint folder of a run, if it has one.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    Checkpoints::new(run_dir).latest()
}
