//! fin-news hot paths: the rule-based event extractor over a news stream, trade-window features
//! of every bar of a series, one SSPM / MSSPM training step (batch 32, 64 tokens, 6 trade
//! steps) and MSSPM's Viterbi decoding.
//!
//! `cargo bench -p benches --bench fin_news`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fin_news::events::EventDictionary;
use fin_news::model::{EventInput, SspmConfig, StockBatch};
use fin_news::synthetic::{StockMarketConfig, stock_market};
use fin_news::trade::{WindowConfig, trade_window};

fn extraction_and_windows(c: &mut Criterion) {
    let market = stock_market(&StockMarketConfig {
        days: 60,
        ..Default::default()
    })
    .unwrap();
    let dict = EventDictionary::embedded();
    let mut g = c.benchmark_group("fin_news_data");
    g.throughput(Throughput::Elements(market.news.len() as u64));
    g.bench_function("extract_events_600_items", |b| {
        b.iter(|| {
            market
                .news
                .iter()
                .map(|n| dict.extract(&n.text).events.len())
                .sum::<usize>()
        })
    });
    let s = &market.series[0];
    let w = WindowConfig {
        steps: 6,
        bars_per_step: 2,
    };
    g.throughput(Throughput::Elements(s.len() as u64));
    g.bench_function("trade_windows_480_bars", |b| {
        b.iter(|| {
            (0..s.len())
                .filter_map(|i| trade_window(s, s.end(i), w).unwrap())
                .count()
        })
    });
    g.finish();
}

fn batch(d: &Device, n_tags: usize) -> StockBatch {
    let (b, s, steps, f) = (32, 64, 6, 24);
    StockBatch {
        ids: Tensor::<2, Int>::random([b, s], Distribution::Uniform(4.0, 900.0), d),
        mask: Tensor::ones([b, s], d),
        tags: Tensor::<2, Int>::random([b, s], Distribution::Uniform(0.0, n_tags as f64), d),
        trade: Tensor::random([b, steps, f], Distribution::Normal(0.0, 1.0), d),
        labels: Tensor::<1, Int>::random([b], Distribution::Uniform(0.0, 2.0), d),
    }
}

fn models(c: &mut Criterion) {
    let d = benches::bench_device().autodiff();
    let n_tags = EventDictionary::embedded().fine_tags().len();
    let mut g = c.benchmark_group("fin_news_sspm_b32_s64_d64");
    g.sample_size(10);
    for (name, crf) in [("sspm_train_step", false), ("msspm_train_step", true)] {
        let m = SspmConfig::new(1000, n_tags, 24)
            .with_events(EventInput::Fine)
            .with_crf(crf)
            .init(&d)
            .unwrap();
        let b = batch(&d, n_tags);
        g.bench_function(name, |bn| {
            bn.iter(|| {
                let (loss, _, _) = m.loss(&b).unwrap();
                let grads = loss.backward();
                d.sync().unwrap();
                grads
            })
        });
    }
    let dv = benches::bench_device();
    let m = SspmConfig::new(1000, n_tags, 24)
        .with_crf(true)
        .init(&dv)
        .unwrap();
    let b = batch(&dv, n_tags);
    g.bench_function("msspm_viterbi_tags", |bn| bn.iter(|| m.tag(&b).unwrap()));
    g.finish();
}

criterion_group!(benches, extraction_and_windows, models);
criterion_main!(benches);
