//! The DeepSeekMoE layer at the shape: d_model 512, 64 routed + 2 shared experts of width
//! 256, top-6, 4096 tokens. Grouped dispatch (per expert, and padded into batched products)
//! against the dense masked reference, forward and forward + backward.
//!
//! `cargo bench -p benches --bench moe`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{Criterion, criterion_group, criterion_main};
use moe_arch::{Dispatch, MoeConfig, MoeOutput};

fn moe(c: &mut Criterion) {
    let cfg = MoeConfig::new(512, 64, 6, 256).with_n_shared(2);
    let mut g = c.benchmark_group("moe_d512_e64s2_top6_w256_t4096");
    g.sample_size(10);
    for train in [false, true] {
        let d = if train {
            benches::bench_device().autodiff()
        } else {
            benches::bench_device()
        };
        d.seed(0);
        let m = cfg.init(&d).unwrap();
        let padded = m.clone().with_dispatch(Dispatch::Padded);
        let x = Tensor::<3>::random([8, 512, 512], Distribution::Normal(0.0, 1.0), &d);
        let tag = if train { "fwd_bwd" } else { "fwd" };
        // Every iteration ends with a device sync (a GPU backend runs asynchronously); the
        // output stays alive until then. No copy back to the host, as in the PyTorch script.
        let finish = |out: MoeOutput| {
            if train {
                let _ = (out.output.sum() + out.aux_loss).backward();
            }
            d.sync().expect("device sync");
        };
        g.bench_function(format!("grouped_{tag}"), |b| {
            b.iter(|| finish(m.forward(x.clone(), None).unwrap()))
        });
        g.bench_function(format!("padded_{tag}"), |b| {
            b.iter(|| finish(padded.forward(x.clone(), None).unwrap()))
        });
        g.bench_function(format!("dense_{tag}"), |b| {
            b.iter(|| finish(m.forward_dense(x.clone(), None)))
        });
    }
    g.finish();
}

criterion_group!(moe_benches, moe);
criterion_main!(moe_benches);
