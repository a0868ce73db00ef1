//! End-to-end behaviour of the training loop on a tiny regression model (flex CPU device).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use trainer::{
    BatchCtx, Error, GradClip, LrSchedule, Metrics, OptimizerKind, Record, StepLoss, Task, Trainer,
    TrainerConfig,
};

#[derive(Module, Debug)]
struct Mlp {
    first: Linear,
    second: Linear,
    dropout: Dropout,
    act: Relu,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Self {
            first: LinearConfig::new(4, 16).init(device),
            second: LinearConfig::new(16, 1).init(device),
            dropout: DropoutConfig::new(0.1).init(),
            act: Relu::new(),
        }
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.second.forward(
            self.dropout
                .forward(self.act.forward(self.first.forward(x))),
        )
    }
}

/// y = sum(sin(x)) over a fixed pool of 64 examples; batches of 8 drawn with the trainer RNG.
struct Regression {
    xs: Vec<[f32; 4]>,
    device: Device,
    batch: usize,
    fail_at: Option<(usize, FailKind)>,
}

#[derive(Clone, Copy)]
enum FailKind {
    Nan,
    Crash,
}

#[derive(Debug, thiserror::Error)]
#[error("simulated crash")]
struct Crash;

impl Regression {
    fn new(device: &Device) -> Self {
        let mut r = trainer::Rng::seed_from(99);
        let xs = (0..64)
            .map(|_| std::array::from_fn(|_| (r.next_f64() * 4.0 - 2.0) as f32))
            .collect();
        Self {
            xs,
            device: device.clone(),
            batch: 8,
            fail_at: None,
        }
    }
    fn tensors(&self, idx: &[usize]) -> (Tensor<2>, Tensor<2>) {
        let x: Vec<f32> = idx.iter().flat_map(|&i| self.xs[i]).collect();
        let y: Vec<f32> = idx
            .iter()
            .map(|&i| self.xs[i].iter().map(|v| v.sin()).sum())
            .collect();
        (
            Tensor::from_data(TensorData::new(x, [idx.len(), 4]), &self.device),
            Tensor::from_data(TensorData::new(y, [idx.len(), 1]), &self.device),
        )
    }
}

impl Task<Mlp> for Regression {
    fn loss(&mut self, model: &Mlp, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        if let Some((step, FailKind::Crash)) = self.fail_at
            && ctx.step == step
        {
            return Err(Error::task(Crash));
        }
        let idx: Vec<usize> = (0..self.batch)
            .map(|_| ctx.rng.below(self.xs.len()))
            .collect();
        let (x, y) = self.tensors(&idx);
        let mut loss = (model.forward(x) - y).powi_scalar(2).mean();
        if let Some((step, FailKind::Nan)) = self.fail_at
            && ctx.step == step
        {
            loss = loss * f32::NAN;
        }
        Ok(loss.into())
    }

    fn evaluate(&mut self, model: &Mlp, _step: usize) -> trainer::Result<Metrics> {
        let idx: Vec<usize> = (0..self.xs.len()).collect();
        let (x, y) = self.tensors(&idx);
        let x = x.without_autodiff();
        let y = y.without_autodiff();
        let mse: f32 = (model.forward(x) - y).powi_scalar(2).mean().into_scalar();
        Ok([("valid_mse".to_string(), mse as f64)].into())
    }
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn model(seed: u64) -> Mlp {
    let d = device();
    d.seed(seed);
    Mlp::new(&d)
}

fn config() -> TrainerConfig {
    TrainerConfig::new(12)
        .with_lr(1e-2)
        .with_seed(5)
        .with_schedule(LrSchedule::WarmupCosine {
            warmup_steps: 2,
            min_ratio: 0.1,
        })
        .with_eval_every(4)
}

fn flat_params(m: &Mlp) -> Vec<f32> {
    let mut out = Vec::new();
    for p in [
        m.first.weight.val().flatten::<1>(0, 1),
        m.second.weight.val().flatten::<1>(0, 1),
    ] {
        out.extend(p.into_data().try_to_vec::<f32>().unwrap());
    }
    out
}

fn losses(records: &[Record]) -> Vec<f64> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Train { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect()
}

#[test]
fn same_seed_gives_identical_losses_and_weights() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let a = Trainer::new(config(), &d)
        .fit(model(1), &mut Regression::new(&d))
        .unwrap();
    let b = Trainer::new(config(), &d)
        .fit(model(1), &mut Regression::new(&d))
        .unwrap();
    assert_eq!(losses(&a.records), losses(&b.records));
    assert_eq!(flat_params(&a.model), flat_params(&b.model));
    let l = losses(&a.records);
    assert!(
        l.last().unwrap() < l.first().unwrap(),
        "loss did not fall: {l:?}"
    );
    let c = Trainer::new(config().with_seed(6), &d)
        .fit(model(1), &mut Regression::new(&d))
        .unwrap();
    assert_ne!(losses(&a.records), losses(&c.records));
}

