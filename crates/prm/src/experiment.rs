//! `math-shepherd`: automatic process annotation, PRM vs ORM verification and step-level PPO.
//!
//! Embedded default (offline): arithmetic word problems of [`crate::synthetic`] (2–6 steps,
//! exact answers). A word-level (byte-fallback) Llama-style generator is trained from scratch on
//! their reference solutions for a fixed number of steps, so it solves a share of them but not
//! all. The same model is the completer (N completions per step) that labels its own sampled
//! solutions with hard (HE) and soft (SE) estimation; the labels are scored against the true
//! step correctness, known by construction. The generator, the annotations and the test
//! candidates (`n_candidates` samples per held-out problem) come from `seed` and are shared.
//!
//! Then per seed of `seeds` (the reward models' data order; PPO's rollouts and value head):
//! reward models trained from the generator's weights, read through the two label tokens
//! `+`/`-` at the step tag `ки` — the ORM (final-answer labels), the PRM on HE labels (the
//! paper's), on SE labels, on the true step labels (`true_label_prm`: the same model without
//! label noise, which separates the labels' noise from the model's capacity) and on HE labels
//! with a within-problem pairwise loss (`rm_pair_weight`: a logistic loss on the solution
//! scores of a right and a wrong solution to one problem, since best-of-N needs a ranking of
//! one problem's candidates, which per-step labels alone do not ask for); best-of-N, self-
//! consistency and SC + ORM / PRM for N in `n_values` (averaged over the disjoint groups of N
//! among the candidates), with every reward model's AUC over all candidates and inside each
//! problem; greedy accuracy after ORM-PPO (one reward at the end) and step-PPO (PRM rewards per
//! step), against no RL. The claims ([`claims`]: the paper's Tables 1 and 3, and the two
//! diagnostics) are declared before the run and judged on per-seed paired differences with a
//! 95 % t interval (`claims.json`).
//!
//! Real run: `data_dir` (GSM8K `train.jsonl` / `test.jsonl`) with `gguf_path` (SmolLM2-135M-
//! Instruct, any llama GGUF with a byte-level BPE, or an HF Llama / Mistral / Qwen2 folder with
//! its `tokenizer.json`) runs the same pipeline on GSM8K with the chat template; there is no
//! step truth there, so neither annotation accuracy nor the true-label PRM is reported.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use plm::llama::{Llama, LlamaConfig};
use serde::Serialize;
use textdata::LmWindows;
use trainer::claims::{Claim, ClaimResult, Direction};
use trainer::report::{Series, markdown_table, write_line_plot};
use trainer::{BatchCtx, LrSchedule, Report, Rng, RunCtx, StepLoss, Task, Trainer, TrainerConfig};

use crate::annotate::{annotate, label_accuracy};
use crate::answer::{answers_equal, extract_answer};
use crate::format::{LabeledSolution, Problem, read_gsm8k, to_shepherd, write_jsonl};
use crate::model::{RewardModel, RewardTask};
use crate::ppo::{ActorCritic, KlRule, PpoConfig, PpoTask, RewardKind, Scorer};
use crate::sample::{LmPolicy, Policy, SampleConfig, sample};
use crate::synthetic::{ChainProblem, problems, step_truth};
use crate::tags::{TaggedIds, Tokenizer, Truncation, encode_tagged, truncate};
use crate::verify::{Aggregate, Candidate, aggregate, best_of_n, majority, weighted_vote};
use crate::wordtok::WordTokenizer;
use crate::{Error, Result};

/// The step tag.
const TAG: &str = "ки";
/// The step separator.
const SEP: &str = "\n";

/// Configuration of the `math-shepherd` experiment.
#[derive(Config, Debug)]
pub struct MathShepherdConfig {
    /// GSM8K folder (`train.jsonl`, `test.jsonl`): the real run. Needs `gguf_path`.
    #[config(default = "None")]
    pub data_dir: Option<String>,
    /// The instruct model of the real run: a llama GGUF file or an HF Llama-family folder
    /// (llama, mistral, qwen2, with `tokenizer.json`), loaded by `Llama::load_decoder`.
    #[config(default = "None")]
    pub gguf_path: Option<String>,
    /// Synthetic: problems in the generator's training text.
    #[config(default = 30000)]
    pub gen_corpus: usize,
    /// Synthetic: generator training steps (600 leaves it right on about two problems in three
    /// greedily, so there is something to verify).
    #[config(default = 600)]
    pub gen_steps: usize,
    /// Synthetic: generator hidden size.
    #[config(default = 128)]
    pub gen_d_model: usize,
    /// Synthetic: generator layers.
    #[config(default = 4)]
    pub gen_layers: usize,
    /// Synthetic: training window (tokens).
    #[config(default = 192)]
    pub gen_seq_len: usize,
    /// Synthetic: windows per step.
    #[config(default = 16)]
    pub gen_batch: usize,
    /// Problems whose sampled solutions are annotated (PRM / ORM training data).
    #[config(default = 300)]
    pub n_annotate: usize,
    /// Solutions sampled per annotated problem (duplicates dropped).
    #[config(default = 4)]
    pub solutions_per_problem: usize,
    /// Completions per step (N of the paper).
    #[config(default = 8)]
    pub completions: usize,
    /// Reward-model training steps (each of PRM-HE, PRM-SE, ORM).
    #[config(default = 400)]
    pub rm_steps: usize,
    /// Reward-model learning rate.
    #[config(default = 3e-4)]
    pub rm_lr: f64,
    /// Reward-model batch.
    #[config(default = 16)]
    pub rm_batch: usize,
    /// Longest reward-model input (tokens); longer solutions lose their last steps.
    #[config(default = 512)]
    pub max_len: usize,
    /// Held-out problems for verification and PPO evaluation.
    #[config(default = 150)]
    pub n_test: usize,
    /// Candidates sampled per test problem.
    #[config(default = 64)]
    pub n_candidates: usize,
    /// Best-of-N sizes (each at most `n_candidates`).
    #[config(default = "vec![1, 4, 16, 64]")]
    pub n_values: Vec<usize>,
    /// How PRM step scores become a solution score.
    #[config(default = "Aggregate::Min")]
    pub aggregate: Aggregate,
    /// Best-of-N and reward-weighted voting skip candidates with no final answer (score 0): such
    /// a candidate cannot be right, and a reward model that reads a truncated solution (steps
    /// beyond `max_len` are dropped) never sees that it has none. False scores them like any
    /// other candidate.
    #[config(default = true)]
    pub skip_unanswered: bool,
    /// Sampling of solutions and completions.
    #[config(
        default = "SampleConfig::new().with_temperature(0.8).with_top_p(0.95).with_max_new_tokens(160)"
    )]
    pub sample: SampleConfig,
    /// PPO iterations (0 skips RL).
    #[config(default = 40)]
    pub ppo_iterations: usize,
    /// PPO learning rate (1e-4 and 3e-5 with 16 rollouts collapsed both policies in the earlier
    /// runs: see the README).
    #[config(default = 2e-5)]
    pub ppo_lr: f64,
    /// PPO settings (the reward kind is set per run): 32 rollouts per iteration (16 gave
    /// advantages too noisy for the reward to climb), the paper's KL coefficient 0.04 as the
    /// start of a proportional controller toward 1 nat per response, never below 0.02. The
    /// controller's gain is 1 (up to ×1.2 per iteration), not Ziegler et al.'s 0.1: with 0.1
    /// (at most ×1.02 per iteration) the one-seed sizing run's step-PPO drifted to 4–5 nats
    /// while the coefficient only went from 0.040 to 0.056 in 40 iterations.
    #[config(
        default = "PpoConfig::new().with_rollouts(32).with_kl_target(Some(1.0)).with_kl_rule(KlRule::Proportional { gain: 1.0 }).with_kl_coef_min(0.02)"
    )]
    pub ppo: PpoConfig,
    /// Seed of the problems, the generator, the annotation and the test candidates.
    #[config(default = 42)]
    pub seed: u64,
    /// Seeds of the reward models (data order) and of PPO (rollouts, value head): each trains
    /// every reward model, verifies with them and runs both PPO variants; the claims pair them.
    /// Budget measured on the 2-core Xeon (2026-12-07, one seed): the shared part (generator
    /// 289 s, annotation 145 s, test candidates 72 s) 8.4 min, then 16.4 min per seed (five
    /// reward models 702 s, scoring 125 s, both PPO runs 155 s): five seeds ≈ 92 min.
    #[config(default = "vec![1, 2, 3, 4, 5]")]
    pub seeds: Vec<u64>,
    /// Also train a PRM on the true step labels (synthetic problems, which know them): the same
    /// reward model without the annotation's noise, to tell label noise from capacity.
    #[config(default = true)]
    pub true_label_prm: bool,
    /// Weight of the within-problem pairwise loss of the extra PRM trained on the HE labels
    /// ("PRM (within-problem)": per-step cross-entropy plus a logistic loss on the solution
    /// scores of a right and a wrong solution to one problem); 0 skips that reward model.
    #[config(default = 1.0)]
    pub rm_pair_weight: f64,
}

