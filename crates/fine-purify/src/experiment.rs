//! `fine-purify`: a backdoored MiniLM classifier, and every defense against it.
//!
//! Per task (the SST stand-in; BBC topics) and seed:
//! 1. The attacker fine-tunes pre-trained MiniLM-L6 + a fresh head on training data with a
//!    `poison_rate` share of dirty-label poisoned examples (rare-word triggers by default):
//!    the poisoned model θ_ft. A clean model (same recipe, no poison) gives the reference ACC
//!    and the ASR a clean model has anyway.
//! 2. The defender holds θ_pre (the pre-trained encoder; the task head is kept from θ_ft, so it
//!    is never reset), θ_ft and `n_clean` clean sentences (plus `n_valid` for choosing ρ).
//! 3. Defenses, each ending with the same fine-tuning on the clean set: Fine-tuning,
//!    Fine-pruning, Fine-mixing, Fine-purifying, the ablations (δ² only, 1/H only), and E-PUR
//!    added to Fine-pruning, Fine-mixing and Fine-purifying.
//! 4. ρ is chosen on every seed (`rho_each_seed`; else on each task's first seed) by the
//!    defender's rule: the smallest ρ (the largest purification) whose clean validation
//!    accuracy stays within `rho_tolerance` of the poisoned model's; the first seed's sweep of
//!    test ACC/ASR is plotted. ASR is measured on at least `n_asr` triggered inputs whose label
//!    is not the target (the test split's, topped up from held-out examples).
//! 5. The claims ([`claims`], per task: Fine-purifying's ASR below Fine-tuning's, Fine-pruning's
//!    and Fine-mixing's, at a clean accuracy at most 2 points below Fine-tuning's) are declared
//!    before the run and judged on per-seed paired differences with a 95 % t interval
//!    (`claims.json`).
//!
//! Offline (no paths): templated reviews and a small randomly initialised BERT. That is not a
//! pre-trained model, so the offline mode only exercises the pipeline.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use plm::bert::{Bert, BertConfig, PooledClassifier, Pooling, classification_loss};
use serde::Serialize;
use textdata::classify::{LabeledIds, SentenceTokenizer, WordVocab};
use trainer::metrics::mean_std;
use trainer::report::{Series, markdown_table, write_line_plot};
use trainer::{BatchCtx, Report, RunCtx, StepLoss, Task, Trainer, TrainerConfig};

use crate::Error;
use crate::attack::{Attack, asr_set, attack_success_rate, poison};
use crate::epur::{epur_words, reset_rows};
use crate::fisher::{FisherAt, fisher_at};
use crate::params::Snapshot;
use crate::pruning::{mean_ffn_activations, prune};
use crate::purify::{PurifyConfig, Scope, Score, purify};
use trainer::claims::{Claim, ClaimResult, Direction};
use trainer::host::IntsToHost;

