//! Training configuration: optimizer, learning-rate schedule, clipping, accumulation, checkpoints.

use burn::config::Config;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};

use crate::Error;

/// Which optimizer updates the trainable parameters.
#[derive(Config, Debug, PartialEq)]
pub enum OptimizerKind {
    /// AdamW (decoupled weight decay), burn's implementation.
    AdamW {
        /// First-moment decay.
        beta_1: f32,
        /// Second-moment decay.
        beta_2: f32,
        /// Denominator epsilon.
        epsilon: f32,
        /// Decoupled weight decay (multiplied by the learning rate).
        weight_decay: f32,
    },
    /// Plain SGD with optional heavy-ball momentum and L2 weight decay.
    Sgd {
        /// Momentum factor; 0 disables momentum.
        momentum: f64,
        /// L2 penalty; 0 disables it.
        weight_decay: f32,
    },
}

impl OptimizerKind {
    /// AdamW with the usual transformer defaults (0.9, 0.95, 1e-8, wd 0.1), as DeepSeekMoE trains.
    pub fn adamw() -> Self {
        Self::AdamW {
            beta_1: 0.9,
            beta_2: 0.95,
            epsilon: 1e-8,
            weight_decay: 0.1,
        }
    }

    /// Builds burn's optimizer. Clipping is applied by the trainer (globally), not here.
    pub fn init(&self) -> ModuleOptimizer {
        match *self {
            Self::AdamW {
                beta_1,
                beta_2,
                epsilon,
                weight_decay,
            } => AdamWConfig::new()
                .with_beta_1(beta_1)
                .with_beta_2(beta_2)
                .with_epsilon(epsilon)
                .with_weight_decay(weight_decay)
                .init(),
            Self::Sgd {
                momentum,
                weight_decay,
            } => {
                let mut cfg = SgdConfig::new();
                if momentum > 0.0 {
                    cfg = cfg.with_momentum(Some(MomentumConfig {
                        momentum,
                        dampening: 0.0,
                        nesterov: false,
                    }));
                }
                if weight_decay > 0.0 {
                    cfg = cfg.with_weight_decay(Some(WeightDecayConfig::new(weight_decay)));
                }
                cfg.init()
            }
        }
    }
}

/// Learning-rate schedule over `max_steps` optimizer steps. `lr` in [`TrainerConfig`] is the peak.
#[derive(Config, Debug, PartialEq)]
pub enum LrSchedule {
    /// Constant after an optional linear warmup.
    Constant {
        /// Linear warmup steps from 0 to the peak.
        warmup_steps: usize,
    },
    /// Linear warmup then cosine decay to `min_ratio · lr` at the last step.
    WarmupCosine {
        /// Linear warmup steps from 0 to the peak.
        warmup_steps: usize,
        /// Final learning rate as a fraction of the peak.
        min_ratio: f64,
    },
    /// Linear warmup then a step decay: multiplied by `factor` at each fraction of `max_steps` in
    /// `milestones`. DeepSeekMoE: factor 0.316 at 80% and 90% of training.
    WarmupStepDecay {
        /// Linear warmup steps from 0 to the peak.
        warmup_steps: usize,
        /// Fractions of `max_steps` (in (0, 1], ascending) where the rate is multiplied by `factor`.
        milestones: Vec<f64>,
        /// The multiplier applied at each milestone.
        factor: f64,
    },
}

impl LrSchedule {
    /// The DeepSeekMoE schedule: warmup, then ×0.316 at 80% and at 90% of the steps.
    pub fn deepseek(warmup_steps: usize) -> Self {
        Self::WarmupStepDecay {
            warmup_steps,
            milestones: vec![0.8, 0.9],
            factor: 0.316,
        }
    }

    fn warmup_steps(&self) -> usize {
        match self {
            Self::Constant { warmup_steps }
            | Self::WarmupCosine { warmup_steps, .. }
            | Self::WarmupStepDecay { warmup_steps, .. } => *warmup_steps,
        }
    }

    /// Learning rate of 0-based optimizer step `step` out of `max_steps`, for peak `lr`.
    pub fn lr_at(&self, step: usize, max_steps: usize, lr: f64) -> f64 {
        let warmup = self.warmup_steps();
        if step < warmup {
            return lr * (step + 1) as f64 / warmup as f64;
        }
        match self {
            Self::Constant { .. } => lr,
            Self::WarmupCosine { min_ratio, .. } => {
                let span = max_steps.saturating_sub(warmup).max(1);
                let progress = ((step - warmup) as f64 / span as f64).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                lr * (min_ratio + (1.0 - min_ratio) * cosine)
            }
            Self::WarmupStepDecay {
                milestones, factor, ..
            } => {
                let passed = milestones
                    .iter()
                    .filter(|&&m| step as f64 >= m * max_steps as f64)
                    .count();
                lr * factor.powi(passed as i32)
            }
        }
    }