impl MathShepherdConfig {
    /// The full size.
    pub fn full() -> Self {
        Self::new()
    }

    /// Seconds on a laptop CPU.
    pub fn quick() -> Self {
        Self::new()
            .with_gen_corpus(400)
            .with_gen_steps(30)
            .with_gen_d_model(32)
            .with_gen_layers(2)
            .with_gen_seq_len(96)
            .with_gen_batch(4)
            .with_n_annotate(4)
            .with_solutions_per_problem(2)
            .with_completions(2)
            .with_rm_steps(4)
            .with_rm_batch(4)
            .with_n_test(4)
            .with_n_candidates(4)
            .with_n_values(vec![1, 4])
            .with_sample(
                SampleConfig::new()
                    .with_temperature(0.8)
                    .with_top_p(0.95)
                    .with_max_new_tokens(48),
            )
            .with_seeds(vec![1, 2])
            .with_ppo_iterations(2)
            .with_ppo(
                PpoConfig::new().with_rollouts(2).with_sample(
                    SampleConfig::new()
                        .with_temperature(1.0)
                        .with_top_p(1.0)
                        .with_max_new_tokens(48),
                ),
            )
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.n_annotate == 0 || self.n_test == 0 || self.n_candidates == 0 {
            return bad("n_annotate, n_test and n_candidates must be >= 1");
        }
        if self
            .n_values
            .iter()
            .any(|&n| n == 0 || n > self.n_candidates)
        {
            return bad("every n_values entry must be in 1..=n_candidates");
        }
        if self.seeds.is_empty() {
            return bad("seeds must name at least one seed");
        }
        if !(self.rm_pair_weight >= 0.0 && self.rm_pair_weight.is_finite()) {
            return bad("rm_pair_weight must be a finite number >= 0");
        }
        if self.data_dir.is_some() != self.gguf_path.is_some() {
            return bad("the real run needs both data_dir (GSM8K) and gguf_path (the model)");
        }
        Ok(())
    }
}

/// The tokenizer, model and prompt layout of a run.
struct Setup {
    tok: Box<dyn Tokenizer>,
    stop: Vec<u32>,
    labels: (u32, u32),
    chat: bool,
    name: String,
}

impl Setup {
    fn prompt(&self, question: &str) -> String {
        if self.chat {
            format!(
                "<|im_start|>user\n{question}\nSolve it step by step, one step per line, and end \
                 with \"The answer is: <number>\".<|im_end|>\n<|im_start|>assistant\n"
            )
        } else {
            format!("{question}\n")
        }
    }
}

fn single_token(tok: &dyn Tokenizer, s: &str) -> Result<u32> {
    match tok.encode(s)?.as_slice() {
        [t] => Ok(*t),
        other => Err(Error::InvalidConfig(format!(
            "label token {s:?} is not one token ({other:?})"
        ))),
    }
}

/// The steps of a sampled solution: its non-blank lines.
pub fn parse_steps(text: &str) -> Vec<String> {
    text.split(SEP)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

struct GenTask {
    windows: LmWindows,
    batch: usize,
    device: Device,
}

impl Task<Llama> for GenTask {
    fn loss(&mut self, m: &Llama, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let idx: Vec<usize> = (0..self.batch)
            .map(|_| ctx.rng.below(self.windows.len()))
            .collect();
        let (x, y) = self
            .windows
            .batch(&idx, &self.device)
            .map_err(trainer::Error::task)?;
        Ok(m.lm_loss(x, y).into())
    }
}

/// Mean training loss over the last tenth of the steps.
fn final_loss(records: &[trainer::Record]) -> f64 {
    let losses: Vec<f64> = records
        .iter()
        .filter_map(|r| match r {
            trainer::Record::Train { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect();
    let k = (losses.len() / 10).max(1).min(losses.len().max(1));
    losses[losses.len().saturating_sub(k)..].iter().sum::<f64>() / k as f64
}

fn schedule(steps: usize, lr: f64, seed: u64) -> TrainerConfig {
    TrainerConfig::new(steps.max(1))
        .with_lr(lr)
        .with_seed(seed)
        .with_schedule(LrSchedule::WarmupCosine {
            warmup_steps: steps / 20,
            min_ratio: 0.1,
        })
        .with_grad_clip(Some(trainer::GradClip::GlobalNorm(1.0)))
}

/// One verification candidate and its reward-model scores (`candidates.jsonl`: the first
/// seed's reward models).
#[derive(Clone, Debug, Serialize)]
pub struct ScoredCandidate {
    /// Index of the test problem.
    pub problem: usize,
    /// Steps parsed.
    pub steps: usize,
    /// Final answer.
    pub answer: Option<String>,
    /// Whether it is right.
    pub right: bool,
    /// Solution score per reward model ([`RmKind::key`]), as scored, before `skip_unanswered`.
    pub scores: BTreeMap<String, f64>,
}

/// The reward models a run trains (each from the generator's weights, per seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RmKind {
    /// PRM on the hard-estimation step labels (the paper's PRM).
    PrmHe,
    /// PRM on the soft-estimation step labels.
    PrmSe,
    /// PRM on the true step labels (synthetic problems only): the same model without the
    /// annotation's label noise.
    PrmTrue,
    /// PRM on the HE labels with the within-problem pairwise loss added
    /// ([`MathShepherdConfig::rm_pair_weight`]).
    PrmHePairwise,
    /// ORM on the final answer's correctness.
    Orm,
}

impl RmKind {
    /// Every kind, in the tables' order.
    pub const ALL: [RmKind; 5] = [
        RmKind::Orm,
        RmKind::PrmHe,
        RmKind::PrmSe,
        RmKind::PrmTrue,
        RmKind::PrmHePairwise,
    ];

    /// The method's name in tables and claims (its best-of-N row).
    pub fn name(self) -> &'static str {
        match self {
            Self::PrmHe => "PRM",
            Self::PrmSe => "PRM (SE labels)",
            Self::PrmTrue => "PRM (true labels)",
            Self::PrmHePairwise => "PRM (within-problem)",
            Self::Orm => "ORM",
        }
    }

    /// The key in JSON maps.
    pub fn key(self) -> &'static str {
        match self {
            Self::PrmHe => "prm_he",
            Self::PrmSe => "prm_se",
            Self::PrmTrue => "prm_true",
            Self::PrmHePairwise => "prm_he_pairwise",
            Self::Orm => "orm",
        }
    }

    /// A PRM reads a tag after every step, the ORM one after the solution.
    fn every_step(self) -> bool {
        self != Self::Orm
    }
}

/// One annotated solution.
#[derive(Clone, Debug, Serialize)]
pub struct Annotated {
    /// Index of the problem.
    pub problem: usize,
    /// The steps.
    pub steps: Vec<String>,
    /// HE labels.
    pub hard: Vec<f64>,
    /// SE labels.
    pub soft: Vec<f64>,
    /// True step correctness (synthetic only).
    pub truth: Option<Vec<bool>>,
    /// Whether the final answer is right.
    pub outcome: bool,
}

/// Verification accuracy of one method at one N.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyRow {
    /// Method.
    pub method: String,
    /// Candidates per group.
    pub n: usize,
    /// Accuracy.
    pub accuracy: f64,
}