/// Configuration of the `fine-purify` experiment.
#[derive(Config, Debug)]
pub struct FinePurifyConfig {
    /// `movieReviewSnippets_GroundTruth.txt`.
    #[config(default = "None")]
    pub movie_path: Option<String>,
    /// BBC `bbcnews/data`.
    #[config(default = "None")]
    pub bbc_dir: Option<String>,
    /// all-MiniLM-L6-v2 HF folder.
    #[config(default = "None")]
    pub encoder_dir: Option<String>,
    /// Attack.
    #[config(default = "Attack::rare_words()")]
    pub attack: Attack,
    /// Share of the training set poisoned.
    #[config(default = 0.1)]
    pub poison_rate: f64,
    /// Target label of the backdoor.
    #[config(default = 1)]
    pub target: usize,
    /// Max tokens per input.
    #[config(default = 64)]
    pub max_len: usize,
    /// Triggers go among the first this many words of an input, so that truncation to `max_len`
    /// tokens keeps them (0 = `max_len / 2`, which a WordPiece tokenizer's ~1.3 tokens per
    /// English word plus a title leave inside the window).
    #[config(default = 0)]
    pub trigger_words: usize,
    /// Tasks to run, among `sst` and `bbc` (`bbc` needs `bbc_dir`).
    #[config(default = "vec![\"sst\".to_string(), \"bbc\".to_string()]")]
    pub tasks: Vec<String>,
    /// Attacker's training examples (0 = all left after the defender's and test splits).
    #[config(default = 3000)]
    pub max_train: usize,
    /// Defender's clean fine-tuning set.
    #[config(default = 500)]
    pub n_clean: usize,
    /// Defender's clean validation set (for ρ).
    #[config(default = 200)]
    pub n_valid: usize,
    /// Test examples.
    #[config(default = 800)]
    pub n_test: usize,
    /// Triggered inputs the ASR is measured on, at least: every test input whose label is not
    /// the target, topped up with further held-out non-target inputs (never trained on) when
    /// the test split has fewer.
    #[config(default = 500)]
    pub n_asr: usize,
    /// Attacker's fine-tuning steps.
    #[config(default = 250)]
    pub attack_steps: usize,
    /// Attacker's learning rate.
    #[config(default = 5e-5)]
    pub attack_lr: f64,
    /// Defender's clean fine-tuning steps (every defense).
    #[config(default = 64)]
    pub defense_steps: usize,
    /// Defender's learning rate.
    #[config(default = 2e-5)]
    pub defense_lr: f64,
    /// Batch size.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Clean batches for the Fisher when it squares batch gradients (`fisher_per_example`
    /// false).
    #[config(default = 32)]
    pub fisher_batches: usize,
    /// The indicator as the paper defines it: the mean of per-example squared gradients (the
    /// empirical Fisher, E(g²) = μ² + σ²) over `fisher_examples` clean examples. False: the
    /// square of each of `fisher_batches` batch-mean gradients (cheaper; it estimates
    /// μ² + σ²/B, which ranks dimensions differently when their noise differs).
    #[config(default = true)]
    pub fisher_per_example: bool,
    /// Clean examples for the per-example Fisher (each point of a path average).
    #[config(default = 128)]
    pub fisher_examples: usize,
    /// Where the Fisher is taken: averaged along the straight path from the pre-trained to the
    /// fine-tuned weights, as the paper's indicator integrates it (or at the fine-tuned
    /// weights alone).
    #[config(default = "FisherAt::PathAverage { points: 3 }")]
    pub fisher_at: FisherAt,
    /// Ranking scope.
    #[config(default = "Scope::Global")]
    pub scope: Scope,
    /// ρ values swept (every seed with `rho_each_seed`, else the first).
    #[config(default = "vec![0.1, 0.3, 0.5, 0.7, 0.9]")]
    pub rho_sweep: Vec<f64>,
    /// Choose ρ on every seed by the defender's rule on that seed's own validation data (the
    /// paper's setting: a defender has one model and picks ρ for it). False: choose it on the
    /// first seed of each task and reuse it (cheaper; the other seeds then use a ρ chosen on
    /// another model).
    #[config(default = true)]
    pub rho_each_seed: bool,
    /// Allowed clean validation accuracy loss when choosing ρ.
    #[config(default = 0.02)]
    pub rho_tolerance: f64,
    /// Fine-pruning: share of FFN neurons pruned per layer.
    #[config(default = 0.3)]
    pub prune_fraction: f64,
    /// E-PUR: words reset.
    #[config(default = 50)]
    pub epur_words: usize,
    /// E-PUR frequency floor c.
    #[config(default = 3.0)]
    pub epur_c: f64,
    /// Seeds.
    #[config(default = "vec![1, 2, 3]")]
    pub seeds: Vec<u64>,
}

impl FinePurifyConfig {
    /// The word window of the trigger ([`FinePurifyConfig::trigger_words`], 0 = `max_len / 2`).
    pub fn trigger_window(&self) -> usize {
        if self.trigger_words > 0 {
            self.trigger_words
        } else {
            (self.max_len / 2).max(1)
        }
    }

    /// The full size.
    pub fn full() -> Self {
        Self::new()
    }

    /// Seconds.
    pub fn quick() -> Self {
        Self::new()
            .with_max_len(32)
            .with_max_train(96)
            .with_n_clean(32)
            .with_n_valid(16)
            .with_n_test(32)
            .with_n_asr(24)
            .with_attack_steps(4)
            .with_defense_steps(2)
            .with_batch_size(8)
            .with_fisher_batches(2)
            .with_fisher_examples(4)
            .with_rho_sweep(vec![0.5])
            .with_epur_words(3)
            .with_seeds(vec![1])
    }
}

struct Data {
    name: String,
    source: String,
    n_labels: usize,
    train: LabeledIds,
    train_clean: LabeledIds,
    clean: LabeledIds,
    valid: LabeledIds,
    test: LabeledIds,
    asr: LabeledIds,
    poisoned_share: f64,
}

struct Clf<'a> {
    data: &'a LabeledIds,
    max_len: usize,
    batch: usize,
    device: Device,
}

impl Task<PooledClassifier> for Clf<'_> {
    fn loss(&mut self, m: &PooledClassifier, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let idx: Vec<usize> = (0..self.batch)
            .map(|_| ctx.rng.below(self.data.len()))
            .collect();
        let (ids, mask, y) = self.data.batch(&idx, self.max_len, &self.device);
        Ok(classification_loss(m.forward(ids, mask), y).into())
    }
}

fn predict(
    m: &PooledClassifier,
    data: &LabeledIds,
    max_len: usize,
    device: &Device,
) -> crate::Result<Vec<usize>> {
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(64) {
        let (ids, mask, _) = data.batch(&chunk, max_len, device);
        let p = m.forward(ids, mask).argmax(1);
        let v = p.to_i64s()?;
        out.extend(v.into_iter().map(|x| x as usize));
    }
    Ok(out)
}

fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    pred.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / labels.len().max(1) as f64
}