#[test]
fn resumed_run_matches_an_uninterrupted_run() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let full_dir = tempfile::tempdir().unwrap();
    let cfg = config().with_checkpoint_every(3);
    let full = Trainer::new(cfg.clone(), &d)
        .with_run_dir(full_dir.path())
        .fit(model(1), &mut Regression::new(&d))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut crashing = Regression::new(&d);
    crashing.fail_at = Some((7, FailKind::Crash));
    let err = Trainer::new(cfg.clone(), &d)
        .with_run_dir(dir.path())
        .fit(model(1), &mut crashing)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Task(_)), "{err}");
    let latest = trainer::latest_checkpoint(dir.path()).unwrap().unwrap();
    assert!(latest.ends_with("step-000006"), "{}", latest.display());

    // A different initial model: the checkpoint must replace its weights.
    let resumed = Trainer::new(cfg, &d)
        .with_run_dir(dir.path())
        .resume(model(2), &mut Regression::new(&d))
        .unwrap();
    assert_eq!(resumed.resumed_from, Some(6));
    assert_eq!(flat_params(&resumed.model), flat_params(&full.model));
    assert_eq!(losses(&resumed.records), losses(&full.records));
    let on_disk = trainer::metrics::read_records(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(on_disk, full.records);
}

#[test]
fn frozen_parameters_stay_bit_identical() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let m = model(3);
    let before_first = m
        .first
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let before_first_b = m
        .first
        .bias
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let before_second = m
        .second
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    // AdamW with weight decay: a frozen parameter that got decayed would change too.
    let out = Trainer::new(config().with_optimizer(OptimizerKind::adamw()), &d)
        .with_trainable(|p| p.starts_with("second."))
        .fit(m, &mut Regression::new(&d))
        .unwrap();
    assert_eq!(out.trainable.params().len(), 2);
    let after_first = out
        .model
        .first
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let after_first_b = out
        .model
        .first
        .bias
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let after_second = out
        .model
        .second
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(before_first, after_first);
    assert_eq!(before_first_b, after_first_b);
    assert_ne!(before_second, after_second);
}

#[test]
fn adapter_holds_only_trainable_parameters_and_round_trips() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let out = Trainer::new(config(), &d)
        .with_trainable(|p| p.starts_with("second."))
        .fit(model(3), &mut Regression::new(&d))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.bpk");
    out.trainable.save_adapter(&out.model, &path).unwrap();
    let base = model(3);
    let first_before = base
        .first
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let loaded = trainer::load_adapter(base, &path).unwrap();
    assert_eq!(
        loaded
            .second
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
        out.model
            .second
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    );
    assert_eq!(
        loaded
            .first
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
        first_before
    );
}

#[test]
fn nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    let mut task = Regression::new(&d);
    task.fail_at = Some((4, FailKind::Nan));
    let err = Trainer::new(config().with_checkpoint_every(2), &d)
        .with_run_dir(dir.path())
        .fit(model(1), &mut task)
        .err()
        .unwrap();
    match err {
        Error::NonFiniteLoss { step, value } => {
            assert_eq!(step, 5);
            assert!(value.is_nan());
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err_free_resume(dir.path(), &d));
}

