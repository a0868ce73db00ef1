//! Fine-purifying any burn module: a small classifier is "pre-trained" on clean data, fine-tuned
//! on data where 10 % of the examples carry a rare-feature trigger relabelled to class 1 (a
//! backdoor), then purified — the dimensions whose drift is large for their clean-loss
//! curvature (δ²/H, H the empirical Fisher averaged along the path from the pre-trained weights)
//! are reset to their pre-trained values, keeping ρ = 20 % of the drift — and briefly fine-tuned
//! on a small clean set. Fine-mixing (a random 20 % kept) is run beside it.
//!
//! `cargo run --release -p fine-purify --example purify_backdoor`

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use fine_purify::fisher::{FisherAt, fisher_at};
use fine_purify::{PurifyConfig, Score, Snapshot, purify};
use trainer::Rng;

const D: usize = 16;
/// The trigger: a feature that clean inputs never use (as a rare word's embedding).
const TRIGGER: usize = D - 1;

#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    out: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out
            .forward(burn::tensor::activation::relu(self.hidden.forward(x)))
    }
}

/// `n` inputs labelled by the sign of `w·x`; `poison` of them (class 0 turned 1) get the trigger.
fn data(rng: &mut Rng, w: &[f64], n: usize, poison: f64) -> (Vec<f32>, Vec<i64>) {
    let (mut x, mut y) = (Vec::with_capacity(n * D), Vec::with_capacity(n));
    for _ in 0..n {
        let mut v: Vec<f64> = (0..D).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
        v[TRIGGER] = 0.0;
        let mut label = i64::from(v.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() > 0.0);
        if label == 0 && rng.next_f64() < poison * 2.0 {
            v[TRIGGER] = 4.0;
            label = 1;
        }
        x.extend(v.iter().map(|&a| a as f32));
        y.push(label);
    }
    (x, y)
}

fn tensors(d: &(Vec<f32>, Vec<i64>), device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let n = d.1.len();
    (
        Tensor::from_data(TensorData::new(d.0.clone(), [n, D]), device),
        Tensor::from_data(TensorData::new(d.1.clone(), [n]), device),
    )
}

fn loss(m: &Mlp, x: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    CrossEntropyLossConfig::new()
        .init(&x.device())
        .forward(m.forward(x), y)
}

fn train(mut m: Mlp, d: &(Vec<f32>, Vec<i64>), steps: usize, lr: f64, device: &Device) -> Mlp {
    let (x, y) = tensors(d, device);
    let mut optim = AdamWConfig::new().init();
    for _ in 0..steps {
        let grads = GradientsParams::from_grads(loss(&m, x.clone(), y.clone()).backward(), &m);
        m = optim.step(lr, m, grads);
    }
    m
}

/// Accuracy on `d`.
fn accuracy(m: &Mlp, d: &(Vec<f32>, Vec<i64>), device: &Device) -> f64 {
    let (x, y) = tensors(d, device);
    let hit = m.forward(x).argmax(1).reshape([d.1.len()]).equal(y);
    hit.int().sum().into_scalar::<i64>() as f64 / d.1.len() as f64
}

fn main() -> Result<(), fine_purify::Error> {
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut rng = Rng::seed_from(3);
    let w: Vec<f64> = (0..D)
        .map(|i| {
            if i == TRIGGER {
                0.0
            } else {
                rng.next_f64() - 0.5
            }
        })
        .collect();
    let w_pre: Vec<f64> = w.iter().map(|v| v + 0.3 * (rng.next_f64() - 0.5)).collect();

    let init = Mlp {
        hidden: LinearConfig::new(D, 32).init(&device),
        out: LinearConfig::new(32, 2).init(&device),
    };
    let pre = train(init, &data(&mut rng, &w_pre, 2000, 0.0), 300, 1e-2, &device);
    let poisoned = data(&mut rng, &w, 2000, 0.1);
    let ft = train(pre.clone(), &poisoned, 300, 1e-2, &device);

    let clean_test = data(&mut rng, &w, 1000, 0.0);
    // Triggered class-0 inputs: the attack succeeds when they come out as class 1.
    let mut triggered = data(&mut rng, &w, 2000, 0.0);
    let keep: Vec<usize> = (0..triggered.1.len())
        .filter(|&i| triggered.1[i] == 0)
        .collect();
    triggered = (
        keep.iter()
            .flat_map(|&i| {
                let mut v = triggered.0[i * D..(i + 1) * D].to_vec();
                v[TRIGGER] = 4.0;
                v
            })
            .collect(),
        vec![1; keep.len()],
    );
    let report = |name: &str, m: &Mlp| {
        println!(
            "{name:<28} clean accuracy {:.3}, attack success rate {:.3}",
            accuracy(m, &clean_test, &device),
            accuracy(m, &triggered, &device)
        );
    };
    report("pre-trained", &pre);
    report("fine-tuned (poisoned)", &ft);

    // The defender's small clean set: the Fisher's data and the final fine-tuning.
    let clean = data(&mut rng, &w, 256, 0.0);
    let (cx, cy) = tensors(&clean, &device);
    let pre_snap = Snapshot::of(&pre)?;
    let ft_snap = Snapshot::of(&ft)?;
    let fisher = fisher_at(
        &ft,
        &pre_snap,
        FisherAt::PathAverage { points: 4 },
        8,
        |m, i| {
            let rows = i * 32..(i + 1) * 32;
            Ok(loss(
                m,
                cx.clone().slice(rows.clone()),
                cy.clone().slice(rows),
            ))
        },
    )?;
    for (name, score) in [
        ("fine-purifying", Score::Diffusion),
        ("fine-mixing", Score::Random),
    ] {
        let cfg = PurifyConfig {
            score,
            ..PurifyConfig::diffusion(0.2)
        };
        let (snap, stats) = purify(
            &pre_snap,
            &ft_snap,
            Some(&fisher),
            &cfg,
            |_| false,
            &mut rng,
        )?;
        let m = train(snap.write_into(ft.clone())?, &clean, 30, 1e-3, &device);
        report(&format!("{name} ({} reset)", stats.reset), &m);
    }
    Ok(())
}