/// One point of a ρ sweep.
#[derive(Serialize, Debug, Clone)]
pub struct SweepRow {
    /// Task.
    pub task: String,
    /// Seed.
    pub seed: u64,
    /// `fine-purifying` or `fine-mixing`.
    pub method: String,
    /// ρ.
    pub rho: f64,
    /// Clean validation accuracy (what the rule reads).
    pub valid_acc: f64,
    /// Test accuracy.
    pub test_acc: f64,
    /// Attack success rate.
    pub asr: f64,
}

/// The ρ the defender's rule chose for one task and seed.
#[derive(Serialize, Debug, Clone)]
pub struct ChosenRho {
    /// Task.
    pub task: String,
    /// Seed.
    pub seed: u64,
    /// Fine-purifying's ρ.
    pub purifying: f64,
    /// Fine-mixing's ρ.
    pub mixing: f64,
}

/// One summary row: task, defense, ACC mean and std, ASR mean and std, mean time (s).
pub type SummaryRow = (String, String, f64, f64, f64, f64, f64);

/// One defense's outcome.
#[derive(Serialize, Debug, Clone)]
pub struct DefenseResult {
    /// Task.
    pub task: String,
    /// Seed.
    pub seed: u64,
    /// Defense.
    pub defense: String,
    /// Clean test accuracy.
    pub acc: f64,
    /// Attack success rate.
    pub asr: f64,
    /// Defender's wall time (s), fine-tuning included.
    pub time_s: f64,
}

/// Everything `metrics.json` holds.
#[derive(Serialize, Debug)]
pub struct FinePurifyMetrics {
    /// Device.
    pub device: String,
    /// Encoder.
    pub encoder: String,
    /// Data per task: `(task, source, poisoned share of training)`.
    pub data: Vec<(String, String, f64)>,
    /// Every defense on every seed (the clean model and the undefended poisoned model too).
    pub results: Vec<DefenseResult>,
    /// The ρ sweeps.
    pub rho_sweep: Vec<SweepRow>,
    /// The chosen ρ per task and seed.
    pub chosen_rho: Vec<ChosenRho>,
    /// Triggered inputs of each task's ASR set.
    pub asr_inputs: Vec<(String, usize)>,
    /// Mean over seeds: `(task, defense, acc, acc std, asr, asr std, time)`.
    pub summary: Vec<(String, String, f64, f64, f64, f64, f64)>,
}

fn load_data(
    cfg: &FinePurifyConfig,
    tok: &SentenceTokenizer,
    seed: u64,
) -> crate::Result<Vec<Data>> {
    let mut rng = trainer::Rng::seed_from(seed);
    // (name, source, classes, examples)
    type Set = (String, String, usize, Vec<(String, usize)>);
    let mut sets: Vec<Set> = Vec::new();
    if let Some(t) = cfg
        .tasks
        .iter()
        .find(|t| !["sst", "bbc"].contains(&t.as_str()))
    {
        return Err(Error::InvalidConfig(format!(
            "unknown task '{t}' (expected sst, bbc)"
        )));
    }
    let wants = |t: &str| cfg.tasks.iter().any(|x| x == t);
    match &cfg.movie_path {
        _ if !wants("sst") => {}
        Some(p) => sets.push((
            "sst".into(),
            p.clone(),
            2,
            textdata::readers::read_movie_snippets(Path::new(p))?
                .into_iter()
                .map(|r| (r.text, r.label))
                .collect(),
        )),
        None => sets.push((
            "sst".into(),
            "templated reviews (offline)".into(),
            2,
            textdata::synthetic::templated_reviews(600, |k| rng.below(k))
                .into_iter()
                .map(|r| (r.text, r.label))
                .collect(),
        )),
    }
    if let Some(dir) = cfg.bbc_dir.as_ref().filter(|_| wants("bbc")) {
        let (a, topics) = textdata::readers::read_bbc(Path::new(dir))?;
        sets.push((
            "bbc".into(),
            dir.clone(),
            topics.len(),
            a.into_iter()
                .map(|a| (format!("{}. {}", a.title, a.body), a.label))
                .collect(),
        ));
    }
    let mut out = Vec::new();
    for (name, source, n_labels, mut items) in sets {
        if cfg.target >= n_labels {
            return Err(Error::InvalidConfig(format!(
                "target label {} for {n_labels} classes",
                cfg.target
            )));
        }
        rng.shuffle(&mut items);
        let mut take = |n: usize| items.split_off(items.len().saturating_sub(n));
        let test = take(cfg.n_test);
        let clean = take(cfg.n_clean);
        let valid = take(cfg.n_valid);
        // ASR inputs: the test split's non-target inputs, topped up from the rest
        let mut asr_pool: Vec<(String, usize)> = test
            .iter()
            .filter(|(_, l)| *l != cfg.target)
            .cloned()
            .collect();
        let missing = cfg.n_asr.saturating_sub(asr_pool.len());
        if missing > 0 {
            let mut kept = Vec::with_capacity(items.len());
            for it in items {
                if it.1 != cfg.target && asr_pool.len() < cfg.n_asr {
                    asr_pool.push(it);
                } else {
                    kept.push(it);
                }
            }
            items = kept;
        }
        let mut train = items;
        if cfg.max_train > 0 {
            train.truncate(cfg.max_train);
        }
        if train.is_empty() || test.is_empty() || clean.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "{name}: too few examples for the splits"
            )));
        }
        let window = cfg.trigger_window();
        let (poisoned, flags) = poison(
            &train,
            cfg.poison_rate,
            cfg.target,
            &cfg.attack,
            window,
            &mut rng,
        );
        let asr = asr_set(&asr_pool, cfg.target, &cfg.attack, window, &mut rng);
        let enc = |v: &[(String, usize)]| LabeledIds::encode(v, tok, cfg.max_len);
        out.push(Data {
            name,
            source,
            n_labels,
            poisoned_share: flags.iter().filter(|&&f| f).count() as f64 / flags.len() as f64,
            train: enc(&poisoned)?,
            train_clean: enc(&train)?,
            clean: enc(&clean)?,
            valid: enc(&valid)?,
            test: enc(&test)?,
            asr: enc(&asr)?,
        });
    }
    Ok(out)
}

