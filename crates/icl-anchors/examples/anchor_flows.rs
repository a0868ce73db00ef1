//! Label words as anchors, on any plm decoder: a small byte-level Llama is trained for a few
//! seconds on in-context sentiment prompts (`Review: good nice\nSentiment: P\n…`), then the
//! paper's analyses run through plm's attention hooks: the saliency flows S_wp (text → label
//! words), S_pq (label words → target) and S_ww per layer, and isolation of the label words in
//! the first or the last layer (label loyalty: how often the prediction survives).
//!
//! A model this small learns each word's sentiment in its weights rather than in context (when
//! the label letters are swapped at random per prompt it stays at chance after 400 steps), so
//! isolation hardly moves its predictions: the example shows the interface. `cargo xtask run
//! icl-anchors` runs the paper's analyses on a pretrained decoder (SmolLM2).
//!
//! `cargo run --release -p icl-anchors --example anchor_flows`

use burn::prelude::*;
use icl_anchors::analysis::{Flows, isolation_hooks, label_loyalty, predict, saliency_flows};
use icl_anchors::prompt::{build, label_word_ids};
use icl_anchors::{LabelTokens, Prompt, Template};
use plm::hooks::AttentionHooks;
use plm::llama::{Llama, LlamaConfig};
use trainer::{BatchCtx, Rng, StepLoss, Task, Trainer, TrainerConfig};

const WORDS: [[&str; 5]; 2] = [
    ["poor", "dull", "sour", "vile", "flat"],
    ["good", "nice", "cool", "neat", "fine"],
];

/// The template: one byte per label word, so they are single, distinct tokens.
fn template() -> Template {
    Template {
        input_prefix: "Review:".into(),
        label_prefix: "\nSentiment: ".into(),
        labels: vec!["N".into(), "P".into()],
        separator: "\n".into(),
    }
}

/// A test prompt: the prompt, its gold class and its label-word ids.
struct Example {
    prompt: Prompt,
    gold: usize,
    label_ids: Vec<u32>,
}

fn bytes(s: &str) -> icl_anchors::Result<Vec<u32>> {
    Ok(s.bytes().map(u32::from).collect())
}

/// One demonstration per class in random order, then a query.
fn example(rng: &mut Rng) -> icl_anchors::Result<Example> {
    let text =
        |c: usize, rng: &mut Rng| format!(" {} {}", WORDS[c][rng.below(5)], WORDS[c][rng.below(5)]);
    let mut demos = vec![(text(0, rng), 0), (text(1, rng), 1)];
    rng.shuffle(&mut demos);
    let gold = rng.below(2);
    let query = text(gold, rng);
    let t = template();
    Ok(Example {
        prompt: build(&bytes, &t, &demos, &query)?,
        gold,
        label_ids: label_word_ids(&bytes, &t)?,
    })
}

/// Next-byte loss over whole prompts followed by their label.
struct IclPrompts {
    device: Device,
}

impl Task<Llama> for IclPrompts {
    fn loss(&mut self, model: &Llama, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let mut rows = Vec::new();
        for _ in 0..8 {
            let e = example(ctx.rng).map_err(trainer::Error::task)?;
            rows.push([e.prompt.ids.clone(), vec![e.label_ids[e.gold]]].concat());
        }
        // Every prompt has the same length: the words are four letters each.
        let (b, n) = (rows.len(), rows[0].len());
        let ids: Vec<i64> = rows.iter().flatten().map(|&t| i64::from(t)).collect();
        let x = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, n]), &self.device);
        let logits = model.forward(x.clone().slice(s![.., 0..n - 1])).logits;
        Ok(plm::llama::cross_entropy(logits, x.slice(s![.., 1..n])).into())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    device.seed(0);
    let model = LlamaConfig::new(256, 64, 2, 4, 4, 128).init(&device)?;
    let t = std::time::Instant::now();
    let model = Trainer::new(TrainerConfig::new(150).with_lr(3e-3), &device)
        .fit(
            model,
            &mut IclPrompts {
                device: device.clone(),
            },
        )?
        .model;

    println!("trained in {:.1} s", t.elapsed().as_secs_f64());
    let mut rng = Rng::seed_from(99);
    let tests: Vec<Example> = (0..24)
        .map(|_| example(&mut rng))
        .collect::<Result<_, _>>()?;
    let predict_all = |hooks: &AttentionHooks| {
        tests
            .iter()
            .map(|e| predict(&model, &e.prompt, &e.label_ids, hooks, 5, &device))
            .collect::<Result<Vec<_>, _>>()
    };
    let reference = predict_all(&AttentionHooks::none())?;
    let correct = reference
        .iter()
        .zip(&tests)
        .filter(|(r, e)| r.class == e.gold)
        .count();
    println!(
        "accuracy on {} held-out prompts: {correct}/{}",
        tests.len(),
        tests.len()
    );

    // Saliency flows per layer, normalised to sum to 1 and averaged over the test prompts.
    let mut mean = vec![(0.0, 0.0, 0.0); model.n_layers()];
    for e in &tests {
        let per_layer: Vec<Flows> = saliency_flows(
            &model,
            &e.prompt,
            &e.label_ids,
            e.gold,
            LabelTokens::First,
            &device,
        )?;
        for (m, f) in mean.iter_mut().zip(per_layer) {
            let f = f.normalised();
            *m = (m.0 + f.wp, m.1 + f.pq, m.2 + f.ww);
        }
    }
    println!("layer | S_wp  | S_pq  | S_ww");
    let k = tests.len() as f64;
    for (l, (wp, pq, ww)) in mean.iter().enumerate() {
        println!("{l:>5} | {:.3} | {:.3} | {:.3}", wp / k, pq / k, ww / k);
    }

    // Isolation: the label words may not look back at their demonstration in one layer.
    let p0 = &tests[0].prompt;
    let labels = p0.label_positions(LabelTokens::First);
    let last = model.n_layers() - 1;
    for (name, layer) in [("first", 0), ("last", last)] {
        let hooks = isolation_hooks(p0.ids.len(), &labels, &[layer], model.n_heads(), &device);
        let isolated = predict_all(&hooks)?;
        println!(
            "label words isolated in the {name} layer: label loyalty {:.3}",
            label_loyalty(&reference, &isolated)
        );
    }
    Ok(())
}