    fn validate(&self) -> crate::Result<()> {
        match self {
            Self::WarmupCosine { min_ratio, .. } if !(0.0..=1.0).contains(min_ratio) => Err(
                Error::InvalidConfig(format!("min_ratio {min_ratio} is outside [0, 1]")),
            ),
            Self::WarmupStepDecay {
                milestones, factor, ..
            } => {
                if milestones.iter().any(|m| !(0.0..=1.0).contains(m)) {
                    return Err(Error::InvalidConfig(format!(
                        "milestones {milestones:?} must lie in [0, 1]"
                    )));
                }
                if !(factor.is_finite() && *factor > 0.0) {
                    return Err(Error::InvalidConfig(format!(
                        "decay factor {factor} must be positive"
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// How gradients are clipped before the optimizer step.
#[derive(Config, Debug, PartialEq)]
pub enum GradClip {
    /// Scale all trainable gradients together so their joint L2 norm is at most this
    /// (`torch.nn.utils.clip_grad_norm_`).
    GlobalNorm(f32),
    /// Clip each parameter tensor's gradient to this L2 norm separately (burn's `Norm`).
    PerTensorNorm(f32),
    /// Clamp every gradient element to `[-v, v]`.
    Value(f32),
}

/// Everything the training loop needs besides the model and the task.
#[derive(Config, Debug)]
pub struct TrainerConfig {
    /// Number of optimizer steps.
    pub max_steps: usize,
    /// Peak learning rate.
    #[config(default = 1e-3)]
    pub lr: f64,
    /// Seed of the data order (trainer [`crate::Rng`]) and of the device RNG (dropout).
    #[config(default = 42)]
    pub seed: u64,
    /// Optimizer; default AdamW(0.9, 0.95, 1e-8, wd 0.1).
    #[config(default = "OptimizerKind::adamw()")]
    pub optimizer: OptimizerKind,
    /// Learning-rate schedule; default constant without warmup.
    #[config(default = "LrSchedule::Constant { warmup_steps: 0 }")]
    pub schedule: LrSchedule,
    /// Gradient clipping; default none.
    #[config(default = "None")]
    pub grad_clip: Option<GradClip>,
    /// Micro-batches whose gradients are averaged into one optimizer step.
    #[config(default = 1)]
    pub grad_accum: usize,
    /// Evaluate every this many steps (and at the end); 0 evaluates only at the end.
    #[config(default = 0)]
    pub eval_every: usize,
    /// Checkpoint every this many steps (and at the end); 0 checkpoints only at the end.
    #[config(default = 0)]
    pub checkpoint_every: usize,
    /// How many of the newest checkpoints to keep on disk.
    #[config(default = 2)]
    pub keep_checkpoints: usize,
}

impl TrainerConfig {
    /// Rejects configurations that cannot train.
    pub fn validate(&self) -> crate::Result<()> {
        if self.max_steps == 0 {
            return Err(Error::InvalidConfig("max_steps must be at least 1".into()));
        }
        if self.grad_accum == 0 {
            return Err(Error::InvalidConfig("grad_accum must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::InvalidConfig(format!(
                "lr {} must be finite and non-negative",
                self.lr
            )));
        }
        if self.keep_checkpoints == 0 {
            return Err(Error::InvalidConfig(
                "keep_checkpoints must be at least 1".into(),
            ));
        }
        if let Some(GradClip::GlobalNorm(v) | GradClip::PerTensorNorm(v) | GradClip::Value(v)) =
            &self.grad_clip
            && !(v.is_finite() && *v > 0.0)
        {
            return Err(Error::InvalidConfig(format!(
                "clipping threshold {v} must be positive"
            )));
        }
        self.schedule.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_rises_linearly_to_the_peak() {
        let s = LrSchedule::Constant { warmup_steps: 4 };
        let lrs: Vec<f64> = (0..6).map(|i| s.lr_at(i, 10, 1.0)).collect();
        assert_eq!(lrs, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn cosine_ends_at_the_minimum_ratio() {
        let s = LrSchedule::WarmupCosine {
            warmup_steps: 2,
            min_ratio: 0.1,
        };
        assert!((s.lr_at(2, 12, 2.0) - 2.0).abs() < 1e-12);
        assert!((s.lr_at(12, 12, 2.0) - 0.2).abs() < 1e-12);
        let mid = s.lr_at(7, 12, 2.0);
        assert!((mid - 1.1).abs() < 1e-12, "{mid}");
    }

    #[test]
    fn deepseek_step_decay_multiplies_at_80_and_90_percent() {
        let s = LrSchedule::deepseek(0);
        assert_eq!(s.lr_at(79, 100, 1.0), 1.0);
        assert!((s.lr_at(80, 100, 1.0) - 0.316).abs() < 1e-12);
        assert!((s.lr_at(89, 100, 1.0) - 0.316).abs() < 1e-12);
        assert!((s.lr_at(90, 100, 1.0) - 0.316 * 0.316).abs() < 1e-12);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(TrainerConfig::new(0).validate().is_err());
        assert!(TrainerConfig::new(5).with_grad_accum(0).validate().is_err());
        assert!(
            TrainerConfig::new(5)
                .with_grad_clip(Some(GradClip::GlobalNorm(-1.0)))
                .validate()
                .is_err()
        );
        assert!(TrainerConfig::new(5).validate().is_ok());
    }
}