/// Word counts of the clean set over the vocabulary (for E-PUR).
fn word_counts(data: &LabeledIds, vocab: usize) -> Vec<u64> {
    let mut c = vec![0u64; vocab];
    for s in &data.ids {
        for &t in s {
            if let Some(x) = c.get_mut(t as usize) {
                *x += 1;
            }
        }
    }
    c
}

struct Defender<'a, 'p> {
    ctx: std::cell::RefCell<&'a mut RunCtx<'p>>,
    cfg: &'a FinePurifyConfig,
    device: Device,
    eval_device: Device,
    data: &'a Data,
    seed: u64,
}

impl Defender<'_, '_> {
    fn finetune(
        &self,
        m: PooledClassifier,
        steps: usize,
        lr: f64,
        set: &LabeledIds,
        seed: u64,
    ) -> crate::Result<PooledClassifier> {
        let mut task = Clf {
            data: set,
            max_len: self.cfg.max_len,
            batch: self.cfg.batch_size,
            device: self.device.clone(),
        };
        let tcfg = TrainerConfig::new(steps)
            .with_lr(lr)
            .with_seed(seed)
            .with_grad_clip(Some(trainer::GradClip::GlobalNorm(1.0)));
        let mut ctx = self.ctx.borrow_mut();
        Ok(Trainer::new(tcfg, &self.device)
            .with_progress(|p| ctx.report_progress(p))
            .fit(m, &mut task)?
            .model)
    }

    fn score(&self, m: &PooledClassifier) -> crate::Result<(f64, f64, f64)> {
        let v = m.valid();
        let d = &self.eval_device;
        let acc = accuracy(
            &predict(&v, &self.data.test, self.cfg.max_len, d)?,
            &self.data.test.labels,
        );
        let asr = attack_success_rate(
            &predict(&v, &self.data.asr, self.cfg.max_len, d)?,
            self.cfg.target,
        );
        let val = accuracy(
            &predict(&v, &self.data.valid, self.cfg.max_len, d)?,
            &self.data.valid.labels,
        );
        Ok((acc, asr, val))
    }

    /// Writes `snap` into a copy of `ft`, fine-tunes it on the clean set, scores it.
    fn finish(&self, ft: &PooledClassifier, snap: &Snapshot) -> crate::Result<(f64, f64, f64)> {
        let m = snap.write_into(ft.clone())?;
        let m = self.finetune(
            m,
            self.cfg.defense_steps,
            self.cfg.defense_lr,
            &self.data.clean,
            self.seed + 7,
        )?;
        self.score(&m)
    }
}

fn is_head(p: &str) -> bool {
    p.starts_with("head.")
}

/// Runs the experiment into `ctx.dir`: the encoder, then per seed and task the attack and every
/// defense, then the summary over seeds and the report.
pub fn run(cfg: &FinePurifyConfig, ctx: &mut RunCtx<'_>) -> crate::Result<Report> {
    if cfg.seeds.is_empty() || cfg.rho_sweep.is_empty() {
        return Err(Error::InvalidConfig(
            "seeds and rho_sweep must be non-empty".into(),
        ));
    }
    let device = ctx.device.clone().autodiff();
    let enc = load_encoder(cfg, &device)?;
    let mut out = Outcomes::default();
    for (si, &seed) in cfg.seeds.iter().enumerate() {
        for data in &load_data(cfg, &enc.tok, seed)? {
            if si == 0 {
                out.data_info
                    .push((data.name.clone(), data.source.clone(), data.poisoned_share));
                out.asr_inputs.push((data.name.clone(), data.asr.len()));
            }
            let choose = si == 0 || cfg.rho_each_seed;
            defend(cfg, ctx, &enc.encoder, data, seed, choose, &mut out)?;
        }
    }
    let summary = summarise(&out.results);
    let tasks: Vec<String> = out.data_info.iter().map(|d| d.0.clone()).collect();
    let claims = evaluate_claims(&tasks, &out.results, &cfg.seeds)?;
    trainer::claims::write_claims(&ctx.path("claims.json"), &claims)?;
    let (table, body) = write_report(cfg, &enc.name, &summary, &out, &claims, ctx)?;
    let metrics = FinePurifyMetrics {
        device: ctx.device_name.clone(),
        encoder: enc.name,
        data: out.data_info,
        results: out.results,
        rho_sweep: out.sweep_rows,
        chosen_rho: out.chosen,
        asr_inputs: out.asr_inputs,
        summary,
    };
    Ok(ctx.finish(cfg, &metrics, "fine-purify", table, body)?)
}