/// What one seed's reward models and PPO runs measured (the generator, the annotations and
/// the test candidates are shared by every seed).
#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    /// The seed (reward-model and PPO data order, PPO sampling, the value head).
    pub seed: u64,
    /// Final training loss per reward model ([`RmKind::key`]).
    pub rm_final_loss: BTreeMap<String, f64>,
    /// Verification accuracies.
    pub verification: Vec<VerifyRow>,
    /// How well each reward model's solution score separates right from wrong test candidates
    /// (ROC AUC over all candidates of all test problems; 0.5 = chance).
    pub rm_auc: BTreeMap<String, Option<f64>>,
    /// The same AUC computed inside each test problem and averaged over the problems that have
    /// right and wrong candidates: what best-of-N depends on.
    pub rm_auc_within: BTreeMap<String, Option<f64>>,
    /// Greedy accuracy after ORM-PPO and after step-PPO (when PPO ran).
    pub ppo: Option<(f64, f64)>,
    /// Per PPO iteration of ORM-PPO and step-PPO (when PPO ran).
    pub ppo_curves: Vec<PpoCurve>,
    /// Seconds: training the reward models, scoring the candidates, PPO with its evaluation.
    pub seconds: (f64, f64, f64),
}

/// Everything the run measured.
#[derive(Clone, Debug, Serialize)]
pub struct MathShepherdMetrics {
    /// Device.
    pub device: String,
    /// Model.
    pub model: String,
    /// Data.
    pub data: String,
    /// Seconds spent training the generator (0 for a pretrained model).
    pub generator_train_s: f64,
    /// Greedy accuracy of the generator on the test problems (no RL).
    pub greedy_accuracy: f64,
    /// Solutions annotated, steps labelled, completions decoded, seconds.
    pub annotation: (usize, usize, usize, f64),
    /// Share of steps labelled good by HE / SE (mean).
    pub label_rates: (f64, f64),
    /// Annotated solutions that reach the gold answer (the ORM's positive examples).
    pub solutions_right: usize,
    /// HE / SE (≥ 0.5) accuracy against the true step correctness (synthetic only).
    pub annotation_accuracy: Option<(f64, f64)>,
    /// (right, wrong) pairs of solutions to one annotated problem (the pairwise loss's data).
    pub training_pairs: usize,
    /// Test candidates: total, without a final answer, truncated to `max_len` for scoring.
    pub candidates: (usize, usize, usize),
    /// Test problems with both right and wrong candidates (those the within-problem AUC uses).
    pub problems_with_both: usize,
    /// Seconds spent sampling the test candidates.
    pub candidates_s: f64,
    /// Per seed.
    pub seeds: Vec<SeedResult>,
}

/// What one PPO run's rollouts looked like, iteration by iteration.
#[derive(Debug, Clone, Serialize)]
pub struct PpoCurve {
    /// `ORM-PPO` or `step-PPO`.
    pub run: String,
    /// Mean summed score reward of the iteration's rollouts (before the KL penalty).
    pub score_reward: Vec<f64>,
    /// Mean summed per-token KL estimate to the reference policy.
    pub kl: Vec<f64>,
    /// Mean response length (tokens).
    pub response_tokens: Vec<f64>,
    /// The KL coefficient the iteration's rewards used (constant unless `ppo.kl_target` is set).
    pub kl_coef: Vec<f64>,
}

impl PpoCurve {
    /// The curve of a PPO run from its training records (one rollout batch per `epochs` steps).
    fn from_records(run: &str, records: &[trainer::Record], epochs: usize) -> Self {
        let mut c = Self {
            run: run.to_string(),
            score_reward: Vec::new(),
            kl: Vec::new(),
            response_tokens: Vec::new(),
            kl_coef: Vec::new(),
        };
        for r in records {
            if let trainer::Record::Train { step, extra, .. } = r
                && (step - 1) % epochs.max(1) == 0
            {
                let get = |k: &str| extra.get(k).copied().unwrap_or(f64::NAN);
                c.score_reward.push(get("score_reward"));
                c.kl.push(get("kl"));
                c.response_tokens.push(get("response_tokens"));
                c.kl_coef.push(get("kl_coef"));
            }
        }
        c
    }
}

/// One report line per PPO run: its rollouts at the first and the last iteration.
fn ppo_curve_lines(curves: &[PpoCurve]) -> Vec<String> {
    let ends = |v: &[f64]| {
        (
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
        )
    };
    curves
        .iter()
        .map(|c| {
            let (r0, r1) = ends(&c.score_reward);
            let (k0, k1) = ends(&c.kl);
            let (t0, t1) = ends(&c.response_tokens);
            let (c0, c1) = ends(&c.kl_coef);
            format!(
                "\n{} rollouts, first → last iteration: score reward {r0:.2} → {r1:.2}, KL \
                 {k0:.2} → {k1:.2} (coefficient {c0:.3} → {c1:.3}), response {t0:.0} → {t1:.0} \
                 tokens (`ppo_reward.svg`, `ppo_length.svg`).\n",
                c.run
            )
        })
        .collect()
}

fn greedy_accuracy(
    model: &Llama,
    setup: &Setup,
    problems: &[Problem],
    max_new: usize,
    device: &Device,
    ctx: &mut RunCtx<'_>,
    label: &str,
) -> Result<f64> {
    let cfg = SampleConfig::greedy(max_new);
    let mut rng = Rng::seed_from(0);
    let mut ok = 0;
    for (i, p) in problems.iter().enumerate() {
        ctx.report_stage(label, i, problems.len());
        let prompt = setup.tok.encode(&setup.prompt(&p.question))?;
        let ids = sample(model, &prompt, 1, &cfg, &setup.stop, &mut rng, device)?
            .pop()
            .unwrap_or_default();
        let text = setup.tok.decode(&ids)?;
        if extract_answer(&text).is_some_and(|a| answers_equal(&a, &p.gold)) {
            ok += 1;
        }
    }
    ctx.report_stage(label, problems.len(), problems.len());
    Ok(ok as f64 / problems.len().max(1) as f64)
}

fn tagged(
    setup: &Setup,
    question: &str,
    steps: &[String],
    every: bool,
    max_len: usize,
) -> Result<(TaggedIds, usize)> {
    let t = encode_tagged(
        setup.tok.as_ref(),
        &setup.prompt(question),
        steps,
        TAG,
        SEP,
        every,
    )?;
    truncate(&t, max_len, Truncation::DropSteps)
}

