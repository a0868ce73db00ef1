//! A cascade of two complete BERT classifiers — a 1-layer and a 4-layer one, trained apart —
//! with batch-compacting inference: examples whose small-model confidence passes the threshold
//! leave the batch, the rest go on to the large model. The task: do the even positions of a
//! sequence (5–15 tokens, padded) hold more "low" tokens (ids below 20) than high ones? Prints accuracy against the
//! layer speed-up over the large model alone as the threshold moves, and the small model's ECE.
//!
//! `cargo run --release -p cascade --example two_member_cascade`

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use cascade::calibration::ece;
use cascade::{Cascade, Member, Pooling};
use plm::bert::{BertConfig, classification_loss};
use trainer::Rng;

const VOCAB: usize = 40;

/// A right-padded batch of `n` sequences with their labels.
fn batch(rng: &mut Rng, n: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>, Vec<usize>) {
    let lens: Vec<usize> = (0..n).map(|_| 5 + 2 * rng.below(6)).collect();
    let s = 15;
    let (mut ids, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for &l in &lens {
        let row: Vec<i64> = (0..l).map(|_| 1 + rng.below(VOCAB - 1) as i64).collect();
        // Only the tokens at even positions vote: the position matters, not just the counts.
        let low = row.iter().step_by(2).filter(|&&t| t < 20).count();
        labels.push(usize::from(low * 2 > l.div_ceil(2)));
        ids.extend(row.iter().copied().chain(std::iter::repeat_n(0, s - l)));
        mask.extend((0..s).map(|t| i64::from(t < l)));
    }
    (
        Tensor::from_data(TensorData::new(ids, [n, s]), device),
        Tensor::from_data(TensorData::new(mask, [n, s]), device),
        labels,
    )
}

fn train(layers: usize, rng: &mut Rng, device: &Device) -> Result<Member, plm::Error> {
    let bert = BertConfig::new(VOCAB, 32, layers, 4, 64)
        .with_max_position_embeddings(16)
        .init(device)?;
    let mut m = Member::new(bert, 2, Pooling::Mean, 0.0, device);
    let mut optim = AdamWConfig::new().init();
    for _ in 0..200 {
        let (ids, mask, y) = batch(rng, 32, device);
        let y: Vec<i64> = y.iter().map(|&c| c as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [32]), device);
        let loss = classification_loss(m.forward(ids, mask), y);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = optim.step(3e-3, m, grads);
    }
    Ok(m)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    device.seed(1);
    let mut rng = Rng::seed_from(1);
    let small = train(1, &mut rng, &device)?;
    let large = train(4, &mut rng, &device)?;
    // Inference without the autodiff graph.
    let cascade = Cascade::new(vec![small.valid(), large.valid()])?;
    let inference = Device::flex();
    let (ids, mask, labels) = batch(&mut rng, 1024, &inference);

    let all = cascade.forward_all(ids.clone(), mask.clone());
    let probs = burn::tensor::activation::softmax(all[0].clone(), 1);
    let conf: Vec<f32> = probs.clone().max_dim(1).into_data().try_to_vec()?;
    let pred: Vec<i64> = probs.argmax(1).into_data().convert::<i64>().try_to_vec()?;
    let correct: Vec<bool> = pred
        .iter()
        .zip(&labels)
        .map(|(&p, &y)| p as usize == y)
        .collect();
    let (small_ece, _) = ece(&conf, &correct, 10);
    println!("small model ECE (10 bins): {small_ece:.3}\n");

    println!("threshold | accuracy | answered by small | speed-up (layers)");
    for tau in [0.5, 0.8, 0.9, 0.95, 0.99, 1.0] {
        let out = cascade.infer(ids.clone(), mask.clone(), &[tau])?;
        let by_small = out.exit_at.iter().filter(|&&e| e == 0).count();
        println!(
            "{tau:>9.2} | {:>8.3} | {:>17.3} | {:.2}×",
            out.accuracy(&labels),
            by_small as f64 / labels.len() as f64,
            out.layer_speedup(4)
        );
    }
    Ok(())
}