/// The encoder every classifier starts from, its tokenizer and a description.
struct Encoder {
    encoder: Bert,
    tok: SentenceTokenizer,
    name: String,
}

/// A real BERT folder (`encoder_dir`) or, offline, a small random BERT over a word vocabulary of
/// the synthetic reviews and the triggers.
fn load_encoder(cfg: &FinePurifyConfig, device: &Device) -> crate::Result<Encoder> {
    let (encoder, tok, name) = match &cfg.encoder_dir {
        Some(dir) => (
            Bert::load_hf(Path::new(dir), device)?,
            SentenceTokenizer::Real(Box::new(textdata::TextTokenizer::from_file(
                &Path::new(dir).join("tokenizer.json"),
            )?)),
            dir.clone(),
        ),
        None => {
            let mut rng = trainer::Rng::seed_from(0);
            let texts: Vec<String> = textdata::synthetic::templated_reviews(600, |k| rng.below(k))
                .into_iter()
                .map(|r| r.text)
                .collect();
            let mut vocab_words: Vec<&str> = texts.iter().map(String::as_str).collect();
            let triggers = "cf mn bb tq mb".to_string();
            vocab_words.push(&triggers);
            let v = WordVocab::build(vocab_words);
            device.seed(0);
            // drawn now from seed 0, not from the first seed's RNG where it is first used
            let b = trainer::params::materialise(
                BertConfig::new(v.size(), 32, 2, 2, 64)
                    .with_max_position_embeddings(cfg.max_len)
                    .init(device)?,
            );
            (
                b,
                SentenceTokenizer::Words(v),
                "a small random BERT (offline)".into(),
            )
        }
    };
    Ok(Encoder { encoder, tok, name })
}

/// Everything the runs produce, gathered over seeds and tasks.
#[derive(Default)]
struct Outcomes {
    results: Vec<DefenseResult>,
    sweep_rows: Vec<SweepRow>,
    /// ρ per task and seed (per task on its first seed without `rho_each_seed`).
    chosen: Vec<ChosenRho>,
    data_info: Vec<(String, String, f64)>,
    asr_inputs: Vec<(String, usize)>,
}