/// Runs the experiment into `ctx.dir`: problems and the generator, greedy accuracy, sampling
/// and annotation, the test candidates; then per seed the reward models, best-of-N
/// verification and PPO; then the claims and the report.
pub fn run(cfg: &MathShepherdConfig, ctx: &mut RunCtx<'_>) -> Result<Report> {
    cfg.validate()?;
    let prep = prepare(cfg, ctx)?;
    let gen_infer = prep.generator.valid();
    let greedy = greedy_accuracy(
        &gen_infer,
        &prep.setup,
        &prep.test_problems,
        cfg.sample.max_new_tokens,
        &ctx.device.clone(),
        ctx,
        "greedy decoding (test problems)",
    )?;
    let ann = annotate_solutions(cfg, ctx, &prep, &gen_infer)?;
    write_annotations(ctx, &prep, &ann.annotated)?;
    let cands = sample_candidates(cfg, ctx, &prep, &gen_infer)?;
    let mut seeds = Vec::with_capacity(cfg.seeds.len());
    let mut scored = Vec::new();
    for (i, &seed) in cfg.seeds.iter().enumerate() {
        let (r, s) = run_seed(cfg, ctx, &prep, &ann.annotated, &cands, seed)?;
        if i == 0 {
            scored = s;
        }
        seeds.push(r);
    }
    let claims = evaluate_claims(&seeds, greedy, cfg)?;
    trainer::claims::write_claims(&ctx.path("claims.json"), &claims)?;
    let metrics = MathShepherdMetrics {
        device: ctx.device_name.clone(),
        model: prep.setup.name.clone(),
        data: prep.data_name.clone(),
        generator_train_s: prep.gen_s,
        greedy_accuracy: greedy,
        annotation: (
            ann.annotated.len(),
            ann.n_steps,
            ann.completions,
            ann.seconds,
        ),
        label_rates: ann.label_rates,
        solutions_right: ann.solutions_right,
        annotation_accuracy: ann.accuracy,
        training_pairs: within_problem_pairs(&ann.annotated).len(),
        candidates: cands.counts,
        problems_with_both: cands.problems_with_both,
        candidates_s: cands.seconds,
        seeds,
    };
    write_jsonl(&ctx.path("candidates.jsonl"), &scored)?;
    if let Some(first) = metrics.seeds.first()
        && !first.ppo_curves.is_empty()
    {
        write_ppo_plots(&first.ppo_curves, ctx)?;
    }
    let (table, body) = write_report(cfg, &prep, &metrics, &claims, ctx)?;
    Ok(ctx.finish(cfg, &metrics, "math-shepherd", table, body)?)
}

/// The reward models of a run: ORM, PRM-HE and PRM-SE always; the PRM on true labels where
/// the problems know them; the pairwise PRM when its weight is above 0.
fn rm_kinds(cfg: &MathShepherdConfig, prep: &Prepared) -> Vec<RmKind> {
    RmKind::ALL
        .into_iter()
        .filter(|k| match k {
            RmKind::PrmTrue => cfg.true_label_prm && prep.truth_of.is_some(),
            RmKind::PrmHePairwise => cfg.rm_pair_weight > 0.0,
            _ => true,
        })
        .collect()
}

/// One seed: every reward model, verification with them, and PPO; with the candidates' scores.
fn run_seed(
    cfg: &MathShepherdConfig,
    ctx: &mut RunCtx<'_>,
    prep: &Prepared,
    annotated: &[Annotated],
    cands: &TestCandidates,
    seed: u64,
) -> Result<(SeedResult, Vec<ScoredCandidate>)> {
    let t0 = Instant::now();
    let mut rms = Vec::new();
    let mut rm_final_loss = BTreeMap::new();
    for kind in rm_kinds(cfg, prep) {
        let (m, loss) = train_reward_model(cfg, ctx, prep, annotated, kind, seed)?;
        rm_final_loss.insert(kind.key().to_string(), loss);
        rms.push((kind, m.valid()));
    }
    let rm_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let ver = verify(cfg, ctx, cands, &rms)?;
    let verify_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let by_kind = |k: RmKind| rms.iter().find(|(kind, _)| *kind == k).map(|(_, m)| m);
    let (mut ppo, mut ppo_curves) = (None, Vec::new());
    if cfg.ppo_iterations > 0
        && let (Some(orm), Some(prm)) = (by_kind(RmKind::Orm), by_kind(RmKind::PrmHe))
    {
        let (orm_ppo, orm_curve) = run_ppo(cfg, ctx, prep, RewardKind::Outcome, orm, seed)?;
        let (step_ppo, step_curve) = run_ppo(cfg, ctx, prep, RewardKind::Step, prm, seed)?;
        ppo = Some((orm_ppo, step_ppo));
        ppo_curves = vec![orm_curve, step_curve];
    }
    let result = SeedResult {
        seed,
        rm_final_loss,
        verification: ver.rows,
        rm_auc: ver.auc,
        rm_auc_within: ver.auc_within,
        ppo,
        ppo_curves,
        seconds: (rm_s, verify_s, t2.elapsed().as_secs_f64()),
    };
    Ok((result, ver.scored))
}

/// The problems, their tokenizer and prompt format, and the generator.
struct Prepared {
    setup: Setup,
    generator: Llama,
    train_problems: Vec<Problem>,
    test_problems: Vec<Problem>,
    /// The synthetic problems with their chains (true step correctness), per training problem.
    truth_of: Option<Vec<ChainProblem>>,
    gen_s: f64,
    data_name: String,
}

/// GSM8K with a Llama-family checkpoint, or the synthetic problems with a word-level Llama
/// trained here on their reference solutions.
fn prepare(cfg: &MathShepherdConfig, ctx: &mut RunCtx<'_>) -> Result<Prepared> {
    let ad = ctx.device.clone().autodiff();
    let mut rng = Rng::seed_from(cfg.seed);
    let prepared = match (&cfg.data_dir, &cfg.gguf_path) {
        (Some(d), Some(g)) => {
            let (m, tok) = Llama::load_decoder(Path::new(g), plm::checkpoint::LoadDtype::F32, &ad)?;
            let mut stop = Vec::new();
            for s in ["<|im_end|>", "<|endoftext|>"] {
                if let Some(id) = tok.token_to_id(s) {
                    stop.push(id);
                }
            }
            let labels = (single_token(&tok, "+")?, single_token(&tok, "-")?);
            let mut train = read_gsm8k(&Path::new(d).join("train.jsonl"))?;
            let mut test = read_gsm8k(&Path::new(d).join("test.jsonl"))?;
            rng.shuffle(&mut train);
            rng.shuffle(&mut test);
            test.truncate(cfg.n_test);
            let setup = Setup {
                tok: Box::new(tok),
                stop,
                labels,
                chat: true,
                name: g.clone(),
            };
            Prepared {
                setup,
                generator: m,
                train_problems: train,
                test_problems: test,
                truth_of: None,
                gen_s: 0.0,
                data_name: format!("GSM8K ({d})"),
            }
        }
        _ => {
            let corpus = problems(&mut rng, cfg.gen_corpus);
            let docs: Vec<String> = corpus
                .iter()
                .map(|p| {
                    format!(
                        "{}\n{}",
                        p.problem.question,
                        p.problem.reference_steps.join(SEP)
                    )
                })
                .collect();
            let tok = WordTokenizer::build(docs.iter().map(String::as_str), 2, &[" ки"]);
            let mut stream = Vec::new();
            for d in &docs {
                stream.extend(tok.encode_text(d));
                stream.push(0);
            }
            let windows = LmWindows::new(stream, cfg.gen_seq_len, cfg.gen_seq_len / 2)?;
            ad.seed(cfg.seed);
            let m = LlamaConfig::new(
                Tokenizer::vocab_size(&tok),
                cfg.gen_d_model,
                cfg.gen_layers,
                4,
                2,
                cfg.gen_d_model * 8 / 3,
            )
            .with_max_seq_len(1024)
            .init(&ad)?;
            let t0 = Instant::now();
            let out = Trainer::new(schedule(cfg.gen_steps, 3e-3, cfg.seed), &ad)
                .with_progress(|p| ctx.report_progress(p))
                .fit(
                    m,
                    &mut GenTask {
                        windows,
                        batch: cfg.gen_batch,
                        device: ad.clone(),
                    },
                )?;
            let gen_s = t0.elapsed().as_secs_f64();
            let train: Vec<ChainProblem> = problems(&mut rng, cfg.n_annotate + 64);
            let test: Vec<ChainProblem> = problems(&mut rng, cfg.n_test);
            let labels = (single_token(&tok, "+")?, single_token(&tok, "-")?);
            let vocab = Tokenizer::vocab_size(&tok);
            let setup = Setup {
                tok: Box::new(tok),
                stop: vec![0],
                labels,
                chat: false,
                name: format!(
                    "word-level Llama (d {}, {} layers, {} tokens) trained here for {} steps",
                    cfg.gen_d_model, cfg.gen_layers, vocab, cfg.gen_steps
                ),
            };
            let truth_of: Option<Vec<ChainProblem>> = Some(train.clone());
            Prepared {
                setup,
                generator: out.model,
                train_problems: train.into_iter().map(|c| c.problem).collect(),
                test_problems: test.into_iter().map(|c| c.problem).collect(),
                truth_of,
                gen_s,
                data_name: "synthetic arithmetic word problems (2–6 steps)".to_string(),
            }
        }
    };
    Ok(prepared)
}

