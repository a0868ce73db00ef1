//! `math-shepherd`: automatic process annotation, PRM vs ORM verification and step-level PPO.
//!
//! Embedded default (offline): arithmetic word problems of [`crate::synthetic`] (2–6 steps,
//! exact answers). A word-level (byte-fallback) Llama-style generator is trained from scratch on their reference
//! solutions for a fixed number of steps, so it solves a share of them but not all. The same model
//! is the completer (N completions per step) that labels its own sampled solutions with hard (HE)
//! and soft (SE) estimation; the labels are scored against the true step correctness, known by
//! construction. A PRM (HE labels), a PRM on SE labels and an ORM (final-answer labels) are
//! trained from the generator's weights, read through the two label tokens `+`/`-` at the step
//! tag `ки`. On held-out problems: greedy, self-consistency, ORM / PRM best-of-N and
//! SC + ORM / PRM for N in `n_values` (averaged over the disjoint groups of N among
//! `n_candidates` samples), and greedy accuracy after step-PPO (PRM rewards per step), ORM-PPO
//! (one reward at the end) and no RL.
//!
//! Real run: `data_dir` (GSM8K `train.jsonl` / `test.jsonl`) with `gguf_path` (SmolLM2-135M-
//! Instruct, any llama GGUF with a byte-level BPE, or an HF Llama / Mistral / Qwen2 folder with
//! its `tokenizer.json`) runs the same pipeline on GSM8K with the chat template; there is no step truth there, so annotation accuracy is not reported.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use plm::llama::{Llama, LlamaConfig};
use serde::Serialize;
use textdata::LmWindows;
use trainer::report::{Series, markdown_table, write_line_plot};
use trainer::{BatchCtx, LrSchedule, Report, Rng, RunCtx, StepLoss, Task, Trainer, TrainerConfig};

use crate::annotate::{annotate, label_accuracy};
use crate::answer::{answers_equal, extract_answer};
use crate::format::{LabeledSolution, Problem, read_gsm8k, to_shepherd, write_jsonl};
use crate::model::{RewardModel, RewardTask};
use crate::ppo::{ActorCritic, PpoConfig, PpoTask, RewardKind, Scorer};
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
    #[config(default = 60)]
    pub ppo_iterations: usize,
    /// PPO learning rate.
    #[config(default = 1e-4)]
    pub ppo_lr: f64,
    /// PPO settings (the reward kind is set per run).
    #[config(default = "PpoConfig::new()")]
    pub ppo: PpoConfig,
    /// Seed.
    #[config(default = 42)]
    pub seed: u64,
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