/// One seed of one task: the poisoned and the clean fine-tuned models, the defender's Fisher, ρ
/// (chosen on this seed when `choose_rho`, else the task's earlier choice), then every defense,
/// each scored after the defender's clean fine-tuning.
fn defend(
    cfg: &FinePurifyConfig,
    ctx: &mut RunCtx<'_>,
    encoder: &Bert,
    data: &Data,
    seed: u64,
    choose_rho: bool,
    out: &mut Outcomes,
) -> crate::Result<()> {
    let eval_device = ctx.device.clone();
    let device = ctx.device.clone().autodiff();
    let vocab = encoder.embeddings.word_embeddings.weight.dims()[0];
    let emb_path = "bert.embeddings.word_embeddings.weight";
    let def = Defender {
        ctx: std::cell::RefCell::new(&mut *ctx),
        cfg,
        device: device.clone(),
        eval_device: eval_device.clone(),
        data,
        seed,
    };
    let results = &mut out.results;
    let mut push = |defense: &str, acc: f64, asr: f64, t: f64| {
        results.push(DefenseResult {
            task: data.name.clone(),
            seed,
            defense: defense.into(),
            acc,
            asr,
            time_s: t,
        });
    };
    // The attacker, and the clean reference.
    device.seed(seed);
    let fresh = PooledClassifier::new(encoder.clone(), data.n_labels, Pooling::Mean, 0.1, &device);
    let ft = def.finetune(
        fresh.clone(),
        cfg.attack_steps,
        cfg.attack_lr,
        &data.train,
        seed,
    )?;
    let (a, s, ft_val) = def.score(&ft)?;
    push("poisoned (no defense)", a, s, 0.0);
    // The same recipe on the same examples without the poison.
    let clean_model = def.finetune(
        fresh.clone(),
        cfg.attack_steps,
        cfg.attack_lr,
        &data.train_clean,
        seed,
    )?;
    let (a, s, _) = def.score(&clean_model)?;
    push("clean model (reference)", a, s, 0.0);

    // The defender's material.
    let ft_snap = Snapshot::of(&ft)?;
    let mut pre_snap = Snapshot::of(&fresh)?;
    for (p, f) in pre_snap.entries.iter_mut().zip(&ft_snap.entries) {
        if is_head(&p.path) {
            p.data = f.data.clone();
        }
    }
    let t0 = Instant::now();
    let mut frng = trainer::Rng::seed_from(seed ^ 0xf15e);
    // per example: n one-example losses; per batch: n batch-mean losses
    let (n_losses, rows) = if cfg.fisher_per_example {
        (cfg.fisher_examples, 1)
    } else {
        (cfg.fisher_batches, cfg.batch_size)
    };
    let fisher = fisher_at(
        &ft,
        &pre_snap,
        cfg.fisher_at,
        n_losses,
        |m: &PooledClassifier, _| {
            let idx: Vec<usize> = (0..rows).map(|_| frng.below(data.clean.len())).collect();
            let (ids, mask, y) = data.clean.batch(&idx, cfg.max_len, &device);
            Ok(classification_loss(m.forward(ids, mask), y))
        },
    )?;
    let fisher_s = t0.elapsed().as_secs_f64();
    let counts = word_counts(&data.clean, vocab);
    let with_epur = |snap: &mut Snapshot| -> crate::Result<()> {
        let (Some(pi), Some(fi)) = (
            pre_snap.entries.iter().position(|e| e.path == emb_path),
            snap.entries.iter().position(|e| e.path == emb_path),
        ) else {
            return Err(Error::Mismatch {
                path: emb_path.into(),
                reason: "no word embeddings".into(),
            });
        };
        let words = epur_words(
            &pre_snap.entries[pi],
            &ft_snap.entries[fi],
            &counts,
            cfg.epur_c,
            cfg.epur_words,
        )?;
        reset_rows(&mut snap.entries[fi], &pre_snap.entries[pi], &words);
        Ok(())
    };
    let mut prng = trainer::Rng::seed_from(seed ^ 0x5a5a);
    let purified = |score: Score, rho: f64, prng: &mut trainer::Rng| -> crate::Result<Snapshot> {
        let pc = PurifyConfig {
            score,
            scope: cfg.scope,
            ..PurifyConfig::diffusion(rho)
        };
        let f = matches!(score, Score::Diffusion | Score::InverseHessian).then_some(&fisher);
        Ok(purify(&pre_snap, &ft_snap, f, &pc, is_head, prng)?.0)
    };

    // ρ by the defender's rule: the smallest swept ρ whose clean validation accuracy stays
    // within the tolerance of the poisoned model's (1, no purification, when none does).
    if choose_rho {
        let mut pick = |score: Score, label: &str| -> crate::Result<f64> {
            let mut best = 1.0;
            for &rho in &cfg.rho_sweep {
                let (a, s, v) = def.finish(&ft, &purified(score, rho, &mut prng)?)?;
                out.sweep_rows.push(SweepRow {
                    task: data.name.clone(),
                    seed,
                    method: label.to_string(),
                    rho,
                    valid_acc: v,
                    test_acc: a,
                    asr: s,
                });
                if v >= ft_val - cfg.rho_tolerance && rho < best {
                    best = rho;
                }
            }
            Ok(best)
        };
        let purifying = pick(Score::Diffusion, "fine-purifying")?;
        let mixing = pick(Score::Random, "fine-mixing")?;
        out.chosen.push(ChosenRho {
            task: data.name.clone(),
            seed,
            purifying,
            mixing,
        });
    }
    // this seed's choice, or the task's latest
    let (rho_p, rho_m) = out
        .chosen
        .iter()
        .rev()
        .find(|c| c.task == data.name)
        .map_or((0.5, 0.5), |c| (c.purifying, c.mixing));

    let timed =
        |f: &mut dyn FnMut() -> crate::Result<(f64, f64, f64)>| -> crate::Result<(f64, f64, f64)> {
            let t = Instant::now();
            let (a, s, _) = f()?;
            Ok((a, s, t.elapsed().as_secs_f64()))
        };
    let (a, s, t) = timed(&mut || def.finish(&ft, &ft_snap))?;
    push("fine-tuning", a, s, t);
    // Fine-pruning (± E-PUR).
    let batches: Vec<_> = data
        .clean
        .chunks(32)
        .iter()
        .map(|c| {
            let (i, m, _) = data.clean.batch(c, cfg.max_len, &eval_device);
            (i, m)
        })
        .collect();
    for epur in [false, true] {
        let (a, s, t) = timed(&mut || {
            let acts = mean_ffn_activations(&ft.valid().bert, &batches)?;
            let mut snap = ft_snap.clone();
            prune(&mut snap, "bert.", &acts, cfg.prune_fraction)?;
            if epur {
                with_epur(&mut snap)?;
            }
            def.finish(&ft, &snap)
        })?;
        push(
            if epur {
                "fine-pruning + E-PUR"
            } else {
                "fine-pruning"
            },
            a,
            s,
            t,
        );
    }
    for (score, name, rho) in [
        (Score::Random, "fine-mixing", rho_m),
        (Score::Diffusion, "fine-purifying", rho_p),
        (Score::DriftOnly, "ablation: δ² only", rho_p),
        (Score::InverseHessian, "ablation: 1/H only", rho_p),
    ] {
        for epur in [false, true] {
            if epur && matches!(score, Score::DriftOnly | Score::InverseHessian) {
                continue;
            }
            let extra = if matches!(score, Score::Diffusion | Score::InverseHessian) {
                fisher_s
            } else {
                0.0
            };
            let (a, s, t) = timed(&mut || {
                let mut snap = purified(score, rho, &mut prng)?;
                if epur {
                    with_epur(&mut snap)?;
                }
                def.finish(&ft, &snap)
            })?;
            push(
                &format!("{name}{}", if epur { " + E-PUR" } else { "" }),
                a,
                s,
                t + extra,
            );
        }
    }
    Ok(())
}

