//! ESFT on a DeepSeekMoE model in your own code: pretrain a small model on general sequences,
//! score its routed experts' relevance to a new task from ordinary forward passes (ESFT-Token),
//! select the experts that cover p = 0.2 of the task's routing, fine-tune only those, and save
//! them as an adapter.
//!
//! `cargo run --release -p esft --example expert_selection`

use burn::prelude::*;
use esft::{ExpertConfig, MoeModel, ScoreAccumulator, SelectionConfig, save_adapter};
use moe_arch::deepseek::{DeepseekHfConfig, DeepseekLm, MoeHfFields};
use trainer::{BatchCtx, Rng, StepLoss, Task, Trainer, TrainerConfig};

const VOCAB: usize = 64;
const SEQ: usize = 16;
const BATCH: usize = 8;
const EXPERTS: usize = 16;

/// Sequences `a, a+step, a+2·step, …` mod 64, with `step` drawn from `steps`.
fn progressions(rng: &mut Rng, steps: &[usize], device: &Device) -> Tensor<2, Int> {
    let mut ids = Vec::with_capacity(BATCH * SEQ);
    for _ in 0..BATCH {
        let (a, step) = (rng.below(VOCAB), steps[rng.below(steps.len())]);
        ids.extend((0..SEQ).map(|t| ((a + t * step) % VOCAB) as i64));
    }
    Tensor::from_data(TensorData::new(ids, [BATCH, SEQ]), device)
}

/// Next-token loss plus the balance loss.
fn lm_loss(model: &DeepseekLm, x: Tensor<2, Int>) -> Result<Tensor<1>, moe_arch::Error> {
    let out = model.forward_moe(x.clone(), None)?;
    let logits = out.logits.slice(s![.., 0..SEQ - 1, ..]);
    Ok(plm::llama::cross_entropy(logits, x.slice(s![.., 1..SEQ])) + out.aux_loss)
}

struct Progressions {
    steps: Vec<usize>,
    device: Device,
}

impl Task<DeepseekLm> for Progressions {
    fn loss(&mut self, model: &DeepseekLm, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let x = progressions(ctx.rng, &self.steps, &self.device);
        Ok(lm_loss(model, x).map_err(trainer::Error::task)?.into())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    device.seed(0);
    let config = DeepseekHfConfig {
        vocab_size: VOCAB,
        hidden_size: 32,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: None,
        intermediate_size: 64,
        // 16 routed experts of width 16 (4 active) + 1 shared; the first layer dense.
        moe: MoeHfFields {
            first_k_dense_replace: 1,
            aux_loss_alpha: Some(0.01),
            seq_aux: Some(true),
            ..MoeHfFields::new(Some(EXPERTS), 1, 4, 16)
        },
        rms_norm_eps: Some(1e-6),
        rope_theta: None,
        max_position_embeddings: Some(SEQ),
    };
    let mut general = Progressions {
        steps: vec![1, 2],
        device: device.clone(),
    };
    let mut task = Progressions {
        steps: vec![5],
        device: device.clone(),
    };
    let mut rng = Rng::seed_from(1);
    let task_eval = progressions(&mut rng, &[5], &device);
    let general_eval = progressions(&mut rng, &[1, 2], &device);
    let losses = |m: &DeepseekLm| -> Result<(f32, f32), moe_arch::Error> {
        Ok((
            lm_loss(m, task_eval.clone())?.into_scalar(),
            lm_loss(m, general_eval.clone())?.into_scalar(),
        ))
    };

    // 1. The "pretrained" base: every parameter trained on the general sequences.
    let base = Trainer::new(TrainerConfig::new(200).with_lr(1e-2), &device)
        .fit(config.init(&device)?, &mut general)?
        .model;
    let (t0, g0) = losses(&base)?;
    println!("base:            task loss {t0:.3}, general loss {g0:.3}");

    // 2. Relevance of each routed expert to the task, from forward passes on task data.
    let mut acc = ScoreAccumulator::new();
    for _ in 0..4 {
        let out = base.forward_moe(progressions(&mut rng, &[5], &device), None)?;
        acc.add(&out.routing, None, BATCH, SEQ, EXPERTS)?;
    }
    let scores = acc.finish();
    let chosen = ExpertConfig::select(&scores, &SelectionConfig::token())?;
    for (layer, ids) in &chosen.experts {
        println!("layer {layer}: experts {ids:?} of {EXPERTS}");
    }

    // 3. Fine-tune only the chosen experts; everything else stays bit-identical. Full
    //    fine-tuning (every parameter, same steps and learning rate) for comparison.
    let fine_tune = TrainerConfig::new(100).with_lr(3e-3);
    let full = Trainer::new(fine_tune.clone(), &device)
        .fit(base.clone(), &mut task)?
        .model;
    let (t1, g1) = losses(&full)?;
    println!("full fine-tune:  task loss {t1:.3}, general loss {g1:.3}");
    let tuned = Trainer::new(fine_tune, &device)
        .with_trainable(|path| chosen.is_trainable(path))
        .fit(base, &mut task)?
        .model;
    let (t2, g2) = losses(&tuned)?;
    println!("ESFT-Token:      task loss {t2:.3}, general loss {g2:.3}");

    // 4. The adapter: the trained experts alone, under HF names.
    let dir = std::env::temp_dir().join(format!("esft-example-{}", std::process::id()));
    let stats = save_adapter(&tuned, &chosen, &dir)?;
    let total: usize = trainer::inventory(&tuned).iter().map(|p| p.numel()).sum();
    println!(
        "adapter: {} tensors, {} of {total} parameters, {} bytes in {}",
        stats.tensors,
        stats.params,
        stats.bytes_on_disk,
        dir.display()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
