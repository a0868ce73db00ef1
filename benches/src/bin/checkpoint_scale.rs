//! Memory and time of a real-scale DeepSeek checkpoint, stage by stage, on one process:
//!
//! ```text
//! cargo run --release -p benches --bin checkpoint-scale -- DIR DTYPE STAGES [SEQ]
//!   DIR     an HF deepseek_v2 / deepseek_v3 folder (e.g. made by
//!           benches/scale/generate_v2_lite_2layer.py)
//!   DTYPE   f32 | bf16: the in-memory dtype of the loaded weights
//!   STAGES  comma-separated, in order: load, forward, scores, esft
//!   SEQ     tokens per sequence (default 512)
//! ```
//!
//! - `load`: the checkpoint into memory;
//! - `forward`: one sequence of SEQ tokens, no gradients;
//! - `scores`: ESFT-Token relevance over 2 batches of 2 × SEQ/2 tokens, then the experts by
//!   the paper's p = 0.2;
//! - `esft`: 3 training steps (AdamW, LM loss on 2 × SEQ/2 tokens) of the selected experts,
//!   cast to f32, with everything else frozen in DTYPE.
//!
//! After each stage it prints a JSON line: seconds, the process's peak resident memory so far
//! (`VmHWM`) and current (`VmRSS`) in bytes, and stage facts. Peak memory is per process, so
//! measure each stage list in its own run (`load` alone, then `load,forward`, ...). Linux only
//! (reads `/proc/self/status`).

use std::path::Path;
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::DType;
use esft::{ExpertConfig, MoeModel, ScoreAccumulator, SelectionConfig};
use moe_arch::deepseek_v2::DeepseekV2Lm;
use plm::checkpoint::{LoadDtype, Weights};
use serde_json::json;

fn status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

fn report(stage: &str, t: Instant, extra: serde_json::Value) {
    let mut v = json!({
        "stage": stage,
        "seconds": t.elapsed().as_secs_f64(),
        "peak_rss_bytes": status("VmHWM:"),
        "rss_bytes": status("VmRSS:"),
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{v}");
}

/// Bytes the model's parameters occupy, and how many are held in each dtype.
fn param_bytes(model: &DeepseekV2Lm) -> (u64, serde_json::Value) {
    let mut by = std::collections::BTreeMap::<String, u64>::new();
    let mut bytes = 0u64;
    struct V<'a>(&'a mut std::collections::BTreeMap<String, u64>, &'a mut u64);
    impl burn::module::ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            let t = p.val();
            let n = t.shape().num_elements() as u64;
            *self.0.entry(format!("{:?}", t.dtype())).or_insert(0) += n;
            *self.1 += n * t.dtype().size() as u64;
        }
    }
    model.visit(&mut V(&mut by, &mut bytes));
    (bytes, json!(by))
}

fn ids(b: usize, s: usize, vocab: usize, salt: usize, d: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = (0..b * s)
        .map(|i| ((i * 7919 + salt * 104_729) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [b, s]), d)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: checkpoint-scale DIR f32|bf16 STAGES [SEQ]".into());
    }
    let dir = Path::new(&args[1]);
    let dtype: LoadDtype = args[2].parse()?;
    let stages: Vec<&str> = args[3].split(',').collect();
    let seq: usize = args.get(4).map_or(Ok(512), |s| s.parse())?;
    let device = Device::flex().autodiff();

    let t = Instant::now();
    let weights = Weights::open(dir)?;
    let disk = weights.n_bytes();
    // Loaded on the autodiff device with no parameter tracked: forward passes keep no graph,
    // and the ESFT stage turns tracking on for its experts only.
    let model = DeepseekV2Lm::load_hf_dtype(dir, dtype, &device)?;
    let all: std::collections::HashSet<_> = trainer::params::inventory(&model)
        .into_iter()
        .map(|p| p.id)
        .collect();
    let mut model = trainer::params::set_require_grad(model, &all, false);
    let (bytes, by_dtype) = param_bytes(&model);
    report(
        "load",
        t,
        json!({"dtype": dtype.to_string(), "bytes_on_disk": disk, "param_bytes": bytes,
               "params_by_dtype": by_dtype}),
    );
    let vocab = model.embed_tokens.weight.dims()[0];
    let mut cfg: Option<ExpertConfig> = None;
    for stage in stages.iter().skip_while(|s| **s == "load") {
        let t = Instant::now();
        match *stage {
            "forward" => {
                let out = model.forward(ids(1, seq, vocab, 0, &device), None)?;
                let [_, _, v] = out.logits.dims();
                let _ = out
                    .logits
                    .slice(s![.., seq - 1..seq, ..])
                    .reshape([v])
                    .into_data();
                report("forward", t, json!({"tokens": seq}));
            }
            "scores" => {
                let mut acc = ScoreAccumulator::new();
                let n_experts = model.moe_layers().first().map_or(0, |l| l.n_experts);
                for batch in 0..2 {
                    let out =
                        model.forward_moe(ids(2, seq / 2, vocab, batch + 1, &device), None)?;
                    acc.add(&out.routing, None, 2, seq / 2, n_experts)?;
                }
                let scores = acc.finish();
                let chosen = ExpertConfig::select(&scores, &SelectionConfig::token())?;
                report(
                    "scores",
                    t,
                    json!({"tokens": 2 * seq, "experts_per_layer": chosen.mean_experts_per_layer()}),
                );
                cfg = Some(chosen);
            }
            "esft" => {
                let chosen = cfg
                    .clone()
                    .ok_or("the esft stage needs the scores stage first")?;
                let trainable = |p: &str| chosen.is_trainable(p);
                let m = trainer::params::cast_where(model.clone(), DType::F32, trainable);
                let ids_on: std::collections::HashSet<_> = trainer::params::inventory(&m)
                    .into_iter()
                    .filter(|p| trainable(&p.path))
                    .map(|p| p.id)
                    .collect();
                let n_train: usize = trainer::params::inventory(&m)
                    .iter()
                    .filter(|p| trainable(&p.path))
                    .map(|p| p.numel())
                    .sum();
                let mut m = trainer::params::set_require_grad(m, &ids_on, true);
                let mut optim = AdamWConfig::new().init();
                let mut step_secs = Vec::new();
                let mut losses = Vec::new();
                for step in 0..3 {
                    let ts = Instant::now();
                    let x = ids(2, seq / 2 + 1, vocab, step + 10, &device);
                    let inp = x.clone().slice(s![.., 0..seq / 2]);
                    let tgt = x.slice(s![.., 1..seq / 2 + 1]);
                    let out = m.forward(inp, None)?;
                    let loss = plm::llama::cross_entropy(out.logits.cast(DType::F32), tgt);
                    losses.push(loss.clone().into_scalar::<f32>());
                    let grads = GradientsParams::from_grads(loss.backward(), &m);
                    m = optim.step(1e-4, m, grads);
                    step_secs.push(ts.elapsed().as_secs_f64());
                }
                let (bytes, by_dtype) = param_bytes(&m);
                report(
                    "esft",
                    t,
                    json!({"trainable_params": n_train, "param_bytes": bytes,
                           "params_by_dtype": by_dtype, "step_seconds": step_secs,
                           "losses": losses, "tokens_per_step": seq}),
                );
                model = m;
            }
            other => return Err(format!("unknown stage '{other}'").into()),
        }
    }
    Ok(())
}