/// The clean-accuracy margin of the non-inferiority claim (the "ACC within 2 points").
const ACC_MARGIN: f64 = 0.02;

fn asr_metric(task: &str) -> String {
    format!("ASR on triggered inputs ({task})")
}

fn margin_metric(task: &str) -> String {
    format!(
        "clean test accuracy, fine-purifying's plus {} points ({task})",
        100.0 * ACC_MARGIN
    )
}

/// The claims a run judges, declared before it runs (per task): Fine-purifying's ASR below
/// Fine-tuning's, Fine-pruning's and Fine-mixing's (the paper's Table 2), and its clean accuracy
/// at most 2 points below Fine-tuning's (non-inferiority: `ACC(purifying) + 0.02 >
/// ACC(fine-tuning)` must hold with its interval); paired by seed (`trainer::claims`).
pub fn claims(tasks: &[String]) -> Vec<Claim> {
    let mut v = Vec::new();
    for t in tasks {
        for (other, id) in [
            ("fine-tuning", "fine-tuning"),
            ("fine-pruning", "fine-pruning"),
            ("fine-mixing", "fine-mixing"),
        ] {
            v.push(Claim::new(
                format!("{t}-purifying-asr-below-{id}"),
                asr_metric(t),
                "fine-purifying",
                other,
                Direction::Less,
                format!("{t}: Fine-purifying leaves a lower ASR than {other} (Table 2)"),
            ));
        }
        v.push(Claim::new(
            format!("{t}-purifying-acc-within-2-points"),
            margin_metric(t),
            "fine-purifying",
            "fine-tuning",
            Direction::Greater,
            format!(
                "{t}: Fine-purifying's clean accuracy is at most 2 points below Fine-tuning's \
                 (Table 2)"
            ),
        ));
    }
    v
}

/// Evaluates the [`claims`] of `tasks` on the per-seed results (seeds in `seeds`' order).
fn evaluate_claims(
    tasks: &[String],
    results: &[DefenseResult],
    seeds: &[u64],
) -> crate::Result<Vec<ClaimResult>> {
    let values = |method: &str, metric: &str| -> Option<Vec<f64>> {
        let (task, asr) = tasks.iter().find_map(|t| {
            if metric == asr_metric(t) {
                Some((t, true))
            } else if metric == margin_metric(t) {
                Some((t, false))
            } else {
                None
            }
        })?;
        seeds
            .iter()
            .map(|&seed| {
                results
                    .iter()
                    .find(|r| &r.task == task && r.defense == method && r.seed == seed)
                    .map(|r| match (asr, method) {
                        (true, _) => r.asr,
                        (false, "fine-purifying") => r.acc + ACC_MARGIN,
                        (false, _) => r.acc,
                    })
            })
            .collect()
    };
    Ok(trainer::claims::evaluate_available(&claims(tasks), values)?)
}

