//! Foundation benches: a Llama decoder forward pass and one full training step (forward,
//! backward, AdamW) of the hello-lm quick model, on the backend selected by this crate's
//! features (flex by default).
//!
//! `cargo bench -p benches --bench foundation`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use burn::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use plm::llama::LlamaConfig;
use trainer::{BatchCtx, StepLoss, Task, Trainer, TrainerConfig};

fn device() -> Device {
    benches::bench_device()
}

fn tokens(b: usize, s: usize, device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..b * s).map(|i| (i * 37 % 256) as i64).collect();
    Tensor::from_data(TensorData::new(ids, [b, s]), device)
}

fn llama_forward(c: &mut Criterion) {
    let d = device();
    d.seed(0);
    // hello-lm full size: 4 layers, d_model 128, GQA 4/2, d_ff 344, 16 x 128 bytes.
    let m = LlamaConfig::new(256, 128, 4, 4, 2, 344)
        .with_max_seq_len(128)
        .init(&d)
        .expect("valid config");
    let x = tokens(16, 128, &d);
    c.bench_function("llama_forward_b16_s128_d128_l4", |bench| {
        bench.iter(|| {
            let out = m.forward(x.clone());
            d.sync().expect("device sync");
            out
        })
    });
}

struct Fixed(Tensor<2, Int>, Tensor<2, Int>);
impl Task<plm::llama::Llama> for Fixed {
    fn loss(
        &mut self,
        model: &plm::llama::Llama,
        _ctx: &mut BatchCtx<'_>,
    ) -> trainer::Result<StepLoss> {
        Ok(model.lm_loss(self.0.clone(), self.1.clone()).into())
    }
}

fn train_step(c: &mut Criterion) {
    let d = device().autodiff();
    d.seed(0);
    let cfg = LlamaConfig::new(256, 128, 4, 4, 2, 344).with_max_seq_len(128);
    let x = tokens(16, 128, &d);
    let y = tokens(16, 128, &d);
    let mut group = c.benchmark_group("trainer");
    group.sample_size(10);
    group.bench_function("train_step_b16_s128_d128_l4", |bench| {
        bench.iter_batched(
            || cfg.init(&d).expect("valid config"),
            |m| {
                Trainer::new(TrainerConfig::new(1), &d)
                    .fit(m, &mut Fixed(x.clone(), y.clone()))
                    .expect("training step")
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The largest GEMM of a MiniLM encoder at batch 32 × 128 tokens: `[4096, 384] × [384, 1536]`
/// (2.4 GFLOP); its rate bounds the encoder's (`benches/pytorch/matmul_bench.py` is the PyTorch side).
fn matmul_minilm_ffn(c: &mut Criterion) {
    let d = device();
    let a = Tensor::<2>::random([4096, 384], burn::tensor::Distribution::Default, &d);
    let b = Tensor::<2>::random([384, 1536], burn::tensor::Distribution::Default, &d);
    let mut g = c.benchmark_group("matmul");
    g.throughput(criterion::Throughput::Elements(2 * 4096 * 384 * 1536));
    g.bench_function("f32_4096x384x1536", |bench| {
        bench.iter(|| {
            let y = a.clone().matmul(b.clone());
            d.sync().expect("device sync");
            y
        })
    });
    // the same product as a MiniLM layer makes it: `plm::kernels::linear` (packed product, bias
    // written first) on `[32, 128, 384]`, against burn's `Linear::forward`
    let layer = burn::nn::LinearConfig::new(384, 1536).init(&d);
    let x = a.reshape([32, 128, 384]);
    g.bench_function("linear_32x128x384_to_1536_packed", |bench| {
        bench.iter(|| {
            let y = plm::kernels::linear(&layer, x.clone());
            d.sync().expect("device sync");
            y
        })
    });
    g.bench_function("linear_32x128x384_to_1536_burn", |bench| {
        bench.iter(|| {
            let y = layer.forward(x.clone());
            d.sync().expect("device sync");
            y
        })
    });
    g.finish();
}

/// MiniLM's attention on a 32 × 128 batch (12 heads of 32, every sequence's last 16 keys
/// padded): `plm::kernels::attention_rows` on the projections' rows against burn's fused op on
/// head-split views, the path the encoder took before.
fn attention_minilm(c: &mut Criterion) {
    let d = device();
    let (b, s, h, hd) = (32, 128, 12, 32);
    let x = || Tensor::<3>::random([b, s, h * hd], burn::tensor::Distribution::Default, &d);
    let (q, k, v) = (x(), x(), x());
    let hide: Vec<bool> = (0..b * s).map(|i| i % s >= s - 16).collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(hide, [b, s]), &d);
    let mut g = c.benchmark_group("attention");
    g.bench_function("rows_b32_s128_h12_d32", |bench| {
        bench.iter(|| {
            let y = plm::kernels::attention_rows(
                q.clone(),
                k.clone(),
                v.clone(),
                h,
                h,
                Some(mask.clone()),
                false,
            )
            .unwrap();
            d.sync().expect("device sync");
            y
        })
    });
    let heads = |t: Tensor<3>| t.reshape([b, s, h, hd]).swap_dims(1, 2);
    let mask4 = mask.clone().reshape([b, 1, 1, s]).expand([b, h, s, s]);
    g.bench_function("burn_fused_b32_s128_h12_d32", |bench| {
        bench.iter(|| {
            let y = burn::tensor::module::attention(
                heads(q.clone()),
                heads(k.clone()),
                heads(v.clone()),
                Some(mask4.clone()),
                None,
                burn::tensor::ops::AttentionModuleOptions::default(),
            )
            .swap_dims(1, 2)
            .reshape([b, s, h * hd]);
            d.sync().expect("device sync");
            y
        })
    });
    g.finish();
}

criterion_group!(
    foundation,
    llama_forward,
    train_step,
    matmul_minilm_ffn,
    attention_minilm
);
criterion_main!(foundation);