/// One verification candidate and its reward-model scores (`candidates.jsonl`).
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
    /// PRM-HE solution score (as scored, before `skip_unanswered`).
    pub prm: f64,
    /// PRM-SE solution score.
    pub prm_se: f64,
    /// ORM score.
    pub orm: f64,
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
    /// Greedy accuracy of the generator on the test problems.
    pub greedy_accuracy: f64,
    /// Solutions annotated, steps labelled, completions decoded, seconds.
    pub annotation: (usize, usize, usize, f64),
    /// Share of steps labelled good by HE / SE (mean).
    pub label_rates: (f64, f64),
    /// Annotated solutions that reach the gold answer (the ORM's positive examples).
    pub solutions_right: usize,
    /// HE / SE (≥ 0.5) accuracy against the true step correctness (synthetic only).
    pub annotation_accuracy: Option<(f64, f64)>,
    /// Final reward-model training losses (PRM-HE, PRM-SE, ORM).
    pub rm_final_loss: (f64, f64, f64),
    /// Verification accuracies.
    pub verification: Vec<VerifyRow>,
    /// How well each reward model's solution score separates right from wrong test candidates
    /// (ROC AUC over all candidates of all test problems; 0.5 = chance): PRM-HE, PRM-SE, ORM.
    pub rm_auc: (Option<f64>, Option<f64>, Option<f64>),
    /// The same AUC computed inside each test problem and averaged over the problems that have
    /// right and wrong candidates: what best-of-N depends on.
    pub rm_auc_within: (Option<f64>, Option<f64>, Option<f64>),
    /// Test candidates: total, without a final answer, truncated to `max_len` for scoring.
    pub candidates: (usize, usize, usize),
    /// Greedy accuracy: no RL, ORM-PPO, step-PPO (when PPO ran).
    pub ppo: Option<(f64, f64, f64)>,
    /// Per PPO iteration of ORM-PPO and step-PPO (when PPO ran).
    pub ppo_curves: Vec<PpoCurve>,
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
/// and annotation, the three reward models, best-of-N verification, PPO, then the report.
pub fn run(cfg: &MathShepherdConfig, ctx: &mut RunCtx<'_>) -> Result<Report> {
    cfg.validate()?;
    let dev = ctx.device.clone();
    let prep = prepare(cfg, ctx)?;
    let gen_infer = prep.generator.valid();
    let greedy = greedy_accuracy(
        &gen_infer,
        &prep.setup,
        &prep.test_problems,
        cfg.sample.max_new_tokens,
        &dev,
        ctx,
        "greedy decoding (test problems)",
    )?;
    let ann = annotate_solutions(cfg, ctx, &prep, &gen_infer)?;
    write_annotations(ctx, &prep, &ann.annotated)?;
    let (prm, prm_loss) = train_reward_model(cfg, ctx, &prep, &ann.annotated, "he")?;
    let (prm_se, se_loss) = train_reward_model(cfg, ctx, &prep, &ann.annotated, "se")?;
    let (orm, orm_loss) = train_reward_model(cfg, ctx, &prep, &ann.annotated, "orm")?;
    let rms = RewardModels {
        prm: prm.valid(),
        prm_se: prm_se.valid(),
        orm: orm.valid(),
    };
    let ver = verify(cfg, ctx, &prep, &gen_infer, &rms)?;
    let mut ppo_curves = Vec::new();
    let ppo = if cfg.ppo_iterations > 0 {
        let (orm_ppo, orm_curve) = run_ppo(cfg, ctx, &prep, RewardKind::Outcome, &rms.orm)?;
        let (step_ppo, step_curve) = run_ppo(cfg, ctx, &prep, RewardKind::Step, &rms.prm)?;
        ppo_curves = vec![orm_curve, step_curve];
        write_ppo_plots(&ppo_curves, ctx)?;
        Some((greedy, orm_ppo, step_ppo))
    } else {
        None
    };
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
        rm_final_loss: (prm_loss, se_loss, orm_loss),
        verification: ver.rows,
        rm_auc: ver.auc,
        rm_auc_within: ver.auc_within,
        candidates: ver.counts,
        ppo,
        ppo_curves,
    };
    write_jsonl(&ctx.path("candidates.jsonl"), &ver.scored)?;
    let (table, body) = write_report(cfg, &prep, &metrics, ver.n_within, ctx)?;
    Ok(ctx.finish(cfg, &metrics, "math-shepherd", table, body)?)
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

/// A reward model trained from the generator's weights on the HE (`he`) or SE (`se`) step labels
/// (PRM), or on the outcome (`orm`); with its final training loss.
fn train_reward_model(
    cfg: &MathShepherdConfig,
    ctx: &mut RunCtx<'_>,
    prep: &Prepared,
    annotated: &[Annotated],
    label: &str,
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
        let (t, kept) = if label == "orm" {
            tagged(setup, q, &a.steps, false, cfg.max_len)?
        } else {
            tagged(setup, q, &a.steps, true, cfg.max_len)?
        };
        let targets = match label {
            "orm" => vec![f64::from(u8::from(a.outcome))],
            "se" => a.soft[..kept].to_vec(),
            _ => a.hard[..kept].to_vec(),
        };
        examples.push((t, targets));
    }
    let rm = RewardModel::label_tokens(generator.clone(), setup.labels.0, setup.labels.1)?;
    let out = Trainer::new(schedule(cfg.rm_steps, cfg.rm_lr, cfg.seed), &ad)
        .with_progress(|p| ctx.report_progress(p))
        .fit(
            rm,
            &mut RewardTask {
                examples,
                batch_size: cfg.rm_batch,
                device: ad.clone(),
            },
        )?;
    Ok((out.model, final_loss(&out.records)))
}

