//! A DeepSeekMoE layer in your own model: build it (1 shared + 15 fine-grained routed experts,
//! 3 active per token), train it 100 steps to imitate a fixed random map, with the expert-level
//! balance loss, and print the routing statistics.
//!
//! `cargo run --release -p moe-arch --example deepseekmoe_layer`

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use moe_arch::MoeConfig;
use moe_arch::stats::RoutingStats;

fn main() -> Result<(), moe_arch::Error> {
    let device = Device::flex().autodiff();
    device.seed(0);
    let (d_model, n_experts, top_k) = (32, 15, 3);
    let mut layer = MoeConfig::new(d_model, n_experts, top_k, 16)
        .with_n_shared(1)
        .with_aux_alpha(0.01)
        .with_initializer_range(0.2)
        .init(&device)?;
    // The task: y = tanh(x W) for a fixed random W, on random inputs.
    let w = Tensor::<2>::random([d_model, d_model], Distribution::Normal(0.0, 0.3), &device);
    let mut optim = AdamWConfig::new().init();
    for step in 0..=100 {
        let x = Tensor::<3>::random([4, 16, d_model], Distribution::Normal(0.0, 1.0), &device);
        let target = x.clone().matmul(w.clone().unsqueeze_dim(0)).tanh();
        let out = layer.forward(x, None)?;
        let mse = (out.output - target).powi_scalar(2).mean();
        let loss = mse.clone() + out.aux_loss.clone();
        if step % 20 == 0 {
            let (m, a): (f32, f32) = (mse.into_scalar(), out.aux_loss.into_scalar());
            println!("step {step:>2}: mse {m:.4}, balance loss {a:.5}");
        }
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        layer = optim.step(1e-2, layer, grads);
    }
    // Routing of a fresh batch: each routed expert's share of the assignments and mean gate.
    let x = Tensor::<3>::random([4, 16, d_model], Distribution::Normal(0.0, 1.0), &device);
    let out = layer.forward(x, None)?;
    let stats = RoutingStats::from_routing(out.topk_idx, out.topk_weight, n_experts, None)?;
    println!(
        "{} assignments (64 tokens × top-{top_k})",
        stats.assignments
    );
    for (e, (share, gate)) in stats.token_share.iter().zip(&stats.mean_gate).enumerate() {
        println!("expert {e:>2}: share {share:.3}, mean gate {gate:.3}");
    }
    Ok(())
}