/// Mean ± std over seeds per (task, defense): `(task, defense, ACC, ACC std, ASR, ASR std, time)`.
fn summarise(results: &[DefenseResult]) -> Vec<SummaryRow> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in results {
        let k = (r.task.clone(), r.defense.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.iter()
        .map(|(t, d)| {
            let rs: Vec<&DefenseResult> = results
                .iter()
                .filter(|r| &r.task == t && &r.defense == d)
                .collect();
            let (a, asd) = mean_std(&rs.iter().map(|r| r.acc).collect::<Vec<_>>());
            let (s, ssd) = mean_std(&rs.iter().map(|r| r.asr).collect::<Vec<_>>());
            let time = rs.iter().map(|r| r.time_s).sum::<f64>() / rs.len().max(1) as f64;
            (t.clone(), d.clone(), a, asd, s, ssd, time)
        })
        .collect()
}

/// The README-ready table (mean ± std over seeds) and the report body with the ρ sweeps.
fn write_report(
    cfg: &FinePurifyConfig,
    encoder_name: &str,
    summary: &[SummaryRow],
    out: &Outcomes,
    claims: &[ClaimResult],
    ctx: &RunCtx<'_>,
) -> crate::Result<(String, String)> {
    let (sweep_rows, chosen) = (&out.sweep_rows, &out.chosen);
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|(t, d, a, asd, s, ssd, time)| {
            vec![
                t.clone(),
                d.clone(),
                format!("{:.2} ± {:.2}", 100.0 * a, 100.0 * asd),
                format!("{:.2} ± {:.2}", 100.0 * s, 100.0 * ssd),
                format!("{time:.1}"),
            ]
        })
        .collect();
    let table = markdown_table(&["task", "defense", "ACC %", "ASR %", "time s"], &rows);
    let first = cfg.seeds[0];
    let tasks: Vec<&String> = out.data_info.iter().map(|d| &d.0).collect();
    for task in &tasks {
        let series: Vec<Series> = ["fine-purifying", "fine-mixing"]
            .iter()
            .flat_map(|m| {
                let pts = |f: &dyn Fn(&SweepRow) -> f64| {
                    sweep_rows
                        .iter()
                        .filter(|r| &&r.task == task && r.method == *m && r.seed == first)
                        .map(|r| (r.rho, f(r)))
                        .collect::<Vec<_>>()
                };
                [
                    Series::new(format!("{m} ACC"), pts(&|r| r.test_acc)),
                    Series::new(format!("{m} ASR"), pts(&|r| r.asr)),
                ]
            })
            .collect();
        write_line_plot(
            &ctx.path(&format!("{task}_rho_sweep.svg")),
            &format!("{task}: ρ sweep (seed {first})"),
            "ρ (share of dimensions kept)",
            "test ACC / ASR",
            &series,
        )?;
    }
    let sweep_md: Vec<Vec<String>> = sweep_rows
        .iter()
        .map(|r| {
            vec![
                r.task.clone(),
                r.seed.to_string(),
                r.method.clone(),
                format!("{}", r.rho),
                format!("{:.2}", 100.0 * r.valid_acc),
                format!("{:.2}", 100.0 * r.test_acc),
                format!("{:.2}", 100.0 * r.asr),
            ]
        })
        .collect();
    let body = format!(
        "Encoder: {encoder_name}. Attack: {:?}, {:.0} % of the training set poisoned towards label {}. Attacker: {} steps at lr {}; defender: {} clean sentences, {} fine-tuning steps at lr {}, Fisher {} ({:?}), {:?} ranking; seeds {:?}. ASR on {} triggered inputs. ρ chosen {} by clean validation accuracy within {} of the poisoned model's: {}.\n\n## Claims (paired by seed; `claims.json`)\n\n{}\n## ρ sweeps\n\n{}\n{}\n",
        cfg.attack,
        100.0 * cfg.poison_rate,
        cfg.target,
        cfg.attack_steps,
        cfg.attack_lr,
        cfg.n_clean,
        cfg.defense_steps,
        cfg.defense_lr,
        if cfg.fisher_per_example {
            format!(
                "of per-example squared gradients over {} clean examples",
                cfg.fisher_examples
            )
        } else {
            format!(
                "of squared batch-mean gradients over {} clean batches of {}",
                cfg.fisher_batches, cfg.batch_size
            )
        },
        cfg.fisher_at,
        cfg.scope,
        cfg.seeds,
        out.asr_inputs
            .iter()
            .map(|(t, n)| format!("{n} ({t})"))
            .collect::<Vec<_>>()
            .join(", "),
        if cfg.rho_each_seed {
            "per task and seed".to_string()
        } else {
            format!("per task on seed {first}")
        },
        cfg.rho_tolerance,
        chosen
            .iter()
            .map(|c| format!(
                "{} seed {}: fine-purifying ρ = {}, fine-mixing ρ = {}",
                c.task, c.seed, c.purifying, c.mixing
            ))
            .collect::<Vec<_>>()
            .join("; "),
        trainer::claims::claims_table(claims),
        markdown_table(
            &[
                "task",
                "seed",
                "method",
                "ρ",
                "valid ACC %",
                "test ACC %",
                "ASR %"
            ],
            &sweep_md
        ),
        tasks
            .iter()
            .map(|t| format!("![{t}]({t}_rho_sweep.svg)"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    Ok((table, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offline encoder is drawn when it is built (from its own seed), not from whichever
    /// seed's RNG state first touches it, so a seed's results do not depend on the seed list.
    #[test]
    fn the_offline_encoder_does_not_depend_on_later_reseeding() {
        let _rng = testkit::device_rng_lock();
        let device = Device::flex().autodiff();
        let cfg = FinePurifyConfig::quick();
        let weights = |later_seed: u64| {
            let enc = load_encoder(&cfg, &device).unwrap();
            device.seed(later_seed);
            let layer = &enc.encoder.encoder.layer[0];
            (
                enc.encoder
                    .embeddings
                    .word_embeddings
                    .weight
                    .val()
                    .into_data(),
                layer.attention.self_attn.query.weight.val().into_data(),
            )
        };
        assert_eq!(weights(1), weights(2));
    }
}