/// The three reward models, on the inference device.
struct RewardModels {
    prm: RewardModel,
    prm_se: RewardModel,
    orm: RewardModel,
}

/// Best-of-N verification on the test problems and the reward models' AUCs.
struct Verification {
    rows: Vec<VerifyRow>,
    auc: (Option<f64>, Option<f64>, Option<f64>),
    auc_within: (Option<f64>, Option<f64>, Option<f64>),
    /// Candidates, without a final answer, truncated for scoring.
    counts: (usize, usize, usize),
    /// Test problems with both right and wrong candidates (those the within-problem AUC uses).
    n_within: usize,
    scored: Vec<ScoredCandidate>,
}

/// The methods of the verification table, in its order.
const METHODS: [&str; 7] = [
    "SC",
    "ORM",
    "PRM",
    "PRM (SE labels)",
    "SC+ORM",
    "SC+PRM",
    "pass@N",
];

/// Samples N candidates per test problem, scores them with each reward model, and counts how
/// often each method picks a right answer, for every N.
fn verify(
    cfg: &MathShepherdConfig,
    ctx: &mut RunCtx<'_>,
    prep: &Prepared,
    gen_infer: &Llama,
    rms: &RewardModels,
) -> Result<Verification> {
    let dev = ctx.device.clone();
    let (setup, test_problems) = (&prep.setup, &prep.test_problems);
    let (prm_i, prm_se_i, orm_i) = (&rms.prm, &rms.prm_se, &rms.orm);
    let mut cand_policy = LmPolicy {
        model: gen_infer,
        tok: setup.tok.as_ref(),
        cfg: cfg.sample.clone(),
        stop: setup.stop.clone(),
        max_batch: cfg.n_candidates,
        rng: Rng::seed_from(cfg.seed ^ 0xB0B),
        device: dev.clone(),
    };
    let methods = METHODS;
    let mut hits = vec![vec![0.0f64; cfg.n_values.len()]; methods.len()];
    // (PRM-HE, PRM-SE, ORM) solution scores and whether each candidate is right, for the AUC
    let mut auc_scores: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut auc_right: Vec<bool> = Vec::new();
    // the same AUC inside each problem (problems with right and wrong candidates), and every
    // candidate's scores for offline analysis
    let mut within: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut scored: Vec<ScoredCandidate> = Vec::new();
    let (mut n_cands, mut n_unanswered, mut n_truncated) = (0usize, 0usize, 0usize);
    let stage = "sampling and scoring candidates (test problems)";
    for (pi, p) in test_problems.iter().enumerate() {
        ctx.report_stage(stage, pi, test_problems.len());
        let texts = cand_policy.complete(&setup.prompt(&p.question), cfg.n_candidates)?;
        let steps: Vec<Vec<String>> = texts.iter().map(|t| parse_steps(t)).collect();
        let answers: Vec<Option<String>> = texts.iter().map(|t| extract_answer(t)).collect();
        // Each candidate tagged once per tag layout (every step for the PRMs, the end for the
        // ORM); a candidate without steps is scored on an empty step and given 0.
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
        let score_with = |m: &RewardModel, ex: &[TaggedIds], how: Aggregate| -> Result<Vec<f64>> {
            let raw = m.scores(ex, 16, &dev)?;
            Ok(raw
                .iter()
                .zip(&empty)
                .map(|(r, &e)| if e { 0.0 } else { aggregate(r, how) })
                .collect())
        };
        let mut s_prm = score_with(prm_i, &per_step, cfg.aggregate)?;
        let mut s_se = score_with(prm_se_i, &per_step, cfg.aggregate)?;
        let mut s_orm = score_with(orm_i, &at_end, Aggregate::Last)?;
        let right = |a: &Option<String>| a.as_deref().is_some_and(|a| answers_equal(a, &p.gold));
        n_cands += steps.len();
        n_truncated += steps
            .iter()
            .zip(&kept)
            .filter(|(s, k)| !s.is_empty() && **k < s.len())
            .count();
        let rights: Vec<bool> = answers.iter().map(right).collect();
        for (k, sc) in [&s_prm, &s_se, &s_orm].into_iter().enumerate() {
            if let Some(v) = trainer::metrics::roc_auc(sc, &rights) {
                within[k].push(v);
            }
        }
        for (i, a) in answers.iter().enumerate() {
            for (k, sc) in [&s_prm, &s_se, &s_orm].into_iter().enumerate() {
                auc_scores[k].push(sc[i]);
            }
            auc_right.push(rights[i]);
            scored.push(ScoredCandidate {
                problem: pi,
                steps: steps[i].len(),
                answer: a.clone(),
                right: rights[i],
                prm: s_prm[i],
                prm_se: s_se[i],
                orm: s_orm[i],
            });
            if a.is_none() {
                n_unanswered += 1;
                if cfg.skip_unanswered {
                    s_prm[i] = 0.0;
                    s_se[i] = 0.0;
                    s_orm[i] = 0.0;
                }
            }
        }
        for (k, &n) in cfg.n_values.iter().enumerate() {
            let groups = cfg.n_candidates / n;
            for g in 0..groups {
                let r = g * n..(g + 1) * n;
                let cands = |s: &[f64]| -> Vec<Candidate> {
                    r.clone()
                        .map(|i| Candidate {
                            answer: answers[i].clone(),
                            score: s[i],
                        })
                        .collect()
                };
                let pick = |c: &[Candidate]| best_of_n(c).and_then(|i| c[i].answer.clone());
                let (c_prm, c_se, c_orm) = (cands(&s_prm), cands(&s_se), cands(&s_orm));
                let picks = [
                    majority(&c_prm),
                    pick(&c_orm),
                    pick(&c_prm),
                    pick(&c_se),
                    weighted_vote(&c_orm),
                    weighted_vote(&c_prm),
                ];
                for (m, a) in picks.iter().enumerate() {
                    hits[m][k] += f64::from(u8::from(right(a))) / groups as f64;
                }
                let any = r.clone().any(|i| right(&answers[i]));
                hits[6][k] += f64::from(u8::from(any)) / groups as f64;
            }
        }
    }
    ctx.report_stage(stage, test_problems.len(), test_problems.len());
    let nt = test_problems.len() as f64;
    let verification: Vec<VerifyRow> = methods
        .iter()
        .enumerate()
        .flat_map(|(m, name)| {
            let hits = &hits;
            cfg.n_values
                .iter()
                .enumerate()
                .map(move |(k, &n)| VerifyRow {
                    method: name.to_string(),
                    n,
                    accuracy: hits[m][k] / nt,
                })
        })
        .collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Ok(Verification {
        rows: verification,
        auc: (
            trainer::metrics::roc_auc(&auc_scores[0], &auc_right),
            trainer::metrics::roc_auc(&auc_scores[1], &auc_right),
            trainer::metrics::roc_auc(&auc_scores[2], &auc_right),
        ),
        auc_within: (mean(&within[0]), mean(&within[1]), mean(&within[2])),
        counts: (n_cands, n_unanswered, n_truncated),
        n_within: within[0].len(),
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
    let actor = ActorCritic::new(generator.clone(), &ad);
    let out = Trainer::new(
        TrainerConfig::new(cfg.ppo_iterations * epochs)
            .with_lr(cfg.ppo_lr)
            .with_seed(cfg.seed)
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

/// The verification plot, the README-ready table and the report body.
fn write_report(
    cfg: &MathShepherdConfig,
    prep: &Prepared,
    m: &MathShepherdMetrics,
    n_within: usize,
    ctx: &RunCtx<'_>,
) -> Result<(String, String)> {
    let (setup, data_name, test_problems) = (&prep.setup, &prep.data_name, &prep.test_problems);
    let methods = METHODS;
    let verification = &m.verification;
    let greedy = m.greedy_accuracy;
    let (n_annotated, n_steps, completions, annotate_s) = m.annotation;
    let (label_rates, solutions_right) = (m.label_rates, m.solutions_right);
    let (prm_loss, se_loss, orm_loss) = m.rm_final_loss;
    let (n_cands, n_unanswered, n_truncated) = m.candidates;
    let (rm_auc, rm_auc_within) = (m.rm_auc, m.rm_auc_within);
    let series: Vec<Series> = methods
        .iter()
        .map(|m| {
            Series::new(
                *m,
                verification
                    .iter()
                    .filter(|r| r.method == *m)
                    .map(|r| ((r.n as f64).log2(), 100.0 * r.accuracy))
                    .collect(),
            )
        })
        .collect();
    write_line_plot(
        &ctx.path("accuracy_vs_n.svg"),
        "Best-of-N verification",
        "log2 N",
        "accuracy (%)",
        &series,
    )?;
    let mut headers = vec!["method".to_string()];
    headers.extend(cfg.n_values.iter().map(|n| format!("N={n}")));
    let rows: Vec<Vec<String>> = methods
        .iter()
        .map(|m| {
            let mut r = vec![m.to_string()];
            r.extend(
                verification
                    .iter()
                    .filter(|v| v.method == *m)
                    .map(|v| format!("{:.1}", 100.0 * v.accuracy)),
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
         (the ORM's positive examples{}).\n",
        setup.name,
        data_name,
        100.0 * greedy,
        test_problems.len(),
        n_annotated,
        n_steps,
        completions,
        cfg.completions,
        annotate_s,
        label_rates.0,
        label_rates.1,
        solutions_right,
        if solutions_right == 0 || solutions_right == n_annotated {
            ": one class only, so the ORM learns a constant"
        } else {
            ""
        }
    );
    if let Some((he, se)) = m.annotation_accuracy {
        body.push_str(&format!(
            "Annotation accuracy against the true step correctness: HE {:.1}%, SE (≥ 0.5) {:.1}%.\n",
            100.0 * he,
            100.0 * se
        ));
    }
    body.push_str(&format!(
        "\nReward-model final training loss: PRM-HE {prm_loss:.3}, PRM-SE {se_loss:.3}, ORM {orm_loss:.3}.\n"
    ));
    if let Some((none, o, s)) = m.ppo {
        body.push_str(&format!(
            "\n{}",
            markdown_table(
                &["policy", "greedy accuracy (%)"],
                &[
                    vec!["no RL".into(), format!("{:.1}", 100.0 * none)],
                    vec!["ORM-PPO".into(), format!("{:.1}", 100.0 * o)],
                    vec!["step-PPO (PRM)".into(), format!("{:.1}", 100.0 * s)],
                ]
            )
        ));
    }
    for c in &ppo_curve_lines(&m.ppo_curves) {
        body.push_str(c);
    }
    let fmt_auc = |a: Option<f64>| a.map_or("—".to_string(), |v| format!("{v:.3}"));
    body.push_str(&format!(
        "\nTest candidates: {n_cands}, {n_unanswered} without a final answer{}, {n_truncated} \
         truncated to {} tokens for scoring. Solution-score AUC for right vs wrong (0.5 = \
         chance): PRM-HE {}, PRM-SE {}, ORM {}; inside each problem (mean over the {} problems \
         with both): PRM-HE {}, PRM-SE {}, ORM {}.\n",
        if cfg.skip_unanswered {
            " (skipped by best-of-N and weighted voting)"
        } else {
            ""
        },
        cfg.max_len,
        fmt_auc(rm_auc.0),
        fmt_auc(rm_auc.1),
        fmt_auc(rm_auc.2),
        n_within,
        fmt_auc(rm_auc_within.0),
        fmt_auc(rm_auc_within.1),
        fmt_auc(rm_auc_within.2)
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