/// Sampled solutions with their step labels.
struct Annotation {
    annotated: Vec<Annotated>,
    completions: usize,
    seconds: f64,
    n_steps: usize,
    solutions_right: usize,
    label_rates: (f64, f64),
    accuracy: Option<(f64, f64)>,
}

/// Samples solutions to the training problems and labels every step with N completions (HE and
/// SE), with the label rates and, on synthetic problems, the labels' accuracy.
fn annotate_solutions(
    cfg: &MathShepherdConfig,
    ctx: &mut RunCtx<'_>,
    prep: &Prepared,
    gen_infer: &Llama,
) -> Result<Annotation> {
    let dev = ctx.device.clone();
    let Prepared {
        setup,
        train_problems,
        truth_of,
        ..
    } = prep;
    let t0 = Instant::now();
    let mut policy = LmPolicy {
        model: gen_infer,
        tok: setup.tok.as_ref(),
        cfg: cfg.sample.clone(),
        stop: setup.stop.clone(),
        max_batch: cfg.completions.max(cfg.solutions_per_problem),
        rng: Rng::seed_from(cfg.seed ^ 0xA11),
        device: dev.clone(),
    };
    let mut annotated: Vec<Annotated> = Vec::new();
    let mut completions = 0;
    let stage = "sampling and annotating solutions (problems)";
    let n_annotate = cfg.n_annotate.min(train_problems.len());
    for (pi, p) in train_problems.iter().take(n_annotate).enumerate() {
        ctx.report_stage(stage, pi, n_annotate);
        let prompt = setup.prompt(&p.question);
        let mut seen: Vec<Vec<String>> = Vec::new();
        for text in policy.complete(&prompt, cfg.solutions_per_problem)? {
            let steps = parse_steps(&text);
            if steps.is_empty() || seen.contains(&steps) {
                continue;
            }
            seen.push(steps.clone());
            let labels = annotate(&mut policy, &prompt, &steps, &p.gold, cfg.completions, SEP)?;
            completions += labels.completions;
            let outcome = extract_answer(&text).is_some_and(|a| answers_equal(&a, &p.gold));
            let truth = truth_of.as_ref().map(|t| step_truth(&t[pi], &steps));
            annotated.push(Annotated {
                problem: pi,
                steps,
                hard: labels.hard,
                soft: labels.soft,
                truth,
                outcome,
            });
        }
    }
    ctx.report_stage(stage, n_annotate, n_annotate);
    let annotate_s = t0.elapsed().as_secs_f64();
    if annotated.is_empty() {
        return Err(Error::InvalidConfig(
            "the generator produced no solutions to annotate".into(),
        ));
    }
    let n_steps: usize = annotated.iter().map(|a| a.steps.len()).sum();
    let mean =
        |f: &dyn Fn(&Annotated) -> f64| annotated.iter().map(f).sum::<f64>() / n_steps as f64;
    let solutions_right = annotated.iter().filter(|a| a.outcome).count();
    let label_rates = (
        mean(&|a| a.hard.iter().sum()),
        mean(&|a| a.soft.iter().sum()),
    );
    let annotation_accuracy = truth_of.as_ref().map(|_| {
        let (mut he, mut se) = (0.0, 0.0);
        for a in &annotated {
            let t = a.truth.as_deref().unwrap_or(&[]);
            he += label_accuracy(&a.hard, t, 0.5) * a.steps.len() as f64;
            se += label_accuracy(&a.soft, t, 0.5) * a.steps.len() as f64;
        }
        (he / n_steps as f64, se / n_steps as f64)
    });
    Ok(Annotation {
        annotated,
        completions,
        seconds: annotate_s,
        n_steps,
        solutions_right,
        label_rates,
        accuracy: annotation_accuracy,
    })
}