fn err_free_resume(dir: &std::path::Path, d: &Device) -> bool {
    let latest = trainer::latest_checkpoint(dir).unwrap().unwrap();
    assert!(latest.ends_with("step-000004"));
    Trainer::new(config(), d)
        .with_run_dir(dir)
        .resume(model(1), &mut Regression::new(d))
        .is_ok()
}

#[test]
fn corrupt_checkpoint_is_reported_not_loaded() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(
        TrainerConfig {
            max_steps: 3,
            ..config()
        },
        &d,
    )
    .with_run_dir(dir.path())
    .fit(model(1), &mut Regression::new(&d))
    .unwrap();
    let latest = trainer::latest_checkpoint(dir.path()).unwrap().unwrap();
    let f = latest.join("model.bpk");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let err = Trainer::new(config(), &d)
        .with_run_dir(dir.path())
        .resume(model(1), &mut Regression::new(&d))
        .err()
        .unwrap();
    assert!(matches!(err, Error::CorruptCheckpoint { .. }), "{err}");
}

#[test]
fn resume_without_checkpoint_is_an_error() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::new(config(), &d)
        .with_run_dir(dir.path())
        .resume(model(1), &mut Regression::new(&d))
        .err()
        .unwrap();
    assert!(matches!(err, Error::NoCheckpoint(_)), "{err}");
}

