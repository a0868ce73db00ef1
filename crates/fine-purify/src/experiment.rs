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
//! 4. ρ is chosen on the first seed of each task by the defender's rule: the smallest ρ (the
//!    largest purification) whose clean validation accuracy stays within `rho_tolerance` of the
//!    poisoned model's; the sweep's test ACC/ASR is plotted.
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
    /// ρ values swept (first seed).
    #[config(default = "vec![0.1, 0.3, 0.5, 0.7, 0.9]")]
    pub rho_sweep: Vec<f64>,
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

/// One point of the ρ sweep: `(task, method, ρ, valid acc, test acc, asr)`.
pub type SweepRow = (String, String, f64, f64, f64, f64);

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
    /// ρ sweep per task: `(method, ρ, valid acc, test acc, asr)`.
    pub rho_sweep: Vec<SweepRow>,
    /// Chosen ρ per task: `(task, Fine-purifying ρ, Fine-mixing ρ)`.
    pub chosen_rho: Vec<(String, f64, f64)>,
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
        let asr = asr_set(&test, cfg.target, &cfg.attack, window, &mut rng);
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
            }
            defend(cfg, ctx, &enc.encoder, data, seed, si == 0, &mut out)?;
        }
    }
    let summary = summarise(&out.results);
    let (table, body) = write_report(cfg, &enc.name, &summary, &out, ctx)?;
    let metrics = FinePurifyMetrics {
        device: ctx.device_name.clone(),
        encoder: enc.name,
        data: out.data_info,
        results: out.results,
        rho_sweep: out.sweep_rows,
        chosen_rho: out.chosen,
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
            let b = BertConfig::new(v.size(), 32, 2, 2, 64)
                .with_max_position_embeddings(cfg.max_len)
                .init(device)?;
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
    /// ρ per task (fine-purifying, fine-mixing), chosen on the first seed.
    chosen: Vec<(String, f64, f64)>,
    data_info: Vec<(String, String, f64)>,
}

/// One seed of one task: the poisoned and the clean fine-tuned models, the defender's Fisher, ρ
/// (chosen on the first seed), then every defense, each scored after the defender's clean
/// fine-tuning.
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

    // ρ, chosen once per task on the first seed.
    if choose_rho {
        let mut pick = |score: Score, label: &str| -> crate::Result<f64> {
            let mut best = 1.0;
            for &rho in &cfg.rho_sweep {
                let (a, s, v) = def.finish(&ft, &purified(score, rho, &mut prng)?)?;
                out.sweep_rows
                    .push((data.name.clone(), label.to_string(), rho, v, a, s));
                if v >= ft_val - cfg.rho_tolerance && rho < best {
                    best = rho;
                }
            }
            Ok(best)
        };
        let rp = pick(Score::Diffusion, "fine-purifying")?;
        let rm = pick(Score::Random, "fine-mixing")?;
        out.chosen.push((data.name.clone(), rp, rm));
    }
    let (rho_p, rho_m) = out
        .chosen
        .iter()
        .find(|c| c.0 == data.name)
        .map_or((0.5, 0.5), |c| (c.1, c.2));

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
    for (task, _, _) in chosen.iter() {
        let series: Vec<Series> = ["fine-purifying", "fine-mixing"]
            .iter()
            .flat_map(|m| {
                let pts = |f: &dyn Fn(&SweepRow) -> f64| {
                    sweep_rows
                        .iter()
                        .filter(|r| &r.0 == task && r.1 == *m)
                        .map(|r| (r.2, f(r)))
                        .collect::<Vec<_>>()
                };
                [
                    Series::new(format!("{m} ACC"), pts(&|r| r.4)),
                    Series::new(format!("{m} ASR"), pts(&|r| r.5)),
                ]
            })
            .collect();
        write_line_plot(
            &ctx.path(&format!("{task}_rho_sweep.svg")),
            &format!("{task}: ρ sweep (seed {})", cfg.seeds[0]),
            "ρ (share of dimensions kept)",
            "test ACC / ASR",
            &series,
        )?;
    }
    let sweep_md: Vec<Vec<String>> = sweep_rows
        .iter()
        .map(|r| {
            vec![
                r.0.clone(),
                r.1.clone(),
                format!("{}", r.2),
                format!("{:.2}", 100.0 * r.3),
                format!("{:.2}", 100.0 * r.4),
                format!("{:.2}", 100.0 * r.5),
            ]
        })
        .collect();
    let body = format!(
        "Encoder: {encoder_name}. Attack: {:?}, {:.0} % of the training set poisoned towards label {}. Attacker: {} steps at lr {}; defender: {} clean sentences, {} fine-tuning steps at lr {}, Fisher {} ({:?}), {:?} ranking; seeds {:?}. ρ chosen per task on seed {} by clean validation accuracy within {} of the poisoned model's: {}.\n\n## ρ sweep\n\n{}\n{}\n",
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
        cfg.seeds[0],
        cfg.rho_tolerance,
        chosen
            .iter()
            .map(|(t, p, m)| format!("{t}: fine-purifying ρ = {p}, fine-mixing ρ = {m}"))
            .collect::<Vec<_>>()
            .join("; "),
        markdown_table(
            &["task", "method", "ρ", "valid ACC %", "test ACC %", "ASR %"],
            &sweep_md
        ),
        chosen
            .iter()
            .map(|(t, _, _)| format!("![{t}]({t}_rho_sweep.svg)"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    Ok((table, body))
}