/// The HE labels in the Math-Shepherd format (`annotations.jsonl`).
fn write_annotations(ctx: &RunCtx<'_>, prep: &Prepared, annotated: &[Annotated]) -> Result<()> {
    let (setup, train_problems) = (&prep.setup, &prep.train_problems);
    let rows = annotated
        .iter()
        .map(|a| {
            to_shepherd(
                &LabeledSolution {
                    question: train_problems[a.problem].question.clone(),
                    steps: a.steps.clone(),
                    labels: a.hard.clone(),
                },
                if setup.chat { "GSM8K" } else { "synthetic" },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    write_jsonl(&ctx.path("annotations.jsonl"), &rows)?;
    Ok(())
}

/// `(right, wrong)` index pairs of annotated solutions to one problem whose outcomes differ.
fn within_problem_pairs(annotated: &[Annotated]) -> Vec<(usize, usize)> {
    let mut by_problem: BTreeMap<usize, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, a) in annotated.iter().enumerate() {
        let e = by_problem.entry(a.problem).or_default();
        if a.outcome {
            e.0.push(i);
        } else {
            e.1.push(i);
        }
    }
    by_problem
        .values()
        .flat_map(|(right, wrong)| {
            right
                .iter()
                .flat_map(move |&r| wrong.iter().map(move |&w| (r, w)))
        })
        .collect()
}

/// A reward model of `kind` trained from the generator's weights with `seed` (data order), with
/// its final training loss.
fn train_reward_model(
    cfg: &MathShepherdConfig,
    ctx: &mut RunCtx<'_>,
    prep: &Prepared,
    annotated: &[Annotated],
    kind: RmKind,
    seed: u64,
) -> Result<(RewardModel, f64)> {
    let ad = ctx.device.clone().autodiff();
    let Prepared {
        setup,
        generator,
        train_problems,
        ..
    } = prep;
    let mut examples = Vec::with_capacity(annotated.len());
    for a in annotated {
        let q = &train_problems[a.problem].question;
        let (t, kept) = tagged(setup, q, &a.steps, kind.every_step(), cfg.max_len)?;
        let targets = match kind {
            RmKind::Orm => vec![f64::from(u8::from(a.outcome))],
            RmKind::PrmSe => a.soft[..kept].to_vec(),
            RmKind::PrmTrue => match &a.truth {
                Some(t) => t[..kept].iter().map(|&b| f64::from(u8::from(b))).collect(),
                None => {
                    return Err(Error::InvalidConfig(
                        "a PRM on true labels needs problems that know them (synthetic)".into(),
                    ));
                }
            },
            RmKind::PrmHe | RmKind::PrmHePairwise => a.hard[..kept].to_vec(),
        };
        examples.push((t, targets));
    }
    let (pairs, pair_weight) = if kind == RmKind::PrmHePairwise {
        // a solution truncated to no step has no score to rank
        let scored = |i: usize| !examples[i].0.tag_pos.is_empty();
        let pairs = within_problem_pairs(annotated)
            .into_iter()
            .filter(|&(r, w)| scored(r) && scored(w))
            .collect();
        (pairs, cfg.rm_pair_weight)
    } else {
        (Vec::new(), 0.0)
    };
    let rm = RewardModel::label_tokens(generator.clone(), setup.labels.0, setup.labels.1)?;
    let out = Trainer::new(schedule(cfg.rm_steps, cfg.rm_lr, seed), &ad)
        .with_progress(|p| ctx.report_progress(p))
        .fit(
            rm,
            &mut RewardTask {
                examples,
                batch_size: cfg.rm_batch,
                device: ad.clone(),
                pairs,
                pair_weight,
            },
        )?;
    Ok((out.model, final_loss(&out.records)))
}

/// The candidates of one test problem, tagged for both kinds of reward model.
struct ProblemCandidates {
    gold: String,
    answers: Vec<Option<String>>,
    right: Vec<bool>,
    /// Steps per candidate.
    n_steps: Vec<usize>,
    /// A candidate without steps, scored on one blank step and given 0.
    empty: Vec<bool>,
    /// Tagged after every step (PRMs) and after the solution (ORM).
    per_step: Vec<TaggedIds>,
    at_end: Vec<TaggedIds>,
}

/// The test problems' candidates, sampled once and scored by every seed's reward models.
struct TestCandidates {
    problems: Vec<ProblemCandidates>,
    /// Candidates, without a final answer, truncated for scoring.
    counts: (usize, usize, usize),
    /// Problems with both right and wrong candidates.
    problems_with_both: usize,
    seconds: f64,
}

/// Samples `n_candidates` solutions per test problem with the generator and tags them.
fn sample_candidates(
    cfg: &MathShepherdConfig,
    ctx: &mut RunCtx<'_>,
    prep: &Prepared,
    gen_infer: &Llama,
) -> Result<TestCandidates> {
    let t0 = Instant::now();
    let (setup, test_problems) = (&prep.setup, &prep.test_problems);
    let mut policy = LmPolicy {
        model: gen_infer,
        tok: setup.tok.as_ref(),
        cfg: cfg.sample.clone(),
        stop: setup.stop.clone(),
        max_batch: cfg.n_candidates,
        rng: Rng::seed_from(cfg.seed ^ 0xB0B),
        device: ctx.device.clone(),
    };
    let mut problems = Vec::with_capacity(test_problems.len());
    let (mut n_cands, mut n_unanswered, mut n_truncated, mut both) = (0, 0, 0, 0);
    let stage = "sampling test candidates (problems)";
    for (pi, p) in test_problems.iter().enumerate() {
        ctx.report_stage(stage, pi, test_problems.len());
        let texts = policy.complete(&setup.prompt(&p.question), cfg.n_candidates)?;
        let steps: Vec<Vec<String>> = texts.iter().map(|t| parse_steps(t)).collect();
        let answers: Vec<Option<String>> = texts.iter().map(|t| extract_answer(t)).collect();
        let empty: Vec<bool> = steps.iter().map(Vec::is_empty).collect();
        let blank = ["".to_string()];
        let encode = |every: bool| -> Result<Vec<(TaggedIds, usize)>> {
            steps
                .iter()
                .map(|s| {
                    let s = if s.is_empty() { &blank[..] } else { &s[..] };
                    tagged(setup, &p.question, s, every, cfg.max_len)
                })
                .collect()
        };
        let (per_step, kept): (Vec<TaggedIds>, Vec<usize>) = encode(true)?.into_iter().unzip();
        let at_end: Vec<TaggedIds> = encode(false)?.into_iter().map(|(t, _)| t).collect();
        let right: Vec<bool> = answers
            .iter()
            .map(|a| a.as_deref().is_some_and(|a| answers_equal(a, &p.gold)))
            .collect();
        n_cands += steps.len();
        n_unanswered += answers.iter().filter(|a| a.is_none()).count();
        n_truncated += steps
            .iter()
            .zip(&kept)
            .filter(|(s, k)| !s.is_empty() && **k < s.len())
            .count();
        both += usize::from(right.iter().any(|&r| r) && right.iter().any(|&r| !r));
        problems.push(ProblemCandidates {
            gold: p.gold.clone(),
            answers,
            right,
            n_steps: steps.iter().map(Vec::len).collect(),
            empty,
            per_step,
            at_end,
        });
    }
    ctx.report_stage(stage, test_problems.len(), test_problems.len());
    Ok(TestCandidates {
        problems,
        counts: (n_cands, n_unanswered, n_truncated),
        problems_with_both: both,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Best-of-N verification with one seed's reward models and their AUCs.
struct Verification {
    rows: Vec<VerifyRow>,
    auc: BTreeMap<String, Option<f64>>,
    auc_within: BTreeMap<String, Option<f64>>,
    scored: Vec<ScoredCandidate>,
}

/// The methods of the verification table for these reward models, in its order.
fn methods(kinds: &[RmKind]) -> Vec<String> {
    let mut m = vec!["SC".to_string()];
    m.extend(kinds.iter().map(|k| k.name().to_string()));
    if kinds.contains(&RmKind::Orm) {
        m.push("SC+ORM".into());
    }
    if kinds.contains(&RmKind::PrmHe) {
        m.push("SC+PRM".into());
    }
    m.push("pass@N".into());
    m
}

/// Scores every candidate with each reward model, and counts how often each method picks a
/// right answer, for every N (averaged over the disjoint groups of N among the candidates).
fn verify(
    cfg: &MathShepherdConfig,
    ctx: &mut RunCtx<'_>,
    cands: &TestCandidates,
    rms: &[(RmKind, RewardModel)],
) -> Result<Verification> {
    let dev = ctx.device.clone();
    let kinds: Vec<RmKind> = rms.iter().map(|(k, _)| *k).collect();
    let names = methods(&kinds);
    let col = |name: &str| names.iter().position(|m| m == name);
    let mut hits = vec![vec![0.0f64; cfg.n_values.len()]; names.len()];
    let mut pooled: Vec<Vec<f64>> = vec![Vec::new(); rms.len()];
    let mut pooled_right: Vec<bool> = Vec::new();
    let mut within: Vec<Vec<f64>> = vec![Vec::new(); rms.len()];
    let mut scored = Vec::new();
    let stage = "scoring test candidates (problems)";
    for (pi, pc) in cands.problems.iter().enumerate() {
        ctx.report_stage(stage, pi, cands.problems.len());
        let mut scores = Vec::with_capacity(rms.len());
        for (kind, m) in rms {
            let (ex, how) = if kind.every_step() {
                (&pc.per_step, cfg.aggregate)
            } else {
                (&pc.at_end, Aggregate::Last)
            };
            let raw = m.scores(ex, 16, &dev)?;
            let s: Vec<f64> = raw
                .iter()
                .zip(&pc.empty)
                .map(|(r, &e)| if e { 0.0 } else { aggregate(r, how) })
                .collect();
            scores.push(s);
        }
        for (k, s) in scores.iter().enumerate() {
            if let Some(v) = trainer::metrics::roc_auc(s, &pc.right) {
                within[k].push(v);
            }
            pooled[k].extend_from_slice(s);
        }
        pooled_right.extend_from_slice(&pc.right);
        for i in 0..pc.answers.len() {
            scored.push(ScoredCandidate {
                problem: pi,
                steps: pc.n_steps[i],
                answer: pc.answers[i].clone(),
                right: pc.right[i],
                scores: kinds
                    .iter()
                    .zip(&scores)
                    .map(|(k, s)| (k.key().to_string(), s[i]))
                    .collect(),
            });
        }
        if cfg.skip_unanswered {
            for s in &mut scores {
                for (v, a) in s.iter_mut().zip(&pc.answers) {
                    if a.is_none() {
                        *v = 0.0;
                    }
                }
            }
        }
        let right = |a: &Option<String>| a.as_deref().is_some_and(|a| answers_equal(a, &pc.gold));
        // self-consistency reads no score
        let unscored = vec![0.0; pc.answers.len()];
        for (k, &n) in cfg.n_values.iter().enumerate() {
            let groups = cfg.n_candidates / n;
            for g in 0..groups {
                let r = g * n..(g + 1) * n;
                let group = |s: &[f64]| -> Vec<Candidate> {
                    r.clone()
                        .map(|i| Candidate {
                            answer: pc.answers[i].clone(),
                            score: s[i],
                        })
                        .collect()
                };
                let mut add = |name: &str, a: Option<String>| {
                    if let Some(c) = col(name) {
                        hits[c][k] += f64::from(u8::from(right(&a))) / groups as f64;
                    }
                };
                add("SC", majority(&group(&unscored)));
                for (kind, s) in kinds.iter().zip(&scores) {
                    let c = group(s);
                    add(kind.name(), best_of_n(&c).and_then(|i| c[i].answer.clone()));
                    match kind {
                        RmKind::Orm => add("SC+ORM", weighted_vote(&c)),
                        RmKind::PrmHe => add("SC+PRM", weighted_vote(&c)),
                        _ => {}
                    }
                }
                let any = r.clone().any(|i| pc.right[i]);
                if let Some(c) = col("pass@N") {
                    hits[c][k] += f64::from(u8::from(any)) / groups as f64;
                }
            }
        }
    }
    ctx.report_stage(stage, cands.problems.len(), cands.problems.len());
    let nt = cands.problems.len().max(1) as f64;
    let rows = names
        .iter()
        .enumerate()
        .flat_map(|(m, name)| {
            let hits = &hits;
            cfg.n_values
                .iter()
                .enumerate()
                .map(move |(k, &n)| VerifyRow {
                    method: name.clone(),
                    n,
                    accuracy: hits[m][k] / nt,
                })
        })
        .collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Ok(Verification {
        rows,
        auc: kinds
            .iter()
            .zip(&pooled)
            .map(|(k, s)| {
                (
                    k.key().to_string(),
                    trainer::metrics::roc_auc(s, &pooled_right),
                )
            })
            .collect(),
        auc_within: kinds
            .iter()
            .zip(&within)
            .map(|(k, w)| (k.key().to_string(), mean(w)))
            .collect(),
        scored,
    })
}

/// PPO from the generator with step rewards from the PRM (`RewardKind::Step`) or the outcome
/// reward from the ORM; greedy accuracy afterwards and the rollout curves.
fn run_ppo(
    cfg: &MathShepherdConfig,
    ctx: &mut RunCtx<'_>,
    prep: &Prepared,
    kind: RewardKind,
    rm: &RewardModel,
    seed: u64,
) -> Result<(f64, PpoCurve)> {
    let ad = ctx.device.clone().autodiff();
    let dev = ctx.device.clone();
    let Prepared {
        setup,
        generator,
        train_problems,
        test_problems,
        ..
    } = prep;
    let max_new = cfg.sample.max_new_tokens;
    let prompts: Vec<String> = train_problems
        .iter()
        .map(|p| setup.prompt(&p.question))
        .collect();
    let questions: Vec<(String, String)> = train_problems
        .iter()
        .map(|p| (setup.prompt(&p.question), p.question.clone()))
        .collect();
    let every = kind == RewardKind::Step;
    let scorer: Scorer<'_> = Box::new(|prompt: &str, steps: &[String]| {
        let q = questions
            .iter()
            .find(|(p, _)| p == prompt)
            .map(|(_, q)| q.as_str())
            .unwrap_or(prompt);
        let (t, _) = tagged(setup, q, steps, every, cfg.max_len)?;
        Ok(rm.scores(&[t], 1, &dev)?.pop().unwrap_or_default())
    });
    let pcfg = PpoConfig {
        reward: kind,
        ..cfg.ppo.clone()
    };
    let epochs = pcfg.ppo_epochs;
    let mut task = PpoTask::new(
        pcfg,
        prompts,
        setup.tok.as_ref(),
        generator.valid(),
        scorer,
        setup.stop.clone(),
        SEP,
        ad.clone(),
    )?;
    // the value head's initialisation
    ad.seed(seed);
    let actor = ActorCritic::new(generator.clone(), &ad);
    let out = Trainer::new(
        TrainerConfig::new(cfg.ppo_iterations * epochs)
            .with_lr(cfg.ppo_lr)
            .with_seed(seed)
            .with_grad_clip(Some(trainer::GradClip::GlobalNorm(1.0))),
        &ad,
    )
    .with_progress(|p| ctx.report_progress(p))
    .fit(actor, &mut task)?;
    let name = if kind == RewardKind::Step {
        "step-PPO"
    } else {
        "ORM-PPO"
    };
    let acc = greedy_accuracy(
        &out.model.valid().policy,
        setup,
        test_problems,
        max_new,
        &dev,
        ctx,
        "greedy decoding after PPO (test problems)",
    )?;
    Ok((acc, PpoCurve::from_records(name, &out.records, epochs)))
}

/// The PPO rollout curves: score reward and response length per iteration.
fn write_ppo_plots(ppo_curves: &[PpoCurve], ctx: &RunCtx<'_>) -> Result<()> {
    let line = |f: fn(&PpoCurve) -> &Vec<f64>| -> Vec<Series> {
        ppo_curves
            .iter()
            .map(|c| {
                Series::new(
                    &c.run,
                    f(c).iter()
                        .enumerate()
                        .map(|(i, &y)| ((i + 1) as f64, y))
                        .collect(),
                )
            })
            .collect()
    };
    write_line_plot(
        &ctx.path("ppo_reward.svg"),
        "PPO rollouts: score reward (before KL)",
        "iteration",
        "mean summed score reward",
        &line(|c| &c.score_reward),
    )?;
    write_line_plot(
        &ctx.path("ppo_length.svg"),
        "PPO rollouts: response length",
        "iteration",
        "tokens",
        &line(|c| &c.response_tokens),
    )?;
    Ok(())
}

/// The metric of the best-of-N claims.
const BON: &str = "best-of-N accuracy at the largest N";
/// The metric of the PPO claims.
const GREEDY: &str = "greedy accuracy on the test problems";
/// The metric of the diagnostic claims.
const WITHIN: &str = "within-problem AUC";

/// The claims a run judges, declared before it runs: the paper's (Table 1: verification;
/// Table 3: PPO) and two diagnostics of why they may fail here (label noise, the objective).
pub fn claims() -> Vec<Claim> {
    vec![
        Claim::new(
            "prm-above-orm",
            BON,
            "PRM",
            "ORM",
            Direction::Greater,
            "best-of-N with the PRM beats best-of-N with the ORM (Table 1)",
        ),
        Claim::new(
            "prm-above-self-consistency",
            BON,
            "PRM",
            "SC",
            Direction::Greater,
            "best-of-N with the PRM beats self-consistency (Table 1)",
        ),
        Claim::new(
            "sc-prm-above-sc",
            BON,
            "SC+PRM",
            "SC",
            Direction::Greater,
            "self-consistency weighted by the PRM beats plain self-consistency (Table 1)",
        ),
        Claim::new(
            "step-ppo-above-orm-ppo",
            GREEDY,
            "step-PPO",
            "ORM-PPO",
            Direction::Greater,
            "step-by-step PPO with the PRM beats PPO with the ORM (Table 3)",
        ),
        Claim::new(
            "orm-ppo-above-no-rl",
            GREEDY,
            "ORM-PPO",
            "no RL",
            Direction::Greater,
            "PPO with the ORM improves on the model before RL (Table 3)",
        ),
        Claim::new(
            "true-labels-rank-better",
            WITHIN,
            "PRM (true labels)",
            "PRM",
            Direction::Greater,
            "diagnostic, not the paper's: a PRM on noise-free step labels ranks a problem's \
             candidates better than one on the HE labels",
        ),
        Claim::new(
            "pairwise-ranks-better",
            WITHIN,
            "PRM (within-problem)",
            "PRM",
            Direction::Greater,
            "diagnostic, not the paper's: the within-problem pairwise loss ranks a problem's \
             candidates better than the per-step loss alone",
        ),
    ]
}

/// A method's value of a claim's metric in one seed's result (`greedy`: the model before RL).
fn seed_value(
    r: &SeedResult,
    greedy: f64,
    n_max: usize,
    method: &str,
    metric: &str,
) -> Option<f64> {
    match metric {
        BON => r
            .verification
            .iter()
            .find(|v| v.method == method && v.n == n_max)
            .map(|v| v.accuracy),
        GREEDY => match method {
            "no RL" => r.ppo.map(|_| greedy),
            "ORM-PPO" => r.ppo.map(|p| p.0),
            "step-PPO" => r.ppo.map(|p| p.1),
            _ => None,
        },
        WITHIN => RmKind::ALL
            .iter()
            .find(|k| k.name() == method)
            .and_then(|k| r.rm_auc_within.get(k.key()).copied().flatten()),
        _ => None,
    }
}

/// Evaluates the [`claims`] whose methods ran, paired by seed.
fn evaluate_claims(
    seeds: &[SeedResult],
    greedy: f64,
    cfg: &MathShepherdConfig,
) -> Result<Vec<ClaimResult>> {
    let n_max = cfg.n_values.iter().copied().max().unwrap_or(1);
    Ok(trainer::claims::evaluate_available(
        &claims(),
        |m, metric| {
            seeds
                .iter()
                .map(|r| seed_value(r, greedy, n_max, m, metric))
                .collect()
        },
    )?)
}

/// The verification plot, the README-ready table and the report body.
fn write_report(
    cfg: &MathShepherdConfig,
    prep: &Prepared,
    m: &MathShepherdMetrics,
    claims: &[ClaimResult],
    ctx: &RunCtx<'_>,
) -> Result<(String, String)> {
    let (setup, data_name, test_problems) = (&prep.setup, &prep.data_name, &prep.test_problems);
    let kinds = rm_kinds(cfg, prep);
    let names = methods(&kinds);
    let greedy = m.greedy_accuracy;
    let (n_annotated, n_steps, completions, annotate_s) = m.annotation;
    let (n_cands, n_unanswered, n_truncated) = m.candidates;
    // accuracy of a method at N, per seed
    let acc = |method: &str, n: usize| -> Vec<f64> {
        m.seeds
            .iter()
            .filter_map(|s| {
                s.verification
                    .iter()
                    .find(|v| v.method == method && v.n == n)
                    .map(|v| v.accuracy)
            })
            .collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let series: Vec<Series> = names
        .iter()
        .map(|name| {
            Series::new(
                name,
                cfg.n_values
                    .iter()
                    .map(|&n| ((n as f64).log2(), 100.0 * mean(&acc(name, n))))
                    .collect(),
            )
        })
        .collect();
    write_line_plot(
        &ctx.path("accuracy_vs_n.svg"),
        "Best-of-N verification (mean over seeds)",
        "log2 N",
        "accuracy (%)",
        &series,
    )?;
    let mut headers = vec!["method".to_string()];
    headers.extend(cfg.n_values.iter().map(|n| format!("N={n}")));
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|name| {
            let mut r = vec![name.clone()];
            r.extend(
                cfg.n_values
                    .iter()
                    .map(|&n| trainer::claims::format_mean_interval(&acc(name, n), 100.0, 1)),
            );
            r
        })
        .collect();
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    let table = markdown_table(&h, &rows);
    let mut body = format!(
        "\nModel: {}. Data: {}. Greedy accuracy {:.1}% on {} test problems.\n\n\
         Annotation: {} solutions, {} steps, {} completions (N = {}) in {:.0} s; \
         good-step rate HE {:.2}, SE {:.2}; {} of the solutions reach the gold answer \
         (the ORM's positive examples{}); {} within-problem (right, wrong) pairs.\n",
        setup.name,
        data_name,
        100.0 * greedy,
        test_problems.len(),
        n_annotated,
        n_steps,
        completions,
        cfg.completions,
        annotate_s,
        m.label_rates.0,
        m.label_rates.1,
        m.solutions_right,
        if m.solutions_right == 0 || m.solutions_right == n_annotated {
            ": one class only, so the ORM learns a constant"
        } else {
            ""
        },
        m.training_pairs,
    );
    if let Some((he, se)) = m.annotation_accuracy {
        body.push_str(&format!(
            "Annotation accuracy against the true step correctness: HE {:.1}%, SE (≥ 0.5) {:.1}%.\n",
            100.0 * he,
            100.0 * se
        ));
    }
    body.push_str(&format!(
        "\nVerification above: accuracy (%) over the {} seeds' reward models, mean ± half the \
         95 % t interval; every seed scores the same {n_cands} test candidates ({n_unanswered} \
         without a final answer{}, {n_truncated} truncated to {} tokens), sampled once in \
         {:.0} s.\n\n",
        m.seeds.len(),
        if cfg.skip_unanswered {
            ", skipped by best-of-N and weighted voting"
        } else {
            ""
        },
        cfg.max_len,
        m.candidates_s,
    ));
    let per_kind = |f: &dyn Fn(&SeedResult) -> Option<f64>| -> Vec<f64> {
        m.seeds.iter().filter_map(f).collect()
    };
    let rm_rows: Vec<Vec<String>> = kinds
        .iter()
        .map(|k| {
            let key = k.key();
            vec![
                k.name().to_string(),
                trainer::claims::format_mean_interval(
                    &per_kind(&|s| s.rm_final_loss.get(key).copied()),
                    1.0,
                    3,
                ),
                trainer::claims::format_mean_interval(
                    &per_kind(&|s| s.rm_auc.get(key).copied().flatten()),
                    1.0,
                    3,
                ),
                trainer::claims::format_mean_interval(
                    &per_kind(&|s| s.rm_auc_within.get(key).copied().flatten()),
                    1.0,
                    3,
                ),
            ]
        })
        .collect();
    body.push_str(&markdown_table(
        &[
            "reward model",
            "final training loss",
            "AUC, all candidates",
            &format!(
                "AUC inside a problem ({} problems with both)",
                m.problems_with_both
            ),
        ],
        &rm_rows,
    ));
    let ppo: Vec<(f64, f64)> = m.seeds.iter().filter_map(|s| s.ppo).collect();
    if !ppo.is_empty() {
        let orm: Vec<f64> = ppo.iter().map(|p| p.0).collect();
        let step: Vec<f64> = ppo.iter().map(|p| p.1).collect();
        body.push_str(&format!(
            "\n{}",
            markdown_table(
                &["policy", "greedy accuracy (%)"],
                &[
                    vec!["no RL".into(), format!("{:.1}", 100.0 * greedy)],
                    vec![
                        "ORM-PPO".into(),
                        trainer::claims::format_mean_interval(&orm, 100.0, 1)
                    ],
                    vec![
                        "step-PPO (PRM)".into(),
                        trainer::claims::format_mean_interval(&step, 100.0, 1)
                    ],
                ]
            )
        ));
    }
    if let Some(first) = m.seeds.first() {
        for c in &ppo_curve_lines(&first.ppo_curves) {
            body.push_str(c);
        }
    }
    body.push_str(&format!(
        "\nClaims (paired by seed; `claims.json`):\n\n{}",
        trainer::claims::claims_table(claims)
    ));
    let secs: Vec<String> = m
        .seeds
        .iter()
        .map(|s| {
            format!(
                "seed {}: reward models {:.0} s, scoring {:.0} s, PPO {:.0} s",
                s.seed, s.seconds.0, s.seconds.1, s.seconds.2
            )
        })
        .collect();
    body.push_str(&format!(
        "\nTime: generator {:.0} s, annotation {:.0} s, test candidates {:.0} s; {}.\n",
        m.generator_train_s,
        annotate_s,
        m.candidates_s,
        secs.join("; ")
    ));
    Ok((table, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ppo_curve_keeps_the_first_step_of_each_rollout_batch() {
        let rec = |step: usize, r: f64| trainer::Record::Train {
            step,
            loss: 0.0,
            lr: 1e-4,
            grad_norm: 1.0,
            extra: trainer::Metrics::from([
                ("score_reward".to_string(), r),
                ("kl".to_string(), r / 10.0),
                ("response_tokens".to_string(), 40.0 + r),
                ("kl_coef".to_string(), 0.04),
            ]),
        };
        let records: Vec<_> = (1..=6).map(|s| rec(s, s as f64)).collect();
        let c = PpoCurve::from_records("ORM-PPO", &records, 2);
        assert_eq!(c.score_reward, vec![1.0, 3.0, 5.0]);
        assert_eq!(c.kl, vec![0.1, 0.3, 0.5]);
        assert_eq!(c.response_tokens, vec![41.0, 43.0, 45.0]);
        assert_eq!(c.kl_coef, vec![0.04; 3]);
        let lines = ppo_curve_lines(&[c]);
        assert!(
            lines[0].contains("score reward 1.00 → 5.00"),
            "{}",
            lines[0]
        );
    }
}