#[test]
fn global_norm_clipping_bounds_the_sgd_update() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let m = model(4);
    let before = flat_params(&m);
    let cfg = TrainerConfig::new(1)
        .with_lr(1.0)
        .with_optimizer(OptimizerKind::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
        })
        .with_grad_clip(Some(GradClip::GlobalNorm(0.05)));
    let mut task = Regression::new(&d);
    let out = Trainer::new(cfg, &d).fit(m, &mut task).unwrap();
    let after = flat_params(&out.model);
    // The two weight matrices are part of all parameters, so their update norm is a lower bound.
    let step_norm: f32 = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        .sqrt();
    assert!(step_norm > 0.0 && step_norm <= 0.05 * 1.001, "{step_norm}");
    match &out.records[0] {
        Record::Train { grad_norm, .. } => assert!(*grad_norm > 0.05, "{grad_norm}"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn gradient_accumulation_averages_micro_batches() {
    let _serial = testkit::device_rng_lock();
    // Two micro-batches of 4 with SGD equal one batch of the same 8 examples.
    struct Fixed(Regression, Vec<usize>);
    impl Task<Mlp> for Fixed {
        fn loss(&mut self, model: &Mlp, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
            let per = self.1.len() / if self.0.batch == 4 { 2 } else { 1 };
            let idx = &self.1[ctx.micro * per..(ctx.micro + 1) * per];
            let (x, y) = self.0.tensors(idx);
            Ok((model.forward(x) - y).powi_scalar(2).mean().into())
        }
    }
    let d = device();
    let sgd = OptimizerKind::Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let idx: Vec<usize> = (0..8).collect();
    let mut one = Regression::new(&d);
    one.batch = 8;
    let mut m1 = model(5);
    m1.dropout = DropoutConfig::new(0.0).init();
    let a = Trainer::new(
        TrainerConfig::new(1)
            .with_lr(0.1)
            .with_optimizer(sgd.clone()),
        &d,
    )
    .fit(m1, &mut Fixed(one, idx.clone()))
    .unwrap();
    let mut two = Regression::new(&d);
    two.batch = 4;
    let mut m2 = model(5);
    m2.dropout = DropoutConfig::new(0.0).init();
    let b = Trainer::new(
        TrainerConfig::new(1)
            .with_lr(0.1)
            .with_optimizer(sgd)
            .with_grad_accum(2),
        &d,
    )
    .fit(m2, &mut Fixed(two, idx))
    .unwrap();
    for (x, y) in flat_params(&a.model).iter().zip(flat_params(&b.model)) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}

#[test]
fn learning_rate_groups_scale_the_update_of_their_parameters_only() {
    let _serial = testkit::device_rng_lock();
    struct Fixed(Regression);
    impl Task<Mlp> for Fixed {
        fn loss(&mut self, model: &Mlp, _ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
            let (x, y) = self.0.tensors(&(0..8).collect::<Vec<_>>());
            Ok((model.forward(x) - y).powi_scalar(2).mean().into())
        }
    }
    let d = device();
    let fresh = || {
        let mut m = model(3);
        m.dropout = DropoutConfig::new(0.0).init();
        m
    };
    let w = |l: &Linear| -> Vec<f32> {
        l.weight
            .val()
            .flatten::<1>(0, 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    // the gradient of the fixed batch, by hand
    let m = fresh();
    let (x, y) = Regression::new(&d).tensors(&(0..8).collect::<Vec<_>>());
    let grads = (m.forward(x) - y).powi_scalar(2).mean().backward();
    let g_first = m.first.weight.grad(&grads).unwrap().flatten::<1>(0, 1);
    let g_second = m.second.weight.grad(&grads).unwrap().flatten::<1>(0, 1);
    let g_first = g_first.into_data().try_to_vec::<f32>().unwrap();
    let g_second = g_second.into_data().try_to_vec::<f32>().unwrap();
    let (f0, s0) = (w(&m.first), w(&m.second));
    let lr = 1e-2;
    let sgd = OptimizerKind::Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
    };
    // one step from the fresh weights with the second layer's rate scaled
    let step = |opt: OptimizerKind, scale_second: f64| {
        let cfg = TrainerConfig::new(1).with_lr(lr).with_optimizer(opt);
        let out = Trainer::new(cfg, &d)
            .with_lr_scale(move |path| {
                if path.starts_with("second") {
                    scale_second
                } else {
                    1.0
                }
            })
            .fit(fresh(), &mut Fixed(Regression::new(&d)))
            .unwrap();
        (w(&out.model.first), w(&out.model.second))
    };
    for (scale_second, label) in [(1.0, "plain"), (10.0, "scaled")] {
        let (first, second) = step(sgd.clone(), scale_second);
        for (name, before, after, g, scale) in [
            ("first", &f0, first, &g_first, 1.0),
            ("second", &s0, second, &g_second, scale_second),
        ] {
            for ((b, a), g) in before.iter().zip(&after).zip(g.iter()) {
                let want = b - (lr * scale) as f32 * g;
                assert!(
                    (a - want).abs() <= 1e-6 + 1e-4 * want.abs(),
                    "{label} {name}: {a} vs {want}"
                );
            }
        }
    }
    // AdamW's first step is lr · (m̂ / (√v̂ + ε) + wd · w): ten times the rate, ten times the step
    let adamw = |scale_second: f64| step(OptimizerKind::adamw(), scale_second);
    let ((fa, sa), (fb, sb)) = (adamw(1.0), adamw(10.0));
    assert_eq!(fa, fb);
    for ((before, a), b) in s0.iter().zip(&sa).zip(&sb) {
        let (da, db) = (a - before, b - before);
        assert!(
            da.abs() > 1e-4 && (10.0 * da - db).abs() <= 1e-5 + 1e-3 * db.abs(),
            "{da} {db}"
        );
    }
    let bad = Trainer::new(TrainerConfig::new(1), &d)
        .with_lr_scale(|_| -1.0)
        .fit(fresh(), &mut Fixed(Regression::new(&d)));
    assert!(bad.is_err());
}

#[derive(Module, Debug)]
struct TwoMembers {
    a: Linear,
    b: Linear,
}

/// After one SGD step on a loss that reads only member `b`: how far `a` moved.
fn step_moves_a(b_from_a: impl Fn(Linear) -> Linear) -> f32 {
    use burn::optim::{GradientsParams, SgdConfig};
    let d = Device::flex().autodiff();
    d.seed(5);
    let a = LinearConfig::new(3, 2).init(&d);
    let m = TwoMembers {
        b: b_from_a(a.clone()),
        a,
    };
    let before = m.a.weight.val().into_data().try_to_vec::<f32>().unwrap();
    let x = Tensor::<2>::ones([4, 3], &d);
    let loss = m.b.forward(x).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &m);
    let mut opt = SgdConfig::new().init();
    let m = opt.step(0.5, m, grads);
    let after = m.a.weight.val().into_data().try_to_vec::<f32>().unwrap();
    before
        .iter()
        .zip(&after)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_fresh_copy_trains_apart_where_a_clone_is_tied() {
    // A clone shares ids and leaves: `b`'s gradient lands on `a`, which the loss never read.
    assert!(step_moves_a(|a| a) > 0.1);
    // A fresh copy starts equal but is its own parameter set.
    assert_eq!(step_moves_a(trainer::params::fresh_copy), 0.0);
    let d = Device::flex();
    let a = LinearConfig::new(3, 2).init(&d);
    let c = trainer::params::fresh_copy(a.clone());
    assert_ne!(a.weight.id, c.weight.id);
    assert_eq!(
        a.weight.val().into_data().try_to_vec::<f32>().unwrap(),
        c.weight.val().into_data().try_to_vec::<f32>().unwrap()
    );
}

#[test]
fn a_saved_module_loads_back_and_a_different_shape_is_an_error() {
    let _rng = testkit::device_rng_lock();
    let d = Device::flex();
    d.seed(9);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bpk");
    let a = LinearConfig::new(3, 2).init(&d);
    trainer::params::save_module(&a, &path).unwrap();
    let b = trainer::params::load_module(LinearConfig::new(3, 2).init(&d), &path).unwrap();
    assert_eq!(
        a.weight.val().into_data().try_to_vec::<f32>().unwrap(),
        b.weight.val().into_data().try_to_vec::<f32>().unwrap()
    );
    assert!(trainer::params::load_module(LinearConfig::new(4, 2).init(&d), &path).is_err());
    assert!(trainer::params::load_module(a, &dir.path().join("missing.bpk")).is_err());
}

/// A loss that reads only the first layer (frozen below), as a batch whose tokens reach none of
/// the trainable routed experts.
struct FirstLayerOnly(Device);

impl Task<Mlp> for FirstLayerOnly {
    fn loss(&mut self, model: &Mlp, _ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let x = Tensor::<2>::ones([2, 4], &self.0);
        Ok(model.first.forward(x).powi_scalar(2).mean().into())
    }
}

#[test]
fn a_step_in_which_no_trainable_parameter_takes_part_updates_nothing() {
    let _serial = testkit::device_rng_lock();
    let d = device();
    let m = model(4);
    let before = flat_params(&m);
    let out = Trainer::new(config().with_optimizer(OptimizerKind::adamw()), &d)
        .with_trainable(|p| p.starts_with("second."))
        .fit(m, &mut FirstLayerOnly(d.clone()))
        .unwrap();
    assert_eq!(flat_params(&out.model), before);
    let l = losses(&out.records);
    assert_eq!(l.len(), 12);
    assert!(l.iter().all(|v| v.is_finite() && *v > 0.0), "{l:?}");
}

/// A materialised model keeps the weights of the seed it was built under, whatever reseeding
/// comes before its first use; without it burn would draw them at that first use.
#[test]
fn materialise_draws_the_weights_when_the_model_is_built() {
    let _serial = testkit::device_rng_lock();
    let device = Device::flex();
    let weights = |m: &Linear| m.weight.val().into_data();
    device.seed(1);
    let reference = LinearConfig::new(8, 4).init(&device);
    let reference = weights(&reference);
    device.seed(1);
    let kept = trainer::params::materialise(LinearConfig::new(8, 4).init(&device));
    device.seed(2);
    assert_eq!(weights(&kept), reference);
}
