//! The `fin-news` experiment.
//!
//! **Stocks** (synthetic by default): every news item of a company becomes an example — its
//! tokens, fine-grained tags (the dictionary's extraction), coarse S/P/O tags, the company's
//! trade window before the news and the next-open label — split chronologically with purging.
//! Models, each over the seeds: trade only, text only, coarse events, fine-grained events
//! (SSPM) and MSSPM (CRF tagger, joint loss, predicted tags at test), for every training-set
//! size of `train_sizes` (the most recent items of the training part: a learning curve).
//! The synthetic news are not all in the extractor's words: a share of the events use a
//! held-out trigger verb (`paraphrase`: the dictionary misses them), a share paraphrase their
//! role words (`role_paraphrase`: units and periods the role patterns do not list, so the event
//! is found with fewer arguments), and a share of the items without an event of their own
//! report a rival's event in the dictionary's words (`rival_events`: a false event for this
//! stock). The extractor's recall and false events on each kind are measured first
//! ([`ExtractionStats`]). Claims (paired by seed, `claims.json`) at each size: fine-grained >
//! coarse > text only, MSSPM > SSPM, and MSSPM > SSPM on the test items whose event the
//! dictionary misses. Accuracy is reported on the test part and on the development part (the
//! period before it), so a model that wins one period and loses the other is seen.
//!
//! **Forex** (synthetic by default): an example every `forex_every_hours` hours; its news are
//! the items of the preceding `forex_lookback_hours`, grouped by time, topic (k-means fitted on
//! the training period's news only) or category, the `per_group` most central items of each
//! group kept; label = next bar's close against the last close, and a trade-only model on the
//! same windows. Besides the unscheduled items, `announcements_per_day` scheduled releases
//! (data and rate decisions at fixed times) state their outcome against the consensus, and only
//! the surprise moves the pair: information the price path cannot show before the release.
//! Claims: category grouping beats time and topic grouping, and beats trade data alone.
//!
//! **Real data** (when the paths are set; `cargo xtask assets` fetches them and the full size
//! picks them up): the Reuters-21578 crude-oil articles of 1987 through the extractor, the
//! windowing and labels against WTI daily prices (session 09:00–14:30 New York, documented
//! guess), with the leakage check; and trade-only models on GOOG daily, EURUSD hourly and the
//! S&P 500 daily (next bar's close against the last close, chronological split), against the
//! majority class and buy-and-hold.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use serde::Serialize;
use trainer::claims::{Claim, ClaimResult, Direction};
use trainer::metrics::mean_std;
use trainer::report::{Series, markdown_table, write_line_plot};
use trainer::{BatchCtx, LrSchedule, Report, RunCtx, StepLoss, Task, Trainer, TrainerConfig};

use crate::events::{EventDictionary, TagSet, Token, coarse_tags, tokenize};
use crate::forex::{
    ForexBatch, ForexConfig, ForexModel, Grouping, NewsItem, TopicModel, extract, group,
};
use crate::metrics::{Backtest, accuracy, backtest, mcc};
use crate::model::{
    EventInput, Sspm, SspmConfig, StockBatch, TagSource, TradeOnly, up_probability,
};
use crate::synthetic::{
    FOREX_CATEGORIES, ForexMarketConfig, StockMarketConfig, forex_market, stock_market,
};
use crate::text::{Vocab, encode_batch};
use crate::time::{self, Minutes};
use crate::trade::{LabelConfig, LabelTarget, PriceSeries, WindowConfig, chrono_split, example};
use crate::{Error, Result};

/// Configuration of the `fin-news` experiment.
#[derive(Config, Debug)]
pub struct FinNewsConfig {
    /// The synthetic stock market.
    #[config(default = "StockMarketConfig::default()")]
    pub stocks: StockMarketConfig,
    /// The synthetic forex market.
    #[config(default = "ForexMarketConfig::default()")]
    pub forex: ForexMarketConfig,
    /// Stock trade window (hourly bars).
    #[config(default = "WindowConfig { steps: 6, bars_per_step: 2 }")]
    pub window: WindowConfig,
    /// Stock labels.
    #[config(default = "LabelConfig { target: LabelTarget::NextOpen, neutral_band: 0.0 }")]
    pub labels: LabelConfig,
    /// Forex trade window.
    #[config(default = "WindowConfig { steps: 12, bars_per_step: 2 }")]
    pub forex_window: WindowConfig,
    /// Hours between forex examples.
    #[config(default = 4)]
    pub forex_every_hours: usize,
    /// Hours of news before a forex example.
    #[config(default = 24)]
    pub forex_lookback_hours: usize,
    /// Groups per forex window (time slots, topics; categories use their own count).
    #[config(default = 6)]
    pub groups: usize,
    /// Items kept per group.
    #[config(default = 2)]
    pub per_group: usize,
    /// Model width.
    #[config(default = 64)]
    pub d_model: usize,
    /// BERT layers.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Tokens per stock news item.
    #[config(default = 64)]
    pub max_len: usize,
    /// Tokens per forex news item.
    #[config(default = 24)]
    pub forex_max_len: usize,
    /// Training-set sizes of the stock learning curve (the most recent examples of the training
    /// part; 0 = all of it).
    #[config(default = "vec![250, 0]")]
    pub train_sizes: Vec<usize>,
    /// Training steps per stock model.
    #[config(default = 600)]
    pub steps: usize,
    /// Training steps per forex model.
    #[config(default = 400)]
    pub forex_steps: usize,
    /// Batch size (stock examples).
    #[config(default = 32)]
    pub batch: usize,
    /// Batch size (forex windows).
    #[config(default = 16)]
    pub forex_batch: usize,
    /// Learning rate.
    #[config(default = 5e-4)]
    pub lr: f64,
    /// Gradient clipping of every model (global norm 1.0 by default).
    #[config(default = "Some(trainer::GradClip::GlobalNorm(1.0))")]
    pub grad_clip: Option<trainer::GradClip>,
    /// η of MSSPM's joint loss.
    #[config(default = 0.5)]
    pub eta: f64,
    /// Training share of the chronological split.
    #[config(default = 0.7)]
    pub train_frac: f64,
    /// Development share.
    #[config(default = 0.1)]
    pub dev_frac: f64,
    /// Seeds (model initialisation and data order; the markets are fixed by their own seeds).
    /// Five: a 3-seed run took 22 min on this 2-core CPU, so five take about 37.
    #[config(default = "vec![1, 2, 3, 4, 5]")]
    pub seeds: Vec<u64>,
    /// Parts to run: `stocks`, `forex`, `real`.
    #[config(default = "vec![\"stocks\".into(), \"forex\".into(), \"real\".into()]")]
    pub parts: Vec<String>,
    /// Event dictionary file (default: the embedded one).
    #[config(default = "None")]
    pub dictionary: Option<String>,
    /// Reuters-21578 `crude` folder (real run).
    #[config(default = "None")]
    pub reuters_dir: Option<String>,
    /// WTI daily prices (`wti.csv.gz`).
    #[config(default = "None")]
    pub wti_path: Option<String>,
    /// GOOG daily OHLCV.
    #[config(default = "None")]
    pub goog_path: Option<String>,
    /// EURUSD hourly OHLCV.
    #[config(default = "None")]
    pub eurusd_path: Option<String>,
    /// S&P 500 daily OHLCV (`sp500.csv.gz`).
    #[config(default = "None")]
    pub sp500_path: Option<String>,
    /// Steps of each real trade-only model.
    #[config(default = 300)]
    pub real_steps: usize,
}

impl FinNewsConfig {
    /// The default size.
    pub fn full() -> Self {
        Self::new()
    }

    /// A size that runs in seconds (smoke tests).
    pub fn quick() -> Self {
        Self::new()
            .with_stocks(StockMarketConfig {
                companies: 4,
                days: 40,
                news_per_day: 4,
                ..Default::default()
            })
            .with_forex(ForexMarketConfig {
                days: 20,
                news_per_day: 12,
                ..Default::default()
            })
            .with_d_model(16)
            .with_n_layers(1)
            .with_n_heads(2)
            .with_max_len(40)
            .with_steps(20)
            .with_forex_steps(10)
            .with_batch(8)
            .with_forex_batch(4)
            .with_real_steps(10)
            .with_train_sizes(vec![40, 0])
            .with_seeds(vec![1])
    }
}

/// One prepared stock example.
#[derive(Clone, Debug)]
struct StockExample {
    time: Minutes,
    tokens: Vec<Token>,
    fine: Vec<usize>,
    coarse: Vec<usize>,
    trade: Vec<f32>,
    up: bool,
    log_return: f64,
    label_end: Minutes,
    /// A planted event the dictionary cannot see.
    paraphrased: bool,
}

/// Scores of one model and seed.
#[derive(Clone, Debug, Serialize)]
pub struct ModelScore {
    /// Model name.
    pub model: String,
    /// Seed.
    pub seed: u64,
    /// Training examples.
    pub train_size: usize,
    /// Test accuracy.
    pub accuracy: f64,
    /// Test MCC.
    pub mcc: f64,
    /// Dev accuracy.
    pub dev_accuracy: f64,
    /// The backtest on the test part.
    pub backtest: Backtest,
    /// Accuracy on the test items whose event the dictionary misses (stocks only).
    pub paraphrased_accuracy: Option<f64>,
}

/// Mean and standard deviation of a model's scores over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Training examples.
    pub train_size: usize,
    /// Mean accuracy.
    pub accuracy: f64,
    /// Its std over seeds.
    pub accuracy_std: f64,
    /// Mean accuracy on the development part (the period before the test part: a model that
    /// wins one period and loses the other is not shown to be better).
    pub dev_accuracy: f64,
    /// Its std over seeds.
    pub dev_accuracy_std: f64,
    /// Mean MCC.
    pub mcc: f64,
    /// Its std.
    pub mcc_std: f64,
    /// Mean strategy log return.
    pub strategy_log_return: f64,
    /// Buy-and-hold log return over the same trades.
    pub buy_hold_log_return: f64,
    /// Mean accuracy on the test items whose event the dictionary misses (stocks).
    pub paraphrased_accuracy: Option<f64>,
}

/// Counts of the data a part of the experiment used.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DataStats {
    /// Examples with a window and a label.
    pub examples: usize,
    /// Train / dev / test sizes.
    pub split: (usize, usize, usize),
    /// Purged for overlapping labels.
    pub purged: usize,
    /// Share of "up" labels in the test part (of all examples for the Reuters sample).
    pub test_up_share: f64,
    /// Examples whose features end after the label start (must be 0).
    pub leakage_violations: usize,
    /// Skipped news (no window or no label).
    pub skipped: usize,
}

/// The dictionary extractor against the synthetic news' planted events: `(found, of)` counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtractionStats {
    /// Planted events in the dictionary's words: type found.
    pub plain: (usize, usize),
    /// Planted events with a held-out trigger verb: type found.
    pub held_out_trigger: (usize, usize),
    /// Planted events with paraphrased role words: type found.
    pub paraphrased_roles: (usize, usize),
    /// Role arguments filled per found event: in the dictionary's words, with paraphrased
    /// roles (means).
    pub roles_per_event: (f64, f64),
    /// Items without an event of their own that report a rival's: an event extracted anyway.
    pub rival_items: (usize, usize),
    /// The other items without an event: an event extracted anyway.
    pub other_no_event: (usize, usize),
}

/// What the stock part measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StockResults {
    /// Data counts.
    pub data: DataStats,
    /// Extracted events by type over all items.
    pub event_types: BTreeMap<String, usize>,
    /// Items with at least one extracted event.
    pub items_with_events: usize,
    /// How the dictionary extractor does on these news, measured before any model.
    pub extraction: ExtractionStats,
    /// Test items whose planted event is paraphrased.
    pub paraphrased_test: usize,
    /// MSSPM's token tag accuracy against the dictionary tags on the test part (per seed).
    pub msspm_tag_accuracy: Vec<f64>,
    /// Every score.
    pub scores: Vec<ModelScore>,
    /// Summaries.
    pub summary: Vec<Summary>,
}

/// What the forex part measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForexResults {
    /// Data counts.
    pub data: DataStats,
    /// News items in the market.
    pub news: usize,
    /// Per grouping: the share of kept items that are relevant (central bank / economy).
    pub relevant_kept: BTreeMap<String, f64>,
    /// Share of relevant items among all window items.
    pub relevant_all: f64,
    /// Every score.
    pub scores: Vec<ModelScore>,
    /// Summaries.
    pub summary: Vec<Summary>,
}

/// The real-data part.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RealResults {
    /// Reuters crude articles read.
    pub reuters_articles: usize,
    /// Extracted events by type.
    pub reuters_event_types: BTreeMap<String, usize>,
    /// Per article.
    pub reuters_examples: Vec<ReutersExample>,
    /// Reuters examples' data counts.
    pub reuters_data: DataStats,
    /// Trade-only results per real series.
    pub trade_only: Vec<RealSeriesResult>,
}

/// One Reuters article through the pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct ReutersExample {
    /// Release time.
    pub time: String,
    /// Title.
    pub title: String,
    /// Events extracted.
    pub events: usize,
    /// Label (up?), when the article has a window and a label.
    pub up: Option<bool>,
    /// The label's log return.
    pub log_return: Option<f64>,
}

/// A trade-only model on one real series.
#[derive(Clone, Debug, Serialize)]
pub struct RealSeriesResult {
    /// Series name.
    pub series: String,
    /// Data counts.
    pub data: DataStats,
    /// Accuracy of always predicting the training majority.
    pub majority_accuracy: f64,
    /// Scores per seed.
    pub scores: Vec<ModelScore>,
    /// Summary.
    pub summary: Summary,
}

/// Everything the run measured.
#[derive(Clone, Debug, Serialize)]
pub struct FinNewsMetrics {
    /// Stock part.
    pub stocks: StockResults,
    /// Forex part.
    pub forex: ForexResults,
    /// Real data.
    pub real: RealResults,
    /// Claims and whether they held.
    pub claims: Vec<ClaimResult>,
    /// Device.
    pub device: String,
}

fn summarise(scores: &[ModelScore], model: &str, train_size: usize) -> Summary {
    let s: Vec<&ModelScore> = scores
        .iter()
        .filter(|s| s.model == model && s.train_size == train_size)
        .collect();
    let (a, sa) = mean_std(&s.iter().map(|x| x.accuracy).collect::<Vec<_>>());
    let (da, dsa) = mean_std(&s.iter().map(|x| x.dev_accuracy).collect::<Vec<_>>());
    let (m, sm) = mean_std(&s.iter().map(|x| x.mcc).collect::<Vec<_>>());
    let (r, _) = mean_std(
        &s.iter()
            .map(|x| x.backtest.strategy_log_return)
            .collect::<Vec<_>>(),
    );
    Summary {
        model: model.into(),
        train_size,
        accuracy: a,
        accuracy_std: sa,
        dev_accuracy: da,
        dev_accuracy_std: dsa,
        mcc: m,
        mcc_std: sm,
        strategy_log_return: r,
        buy_hold_log_return: s
            .first()
            .map_or(f64::NAN, |x| x.backtest.buy_hold_log_return),
        paraphrased_accuracy: {
            let v: Vec<f64> = s.iter().filter_map(|x| x.paraphrased_accuracy).collect();
            (!v.is_empty()).then(|| mean_std(&v).0)
        },
    }
}

fn trainer_config(cfg: &FinNewsConfig, steps: usize, seed: u64) -> TrainerConfig {
    TrainerConfig::new(steps.max(1))
        .with_lr(cfg.lr)
        .with_seed(seed)
        .with_schedule(LrSchedule::WarmupCosine {
            warmup_steps: steps / 10,
            min_ratio: 0.1,
        })
        .with_grad_clip(cfg.grad_clip.clone())
}

// ---------------------------------------------------------------- stocks

struct StockTask<'a> {
    train: &'a [StockExample],
    vocab: &'a Vocab,
    events: EventInput,
    cfg: &'a FinNewsConfig,
    device: Device,
}

fn stock_batch(
    ex: &[&StockExample],
    vocab: &Vocab,
    events: EventInput,
    cfg: &FinNewsConfig,
    device: &Device,
) -> StockBatch {
    let texts: Vec<(&[Token], &[usize])> = ex
        .iter()
        .map(|e| {
            let tags: &[usize] = match events {
                EventInput::None => &[],
                EventInput::Coarse => &e.coarse,
                EventInput::Fine => &e.fine,
            };
            (e.tokens.as_slice(), tags)
        })
        .collect();
    let (ids, mask, tags) = encode_batch(vocab, &texts, cfg.max_len, device);
    let b = ex.len();
    let dim = cfg.window.step_dim();
    let trade: Vec<f32> = ex.iter().flat_map(|e| e.trade.iter().copied()).collect();
    StockBatch {
        ids,
        mask,
        tags,
        trade: Tensor::from_data(TensorData::new(trade, [b, cfg.window.steps, dim]), device),
        labels: Tensor::from_data(
            TensorData::new(ex.iter().map(|e| i64::from(e.up)).collect::<Vec<_>>(), [b]),
            device,
        ),
    }
}

impl Task<Sspm> for StockTask<'_> {
    fn loss(&mut self, m: &Sspm, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let ex: Vec<&StockExample> = (0..self.cfg.batch)
            .map(|_| &self.train[ctx.rng.below(self.train.len())])
            .collect();
        let b = stock_batch(&ex, self.vocab, self.events, self.cfg, &self.device);
        let (loss, pred, crf) = m.loss(&b)?;
        Ok(StepLoss {
            loss,
            extra: [
                ("pred_loss".to_string(), pred),
                ("crf_loss".to_string(), crf),
            ]
            .into(),
        })
    }
}

struct TradeTask<'a> {
    train: &'a [(Vec<f32>, bool)],
    steps: usize,
    batch: usize,
    device: Device,
}

fn trade_tensor(x: &[&[f32]], steps: usize, device: &Device) -> Tensor<3> {
    let b = x.len();
    let dim = x.first().map_or(0, |v| v.len()) / steps.max(1);
    let flat: Vec<f32> = x.iter().flat_map(|v| v.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [b, steps, dim]), device)
}

impl Task<TradeOnly> for TradeTask<'_> {
    fn loss(&mut self, m: &TradeOnly, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let ex: Vec<&(Vec<f32>, bool)> = (0..self.batch)
            .map(|_| &self.train[ctx.rng.below(self.train.len())])
            .collect();
        let x: Vec<&[f32]> = ex.iter().map(|e| e.0.as_slice()).collect();
        let labels = Tensor::<1, Int>::from_data(
            TensorData::new(
                ex.iter().map(|e| i64::from(e.1)).collect::<Vec<_>>(),
                [ex.len()],
            ),
            &self.device,
        );
        let logits = m.forward(trade_tensor(&x, self.steps, &self.device));
        Ok(plm::bert::classification_loss(logits, labels).into())
    }
}

fn score(
    model: &str,
    seed: u64,
    pred: &[bool],
    gold: &[bool],
    rets: &[f64],
    dev_acc: f64,
) -> ModelScore {
    ModelScore {
        model: model.into(),
        seed,
        accuracy: accuracy(pred, gold),
        mcc: mcc(pred, gold),
        dev_accuracy: dev_acc,
        backtest: backtest(pred, rets),
        paraphrased_accuracy: None,
        train_size: 0,
    }
}

/// Chronological split with purging; fills the counts of `stats`. `key` gives an example's
/// time, label end and direction.
fn split_counted<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> (Minutes, Minutes, bool),
    cfg: &FinNewsConfig,
    stats: &mut DataStats,
    what: &str,
) -> Result<crate::trade::Split<T>> {
    stats.examples = items.len();
    let split = chrono_split(
        items,
        |e| key(e).0,
        |e| key(e).1,
        cfg.train_frac,
        cfg.dev_frac,
    )?;
    stats.split = (split.train.len(), split.dev.len(), split.test.len());
    stats.purged = split.purged;
    if split.train.is_empty() || split.test.is_empty() {
        return Err(Error::NotEnoughData(format!(
            "{what} split {:?}",
            stats.split
        )));
    }
    stats.test_up_share =
        split.test.iter().filter(|e| key(e).2).count() as f64 / split.test.len() as f64;
    Ok(split)
}

/// Trade windows and labels of the three parts, and the test log returns.
struct TradeSets<'a> {
    train: &'a [(Vec<f32>, bool)],
    dev: &'a [(Vec<f32>, bool)],
    test: &'a [(Vec<f32>, bool)],
    test_returns: &'a [f64],
}

/// Trains the trade-only baseline (`steps` steps of `batch` windows of `window`) with `seed`
/// and scores it on the test part; returns the score and the test predictions.
fn trade_only_run(
    cfg: &FinNewsConfig,
    sets: &TradeSets<'_>,
    window: WindowConfig,
    (steps, batch): (usize, usize),
    seed: u64,
    ctx: &mut RunCtx<'_>,
) -> Result<(ModelScore, Vec<bool>)> {
    let ad = ctx.device.clone().autodiff();
    let dev = ad.clone().without_autodiff();
    ad.seed(seed);
    let m = TradeOnly::new(window.step_dim(), cfg.d_model, 0.1, &ad)?;
    let out = Trainer::new(trainer_config(cfg, steps, seed), &ad)
        .with_progress(|p| ctx.report_progress(p))
        .fit(
            m,
            &mut TradeTask {
                train: sets.train,
                steps: window.steps,
                batch,
                device: ad.clone(),
            },
        )?;
    let m = out.model.valid();
    let pred = predict_trade(&m, sets.test, window.steps, &dev)?;
    let dpred = predict_trade(&m, sets.dev, window.steps, &dev)?;
    let labels = |v: &[(Vec<f32>, bool)]| -> Vec<bool> { v.iter().map(|e| e.1).collect() };
    let mut sc = score(
        "trade only",
        seed,
        &pred,
        &labels(sets.test),
        sets.test_returns,
        accuracy(&dpred, &labels(sets.dev)),
    );
    sc.train_size = sets.train.len();
    Ok((sc, pred))
}

fn predict_trade(
    m: &TradeOnly,
    x: &[(Vec<f32>, bool)],
    steps: usize,
    device: &Device,
) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(x.len());
    for c in x.chunks(256) {
        let v: Vec<&[f32]> = c.iter().map(|e| e.0.as_slice()).collect();
        out.extend(
            up_probability(m.forward(trade_tensor(&v, steps, device)))?
                .into_iter()
                .map(|p| p >= 0.5),
        );
    }
    Ok(out)
}

fn paraphrased_accuracy(pred: &[bool], test: &[StockExample]) -> f64 {
    let (p, g): (Vec<bool>, Vec<bool>) = pred
        .iter()
        .zip(test)
        .filter(|(_, e)| e.paraphrased)
        .map(|(&p, e)| (p, e.up))
        .unzip();
    accuracy(&p, &g)
}

fn predict_stock(
    m: &Sspm,
    ex: &[StockExample],
    vocab: &Vocab,
    events: EventInput,
    source: TagSource,
    cfg: &FinNewsConfig,
    device: &Device,
) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(ex.len());
    for c in ex.chunks(128) {
        let refs: Vec<&StockExample> = c.iter().collect();
        let b = stock_batch(&refs, vocab, events, cfg, device);
        out.extend(m.predict(&b, source)?.into_iter().map(|p| p >= 0.5));
    }
    Ok(out)
}

fn tag_accuracy(
    m: &Sspm,
    ex: &[StockExample],
    vocab: &Vocab,
    cfg: &FinNewsConfig,
    device: &Device,
) -> Result<f64> {
    let (mut right, mut total) = (0usize, 0usize);
    for c in ex.chunks(128) {
        let refs: Vec<&StockExample> = c.iter().collect();
        let b = stock_batch(&refs, vocab, EventInput::Fine, cfg, device);
        for (e, path) in c.iter().zip(m.tag(&b)?) {
            // position 0 is [CLS]
            for (j, &t) in path.iter().skip(1).enumerate() {
                total += 1;
                right += usize::from(e.fine.get(j).copied().unwrap_or(0) == t);
            }
        }
    }
    Ok(if total == 0 {
        0.0
    } else {
        right as f64 / total as f64
    })
}

fn run_stocks(
    cfg: &FinNewsConfig,
    dict: &EventDictionary,
    ctx: &mut RunCtx<'_>,
) -> Result<StockResults> {
    let ad = ctx.device.clone().autodiff();
    let dev = ad.clone().without_autodiff();
    let market = stock_market(&cfg.stocks)?;
    let mut stats = DataStats::default();
    let mut event_types: BTreeMap<String, usize> = BTreeMap::new();
    let mut with_events = 0;
    let mut ex = ExtractionStats::default();
    let (mut roles_plain, mut roles_para) = ((0usize, 0usize), (0usize, 0usize));
    let mut examples = Vec::new();
    let count = |c: &mut (usize, usize), hit: bool| {
        c.0 += usize::from(hit);
        c.1 += 1;
    };
    for n in &market.news {
        let x = dict.extract(&n.text);
        for e in &x.events {
            *event_types
                .entry(dict.types[e.type_id].name.clone())
                .or_default() += 1;
        }
        with_events += usize::from(!x.events.is_empty());
        match &n.event {
            Some((ty, _)) => {
                let found = x.events.iter().find(|e| dict.types[e.type_id].name == *ty);
                let (c, r) = if n.paraphrased {
                    (&mut ex.held_out_trigger, None)
                } else if n.roles_paraphrased {
                    (&mut ex.paraphrased_roles, Some(&mut roles_para))
                } else {
                    (&mut ex.plain, Some(&mut roles_plain))
                };
                count(c, found.is_some());
                if let (Some(r), Some(e)) = (r, found) {
                    r.0 += e.roles.len();
                    r.1 += 1;
                }
            }
            None if n.rival_event => count(&mut ex.rival_items, !x.events.is_empty()),
            None => count(&mut ex.other_no_event, !x.events.is_empty()),
        }
        let Some((w, l)) = example(&market.series[n.company], n.time, cfg.window, cfg.labels)?
        else {
            stats.skipped += 1;
            continue;
        };
        stats.leakage_violations += usize::from(w.last_end > l.start);
        examples.push(StockExample {
            time: n.time,
            fine: dict.tag_ids(&x),
            coarse: coarse_tags(&x),
            tokens: x.tokens,
            trade: w.features,
            up: l.up,
            log_return: l.log_return,
            label_end: l.end,
            paraphrased: n.paraphrased,
        });
    }
    let split = split_counted(
        examples,
        |e| (e.time, e.label_end, e.up),
        cfg,
        &mut stats,
        "stock",
    )?;
    let vocab = Vocab::build(split.train.iter().map(|e| e.tokens.as_slice()), 2, 5000);
    let fine_tags = dict.fine_tags();
    let gold: Vec<bool> = split.test.iter().map(|e| e.up).collect();
    let rets: Vec<f64> = split.test.iter().map(|e| e.log_return).collect();
    let dev_gold: Vec<bool> = split.dev.iter().map(|e| e.up).collect();
    let models: [(&str, Option<EventInput>, bool); 5] = [
        ("trade only", None, false),
        ("text only", Some(EventInput::None), false),
        ("coarse events", Some(EventInput::Coarse), false),
        ("SSPM (fine-grained)", Some(EventInput::Fine), false),
        ("MSSPM", Some(EventInput::Fine), true),
    ];
    let mut scores = Vec::new();
    let mut tag_acc = Vec::new();
    let mut sizes: Vec<usize> = cfg
        .train_sizes
        .iter()
        .map(|&n| {
            if n == 0 {
                split.train.len()
            } else {
                n.min(split.train.len())
            }
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for &size in &sizes {
        // the most recent `size` training examples
        let train_part = &split.train[split.train.len() - size..];
        for &seed in &cfg.seeds {
            for (name, events, crf) in models {
                ad.seed(seed);
                match events {
                    None => {
                        let pairs = |v: &[StockExample]| -> Vec<(Vec<f32>, bool)> {
                            v.iter().map(|e| (e.trade.clone(), e.up)).collect()
                        };
                        let (train, d, t) =
                            (pairs(train_part), pairs(&split.dev), pairs(&split.test));
                        let sets = TradeSets {
                            train: &train,
                            dev: &d,
                            test: &t,
                            test_returns: &rets,
                        };
                        let (mut sc, pred) = trade_only_run(
                            cfg,
                            &sets,
                            cfg.window,
                            (cfg.steps, cfg.batch),
                            seed,
                            ctx,
                        )?;
                        sc.model = name.to_string();
                        sc.paraphrased_accuracy = Some(paraphrased_accuracy(&pred, &split.test));
                        sc.train_size = size;
                        scores.push(sc);
                    }
                    Some(events) => {
                        let n_tags = match events {
                            EventInput::Coarse => TagSet::coarse().len(),
                            _ => fine_tags.len(),
                        };
                        let m = SspmConfig::new(vocab.len(), n_tags, cfg.window.step_dim())
                            .with_events(events)
                            .with_crf(crf)
                            .with_eta(cfg.eta)
                            .with_d_model(cfg.d_model)
                            .with_n_layers(cfg.n_layers)
                            .with_n_heads(cfg.n_heads)
                            .with_max_len(cfg.max_len)
                            .init(&ad)?;
                        let out = Trainer::new(trainer_config(cfg, cfg.steps, seed), &ad)
                            .with_progress(|p| ctx.report_progress(p))
                            .fit(
                                m,
                                &mut StockTask {
                                    train: train_part,
                                    vocab: &vocab,
                                    events,
                                    cfg,
                                    device: ad.clone(),
                                },
                            )?;
                        let m = out.model.valid();
                        let source = if crf {
                            TagSource::Predicted
                        } else {
                            TagSource::Given
                        };
                        let pred =
                            predict_stock(&m, &split.test, &vocab, events, source, cfg, &dev)?;
                        let dpred =
                            predict_stock(&m, &split.dev, &vocab, events, source, cfg, &dev)?;
                        let mut sc =
                            score(name, seed, &pred, &gold, &rets, accuracy(&dpred, &dev_gold));
                        sc.paraphrased_accuracy = Some(paraphrased_accuracy(&pred, &split.test));
                        sc.train_size = size;
                        scores.push(sc);
                        if crf && size == split.train.len() {
                            tag_acc.push(tag_accuracy(&m, &split.test, &vocab, cfg, &dev)?);
                        }
                    }
                }
            }
        }
    }
    let summary = sizes
        .iter()
        .flat_map(|&n| models.iter().map(move |m| (n, m.0)))
        .map(|(n, m)| summarise(&scores, m, n))
        .collect();
    Ok(StockResults {
        data: stats,
        event_types,
        items_with_events: with_events,
        extraction: ExtractionStats {
            roles_per_event: (
                roles_plain.0 as f64 / roles_plain.1.max(1) as f64,
                roles_para.0 as f64 / roles_para.1.max(1) as f64,
            ),
            ..ex
        },
        paraphrased_test: split.test.iter().filter(|e| e.paraphrased).count(),
        msspm_tag_accuracy: tag_acc,
        scores,
        summary,
    })
}

// ---------------------------------------------------------------- forex

struct ForexExample {
    time: Minutes,
    /// Items of the window (indices into the news list).
    items: Vec<usize>,
    trade: Vec<f32>,
    up: bool,
    log_return: f64,
    label_end: Minutes,
}

struct ForexTask<'a> {
    windows: &'a [Vec<Vec<&'a [Token]>>],
    train: &'a [ForexExample],
    vocab: &'a Vocab,
    cfg: &'a FinNewsConfig,
    device: Device,
}

impl Task<ForexModel> for ForexTask<'_> {
    fn loss(&mut self, m: &ForexModel, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let idx: Vec<usize> = (0..self.cfg.forex_batch)
            .map(|_| ctx.rng.below(self.train.len()))
            .collect();
        let b = forex_batch(
            &idx,
            self.windows,
            self.train,
            self.vocab,
            self.cfg,
            &self.device,
        )?;
        Ok(m.loss(&b).into())
    }
}

fn forex_batch(
    idx: &[usize],
    windows: &[Vec<Vec<&[Token]>>],
    ex: &[ForexExample],
    vocab: &Vocab,
    cfg: &FinNewsConfig,
    device: &Device,
) -> Result<ForexBatch> {
    let w: Vec<Vec<Vec<&[Token]>>> = idx.iter().map(|&i| windows[i].clone()).collect();
    let t: Vec<&[f32]> = idx.iter().map(|&i| ex[i].trade.as_slice()).collect();
    let l: Vec<bool> = idx.iter().map(|&i| ex[i].up).collect();
    ForexBatch::new(
        &w,
        &t,
        cfg.forex_window.steps,
        &l,
        vocab,
        cfg.forex_max_len,
        device,
    )
}

/// A trade window and next-close label every `forex_every_hours`, with the news items of the
/// lookback before it.
fn forex_windows(
    cfg: &FinNewsConfig,
    market: &crate::synthetic::ForexMarket,
    stats: &mut DataStats,
) -> Result<Vec<ForexExample>> {
    let s = &market.series;
    let labels = LabelConfig {
        target: LabelTarget::NextClose,
        neutral_band: 0.0,
    };
    let lookback = cfg.forex_lookback_hours as i64 * 60;
    let every = cfg.forex_every_hours.max(1) as i64 * 60;
    let mut examples = Vec::new();
    let times: Vec<Minutes> = market.news.iter().map(|n| n.time).collect();
    let mut t = s.start(0) + lookback;
    while t < s.end(s.len() - 1) {
        if let Some((w, l)) = example(s, t, cfg.forex_window, labels)? {
            stats.leakage_violations += usize::from(w.last_end > l.start);
            let a = times.partition_point(|&x| x < t - lookback);
            let b = times.partition_point(|&x| x < t);
            examples.push(ForexExample {
                time: t,
                items: (a..b).collect(),
                trade: w.features,
                up: l.up,
                log_return: l.log_return,
                label_end: l.end,
            });
        } else {
            stats.skipped += 1;
        }
        t += every;
    }
    Ok(examples)
}

/// One group-extract-aggregate model trained with `seed` on the kept items of each window,
/// scored on test (and dev).
#[allow(clippy::too_many_arguments)]
fn train_forex_model(
    cfg: &FinNewsConfig,
    ctx: &mut RunCtx<'_>,
    name: &str,
    seed: u64,
    vocab: &Vocab,
    split: &crate::trade::Split<ForexExample>,
    windows: [&[Vec<Vec<&[Token]>>]; 3],
) -> Result<ModelScore> {
    let ad = ctx.device.clone().autodiff();
    let dev = ctx.device.clone();
    let [ttr, tdev, tte] = windows;
    ad.seed(seed);
    let m = ForexConfig::new(vocab.len(), cfg.forex_window.step_dim())
        .with_d_model(cfg.d_model)
        .with_n_layers(cfg.n_layers)
        .with_n_heads(cfg.n_heads)
        .with_max_len(cfg.forex_max_len)
        .init(&ad)?;
    let out = Trainer::new(trainer_config(cfg, cfg.forex_steps, seed), &ad)
        .with_progress(|p| ctx.report_progress(p))
        .fit(
            m,
            &mut ForexTask {
                windows: ttr,
                train: &split.train,
                vocab,
                cfg,
                device: ad.clone(),
            },
        )?;
    let m = out.model.valid();
    let predict = |w: &[Vec<Vec<&[Token]>>], ex: &[ForexExample]| -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(ex.len());
        let idx: Vec<usize> = (0..ex.len()).collect();
        for c in idx.chunks(32) {
            let b = forex_batch(c, w, ex, vocab, cfg, &dev)?;
            out.extend(m.predict(&b)?.into_iter().map(|p| p >= 0.5));
        }
        Ok(out)
    };
    let pred = predict(tte, &split.test)?;
    let dpred = predict(tdev, &split.dev)?;
    let gold: Vec<bool> = split.test.iter().map(|e| e.up).collect();
    let rets: Vec<f64> = split.test.iter().map(|e| e.log_return).collect();
    let dgold: Vec<bool> = split.dev.iter().map(|e| e.up).collect();
    let mut sc = score(name, seed, &pred, &gold, &rets, accuracy(&dpred, &dgold));
    sc.train_size = split.train.len();
    Ok(sc)
}

fn run_forex(cfg: &FinNewsConfig, ctx: &mut RunCtx<'_>) -> Result<ForexResults> {
    let ad = ctx.device.clone().autodiff();
    let dev = ad.clone().without_autodiff();
    let market = forex_market(&cfg.forex)?;
    let lookback = cfg.forex_lookback_hours as i64 * 60;
    let mut stats = DataStats::default();
    let examples = forex_windows(cfg, &market, &mut stats)?;
    let split = split_counted(
        examples,
        |e| (e.time, e.label_end, e.up),
        cfg,
        &mut stats,
        "forex",
    )?;
    // Text: only news released before the first dev example fits the vocabulary and topics.
    let cut = split
        .dev
        .first()
        .or(split.test.first())
        .map_or(Minutes::MAX, |e| e.time);
    let tokens: Vec<Vec<Token>> = market.news.iter().map(|n| tokenize(&n.text)).collect();
    let train_docs: Vec<&[Token]> = market
        .news
        .iter()
        .zip(&tokens)
        .filter(|(n, _)| n.time < cut)
        .map(|(_, t)| t.as_slice())
        .collect();
    let vocab = Vocab::build(train_docs.iter().copied(), 1, 5000);
    let topics = TopicModel::fit(&train_docs, cfg.groups.max(1), 15, 7, &dev)?;
    let items: Vec<NewsItem> = market
        .news
        .iter()
        .zip(&tokens)
        .map(|(n, t)| NewsItem {
            time: n.time,
            category: n.category,
            topic: topics.topic(t),
            tokens: t.clone(),
            vector: topics.tfidf.vector(t),
        })
        .collect();
    let relevant = |i: usize| market.news[i].category < 2;
    let all: Vec<&ForexExample> = split
        .train
        .iter()
        .chain(&split.dev)
        .chain(&split.test)
        .collect();
    let n_items: usize = all.iter().map(|e| e.items.len()).sum();
    let relevant_all = all
        .iter()
        .flat_map(|e| e.items.iter())
        .filter(|&&i| relevant(i))
        .count() as f64
        / n_items.max(1) as f64;
    let mut scores = Vec::new();
    let mut relevant_kept = BTreeMap::new();
    let groupings = [
        ("time", Grouping::Time),
        ("topic", Grouping::Topic),
        ("category", Grouping::Category),
    ];
    for (name, grouping) in groupings {
        let n_groups = match grouping {
            Grouping::Category => FOREX_CATEGORIES.len(),
            _ => cfg.groups.max(1),
        };
        // kept item indices per example and group
        let kept = |e: &ForexExample| -> Vec<Vec<usize>> {
            let refs: Vec<&NewsItem> = e.items.iter().map(|&i| &items[i]).collect();
            group(&refs, grouping, n_groups, e.time - lookback, e.time)
                .iter()
                .map(|g| {
                    extract(&refs, g, cfg.per_group)
                        .into_iter()
                        .map(|k| e.items[k])
                        .collect()
                })
                .collect()
        };
        let to_windows =
            |ex: &[ForexExample]| -> Vec<Vec<Vec<usize>>> { ex.iter().map(kept).collect() };
        let (wtr, wdev, wte) = (
            to_windows(&split.train),
            to_windows(&split.dev),
            to_windows(&split.test),
        );
        let kept_all: Vec<usize> = wtr
            .iter()
            .chain(&wdev)
            .chain(&wte)
            .flatten()
            .flatten()
            .copied()
            .collect();
        relevant_kept.insert(
            name.to_string(),
            kept_all.iter().filter(|&&i| relevant(i)).count() as f64 / kept_all.len().max(1) as f64,
        );
        let as_tokens = |w: &[Vec<Vec<usize>>]| -> Vec<Vec<Vec<&[Token]>>> {
            w.iter()
                .map(|gs| {
                    gs.iter()
                        .map(|g| g.iter().map(|&i| tokens[i].as_slice()).collect())
                        .collect()
                })
                .collect()
        };
        let (ttr, tdev, tte) = (as_tokens(&wtr), as_tokens(&wdev), as_tokens(&wte));
        for &seed in &cfg.seeds {
            scores.push(train_forex_model(
                cfg,
                ctx,
                name,
                seed,
                &vocab,
                &split,
                [&ttr, &tdev, &tte],
            )?);
        }
    }
    // the same windows without news
    let pairs = |v: &[ForexExample]| -> Vec<(Vec<f32>, bool)> {
        v.iter().map(|e| (e.trade.clone(), e.up)).collect()
    };
    let (train, dv, test) = (pairs(&split.train), pairs(&split.dev), pairs(&split.test));
    let rets: Vec<f64> = split.test.iter().map(|e| e.log_return).collect();
    let sets = TradeSets {
        train: &train,
        dev: &dv,
        test: &test,
        test_returns: &rets,
    };
    for &seed in &cfg.seeds {
        // the news models' batch: the same number of windows per step
        let steps = (cfg.forex_steps, cfg.forex_batch);
        scores.push(trade_only_run(cfg, &sets, cfg.forex_window, steps, seed, ctx)?.0);
    }
    let summary = ["trade only", "time", "topic", "category"]
        .iter()
        .map(|g| summarise(&scores, g, split.train.len()))
        .collect();
    Ok(ForexResults {
        data: stats,
        news: market.news.len(),
        relevant_kept,
        relevant_all,
        scores,
        summary,
    })
}

// ---------------------------------------------------------------- real data

fn read_series(path: &str, name: &str, length: Option<Minutes>) -> Result<PriceSeries> {
    let bars = textdata::readers::read_ohlcv(Path::new(path))?;
    PriceSeries::from_bars(name, bars, length)
}

fn run_real_trade(
    cfg: &FinNewsConfig,
    s: &PriceSeries,
    window: WindowConfig,
    ctx: &mut RunCtx<'_>,
) -> Result<RealSeriesResult> {
    let labels = LabelConfig {
        target: LabelTarget::NextClose,
        neutral_band: 0.0,
    };
    let mut stats = DataStats::default();
    let mut ex = Vec::new();
    for i in 0..s.len() {
        // the moment bar i finishes; the label is the next bar's close
        let t = s.end(i);
        match example(s, t, window, labels)? {
            Some((w, l)) => {
                stats.leakage_violations += usize::from(w.last_end > l.start);
                ex.push((t, w.features, l));
            }
            None => stats.skipped += 1,
        }
    }
    let split = split_counted(ex, |e| (e.0, e.2.end, e.2.up), cfg, &mut stats, &s.name)?;
    let pairs = |v: &[(Minutes, Vec<f32>, crate::trade::Label)]| -> Vec<(Vec<f32>, bool)> {
        v.iter().map(|e| (e.1.clone(), e.2.up)).collect()
    };
    let (train, dv, test) = (pairs(&split.train), pairs(&split.dev), pairs(&split.test));
    let gold: Vec<bool> = test.iter().map(|e| e.1).collect();
    let rets: Vec<f64> = split.test.iter().map(|e| e.2.log_return).collect();
    let majority_up = train.iter().filter(|e| e.1).count() * 2 >= train.len();
    let majority_accuracy = accuracy(&vec![majority_up; gold.len()], &gold);
    let sets = TradeSets {
        train: &train,
        dev: &dv,
        test: &test,
        test_returns: &rets,
    };
    let mut scores = Vec::new();
    for &seed in &cfg.seeds {
        scores.push(trade_only_run(cfg, &sets, window, (cfg.real_steps, cfg.batch), seed, ctx)?.0);
    }
    let summary = summarise(&scores, "trade only", split.train.len());
    Ok(RealSeriesResult {
        series: s.name.clone(),
        data: stats,
        majority_accuracy,
        scores,
        summary,
    })
}

fn run_real(
    cfg: &FinNewsConfig,
    dict: &EventDictionary,
    ctx: &mut RunCtx<'_>,
) -> Result<RealResults> {
    let mut r = RealResults::default();
    if let (Some(dir), Some(wti)) = (&cfg.reuters_dir, &cfg.wti_path) {
        let articles = textdata::readers::read_reuters_dir(Path::new(dir))?;
        // WTI spot is a single daily value; its New York session is taken as 09:00-14:30.
        let s =
            read_series(wti, "WTI daily", Some(time::DAY))?.with_session(9 * 60, 14 * 60 + 30)?;
        let window = WindowConfig {
            steps: 5,
            bars_per_step: 1,
        };
        r.reuters_articles = articles.len();
        for a in &articles {
            let x = dict.extract(&format!("{}. {}", a.title, a.body));
            for e in &x.events {
                *r.reuters_event_types
                    .entry(dict.types[e.type_id].name.clone())
                    .or_default() += 1;
            }
            let t = time::parse(&a.date)?;
            let ex = example(&s, t, window, cfg.labels)?;
            match &ex {
                Some((w, l)) => {
                    r.reuters_data.examples += 1;
                    r.reuters_data.leakage_violations += usize::from(w.last_end > l.start);
                }
                None => r.reuters_data.skipped += 1,
            }
            r.reuters_examples.push(ReutersExample {
                time: time::format(t),
                title: a.title.clone(),
                events: x.events.len(),
                up: ex.as_ref().map(|e| e.1.up),
                log_return: ex.as_ref().map(|e| e.1.log_return),
            });
        }
        r.reuters_data.test_up_share = r
            .reuters_examples
            .iter()
            .filter(|e| e.up == Some(true))
            .count() as f64
            / r.reuters_data.examples.max(1) as f64;
    }
    let daily = WindowConfig {
        steps: 10,
        bars_per_step: 1,
    };
    let hourly = WindowConfig {
        steps: 12,
        bars_per_step: 2,
    };
    let series: [(&Option<String>, &str, WindowConfig, Option<Minutes>); 3] = [
        (&cfg.goog_path, "GOOG daily", daily, Some(time::DAY)),
        (&cfg.eurusd_path, "EURUSD hourly", hourly, Some(60)),
        (&cfg.sp500_path, "S&P 500 daily", daily, Some(time::DAY)),
    ];
    for (path, name, window, length) in series {
        if let Some(p) = path {
            let s = read_series(p, name, length)?;
            r.trade_only.push(run_real_trade(cfg, &s, window, ctx)?);
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------- run

/// Cumulative log returns of `runs` and of buy-and-hold over the same trades.
fn backtest_plot(path: &Path, title: &str, x_label: &str, runs: &[ModelScore]) -> Result<()> {
    let points = |c: &[f64]| c.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
    let mut series: Vec<Series> = runs
        .iter()
        .map(|s| Series::new(s.model.as_str(), points(&s.backtest.curve)))
        .collect();
    if let Some(s) = runs.first() {
        series.push(Series::new(
            "buy and hold",
            points(&s.backtest.buy_hold_curve),
        ));
    }
    Ok(write_line_plot(
        path,
        title,
        x_label,
        "log return",
        &series,
    )?)
}

fn fmt(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// Runs the experiment and writes `metrics.json`, `report.md` and the backtest plots.
pub fn run(cfg: &FinNewsConfig, ctx: &mut RunCtx<'_>) -> Result<Report> {
    if cfg.seeds.is_empty() {
        return Err(Error::InvalidConfig("no seeds".into()));
    }
    let dict = match &cfg.dictionary {
        Some(p) => EventDictionary::load(Path::new(p))?,
        None => EventDictionary::embedded(),
    };
    let has = |p: &str| cfg.parts.iter().any(|x| x == p);
    if let Some(p) = cfg
        .parts
        .iter()
        .find(|p| !["stocks", "forex", "real"].contains(&p.as_str()))
    {
        return Err(Error::InvalidConfig(format!(
            "unknown part {p:?} (stocks, forex, real)"
        )));
    }
    let stocks = if has("stocks") {
        run_stocks(cfg, &dict, ctx)?
    } else {
        StockResults::default()
    };
    let forex = if has("forex") {
        run_forex(cfg, ctx)?
    } else {
        ForexResults::default()
    };
    let real = if has("real") {
        run_real(cfg, &dict, ctx)?
    } else {
        RealResults::default()
    };
    let claims = claims(&stocks, &forex, has("forex"))?;
    trainer::claims::write_claims(&ctx.path("claims.json"), &claims)?;
    write_plots(cfg, ctx, &stocks, &forex, &has)?;
    let (table, body) = render(cfg, &ctx.device_name, &stocks, &forex, &real, &claims, &has);
    let metrics = FinNewsMetrics {
        stocks,
        forex,
        real,
        claims,
        device: ctx.device_name.clone(),
    };
    Ok(ctx.finish(cfg, &metrics, "fin-news", table, body)?)
}

/// The papers' claims, declared in code and judged on per-seed differences paired by seed
/// (`trainer::claims`): per training size, fine-grained SSPM > coarse events > text only and
/// MSSPM > SSPM (also on the test items whose event the dictionary misses); for forex, category
/// grouping > time, > topic and > trade only. A claim without values (a part not run) is left out.
fn claims(
    stocks: &StockResults,
    forex: &ForexResults,
    has_forex: bool,
) -> Result<Vec<ClaimResult>> {
    const ACC: &str = "test accuracy";
    const PARA: &str = "test accuracy on items whose event the dictionary misses";
    let mut declared: Vec<(Claim, &[ModelScore], usize)> = Vec::new();
    let mut sizes: Vec<usize> = stocks.summary.iter().map(|s| s.train_size).collect();
    sizes.dedup();
    for &n in &sizes {
        let st = stocks.scores.as_slice();
        let c = |id: &str, metric: &str, a: &str, b: &str, what: &str| {
            Claim::new(
                format!("stocks-{id}-train{n}"),
                metric,
                a,
                b,
                Direction::Greater,
                format!("{what} (stocks, train {n})"),
            )
        };
        declared.push((
            c(
                "fine-above-coarse",
                ACC,
                "SSPM (fine-grained)",
                "coarse events",
                "fine-grained events help",
            ),
            st,
            n,
        ));
        declared.push((
            c(
                "coarse-above-text",
                ACC,
                "coarse events",
                "text only",
                "events help over text alone",
            ),
            st,
            n,
        ));
        declared.push((
            c(
                "msspm-above-sspm",
                ACC,
                "MSSPM",
                "SSPM (fine-grained)",
                "the jointly trained tagger helps",
            ),
            st,
            n,
        ));
        declared.push((
            c(
                "msspm-above-sspm-paraphrased",
                PARA,
                "MSSPM",
                "SSPM (fine-grained)",
                "the tagger recovers events the dictionary misses",
            ),
            st,
            n,
        ));
    }
    if has_forex {
        let n = forex.data.split.0;
        for (other, what) in [
            ("time", "grouping by category beats grouping by time"),
            ("topic", "grouping by category beats grouping by topic"),
            (
                "trade only",
                "news grouped by category adds to the trade data",
            ),
        ] {
            declared.push((
                Claim::new(
                    format!("forex-category-above-{}", other.replace(' ', "-")),
                    ACC,
                    "category",
                    other,
                    Direction::Greater,
                    format!("{what} (forex)"),
                ),
                forex.scores.as_slice(),
                n,
            ));
        }
    }
    let value = |s: &ModelScore, metric: &str| {
        if metric == PARA {
            s.paraphrased_accuracy
        } else {
            Some(s.accuracy)
        }
    };
    let mut out = Vec::new();
    for (c, scores, n) in declared {
        let seeds = |model: &str| -> Vec<(u64, f64)> {
            let mut v: Vec<(u64, f64)> = scores
                .iter()
                .filter(|s| s.model == model && s.train_size == n)
                .filter_map(|s| {
                    value(s, &c.metric)
                        .filter(|x| x.is_finite())
                        .map(|x| (s.seed, x))
                })
                .collect();
            v.sort_by_key(|p| p.0);
            v
        };
        let (a, b) = (seeds(&c.a), seeds(&c.b));
        let paired: Vec<(f64, f64)> = a
            .iter()
            .filter_map(|&(seed, x)| b.iter().find(|p| p.0 == seed).map(|p| (x, p.1)))
            .collect();
        if paired.is_empty() {
            continue;
        }
        let (xa, xb): (Vec<f64>, Vec<f64>) = paired.into_iter().unzip();
        out.push(c.evaluate(&xa, &xb)?);
    }
    Ok(out)
}

/// The learning curve and the first seed's test backtests.
fn write_plots(
    cfg: &FinNewsConfig,
    ctx: &RunCtx<'_>,
    stocks: &StockResults,
    forex: &ForexResults,
    has: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let st = &stocks.summary;
    let lc: Vec<Series> = [
        "trade only",
        "text only",
        "coarse events",
        "SSPM (fine-grained)",
        "MSSPM",
    ]
    .iter()
    .map(|m| {
        Series::new(
            *m,
            st.iter()
                .filter(|s| s.model == *m)
                .map(|s| (s.train_size as f64, 100.0 * s.accuracy))
                .collect(),
        )
    })
    .collect();
    if has("stocks") {
        write_line_plot(
            &ctx.path("stocks_learning_curve.svg"),
            "Synthetic stocks: test accuracy against training examples",
            "training examples",
            "accuracy %",
            &lc,
        )?;
    }

    // plots: test backtests of the first seed
    let first = cfg.seeds[0];
    let full = stocks.data.split.0;
    let first_seed = |scores: &[ModelScore],
                      summary: &[Summary],
                      n: Option<usize>|
     -> Vec<ModelScore> {
        summary
            .iter()
            .filter(|s| n.is_none_or(|n| s.train_size == n))
            .filter_map(|s| {
                scores
                    .iter()
                    .find(|x| x.model == s.model && x.seed == first && x.train_size == s.train_size)
                    .cloned()
            })
            .collect()
    };
    if has("stocks") {
        backtest_plot(
            &ctx.path("stocks_backtest.svg"),
            "Synthetic stocks: cumulative log return on the test part",
            "trade",
            &first_seed(&stocks.scores, &stocks.summary, Some(full)),
        )?;
    }
    if has("forex") {
        backtest_plot(
            &ctx.path("forex_backtest.svg"),
            "Synthetic forex: cumulative log return on the test part",
            "window",
            &first_seed(&forex.scores, &forex.summary, None),
        )?;
    }
    Ok(())
}

/// The README-ready table and the report body.
fn render(
    cfg: &FinNewsConfig,
    device_name: &str,
    stocks: &StockResults,
    forex: &ForexResults,
    real: &RealResults,
    claims: &[ClaimResult],
    has: &dyn Fn(&str) -> bool,
) -> (String, String) {
    let row = |part: &str, s: &Summary| {
        vec![
            part.to_string(),
            s.model.clone(),
            format!("{} ± {}", fmt(s.accuracy), fmt(s.accuracy_std)),
            format!("{} ± {}", fmt(s.dev_accuracy), fmt(s.dev_accuracy_std)),
            format!("{:.3} ± {:.3}", s.mcc, s.mcc_std),
            format!("{:+.3}", s.strategy_log_return),
            format!("{:+.3}", s.buy_hold_log_return),
        ]
    };
    let mut rows: Vec<Vec<String>> = stocks
        .summary
        .iter()
        .map(|s| row(&format!("stocks (synthetic, train {})", s.train_size), s))
        .collect();
    rows.extend(forex.summary.iter().map(|s| row("forex (synthetic)", s)));
    for t in &real.trade_only {
        rows.push(row(&t.series, &t.summary));
    }
    let table = markdown_table(
        &[
            "part",
            "model",
            "accuracy %",
            "dev accuracy %",
            "MCC",
            "strategy log return",
            "buy & hold",
        ],
        &rows,
    );
    let mut body = String::new();
    body.push_str(&format!(
        "\nSeeds {:?}; device {}. Accuracy and MCC on the chronologically last {:.0} % of examples \
         (mean ± std over seeds); backtests long on \"up\", short on \"down\", no costs.\n\n",
        cfg.seeds,
        device_name,
        100.0 * (1.0 - cfg.train_frac - cfg.dev_frac)
    ));
    if has("stocks") {
        let d = &stocks.data;
        body.push_str(&format!(
        "## Stocks\n\n{} examples (train/dev/test {:?}, purged {}, skipped {}), test up share {}; \
         leakage violations {}. The dictionary found an event in {} of {} items. Extractor \
         against the planted events, before any model: type found for {} of {} events in its \
         own words, {} of {} with a held-out trigger verb, {} of {} with paraphrased role words \
         (roles filled per found event {:.2} in its own words, {:.2} paraphrased); a false event \
         in {} of {} items that report a rival's event and {} of {} other items without one. \
         MSSPM tag accuracy (test, vs dictionary tags): {:?}. Accuracy on the {} test items \
         whose event is paraphrased (the dictionary misses it): {}.\n\n",
        d.examples, d.split, d.purged, d.skipped, fmt(d.test_up_share), d.leakage_violations,
        stocks.items_with_events, cfg.stocks.days * cfg.stocks.news_per_day,
        stocks.extraction.plain.0, stocks.extraction.plain.1,
        stocks.extraction.held_out_trigger.0, stocks.extraction.held_out_trigger.1,
        stocks.extraction.paraphrased_roles.0, stocks.extraction.paraphrased_roles.1,
        stocks.extraction.roles_per_event.0, stocks.extraction.roles_per_event.1,
        stocks.extraction.rival_items.0, stocks.extraction.rival_items.1,
        stocks.extraction.other_no_event.0, stocks.extraction.other_no_event.1,
        stocks.msspm_tag_accuracy.iter().map(|x| format!("{:.3}", x)).collect::<Vec<_>>(),
        stocks.paraphrased_test,
        stocks
            .summary
            .iter()
            .map(|s| {
                format!(
                    "{} (train {}) {}",
                    s.model,
                    s.train_size,
                    s.paraphrased_accuracy.map_or("-".into(), fmt)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    }
    if has("forex") {
        let d = &forex.data;
        body.push_str(&format!(
        "## Forex\n\n{} windows (train/dev/test {:?}, purged {}), {} news items, test up share {}; \
         leakage violations {}. Relevant (central bank / economy) share of all window items {}; \
         of the kept items: {}.\n\n",
        d.examples,
        d.split,
        d.purged,
        forex.news,
        fmt(d.test_up_share),
        d.leakage_violations,
        fmt(forex.relevant_all),
        forex
            .relevant_kept
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    }
    if real.reuters_articles > 0 {
        let d = &real.reuters_data;
        body.push_str(&format!(
            "## Reuters 1987 crude articles against WTI\n\n{} articles, {} with a window and a label \
             ({} skipped), up share {}, leakage violations {}. Events: {:?}.\n\n",
            real.reuters_articles, d.examples, d.skipped, fmt(d.test_up_share), d.leakage_violations,
            real.reuters_event_types
        ));
        let rows: Vec<Vec<String>> = real
            .reuters_examples
            .iter()
            .map(|e| {
                vec![
                    e.time.clone(),
                    e.title.clone(),
                    e.events.to_string(),
                    e.up.map_or("-".into(), |u| if u { "up".into() } else { "down".into() }),
                    e.log_return.map_or("-".into(), |r| format!("{r:+.4}")),
                ]
            })
            .collect();
        body.push_str(&markdown_table(
            &["time", "title", "events", "label", "log return"],
            &rows,
        ));
        body.push('\n');
    }
    for t in &real.trade_only {
        body.push_str(&format!(
            "- {}: {} examples (train/dev/test {:?}), leakage violations {}, majority-class accuracy {}.\n",
            t.series, t.data.examples, t.data.split, t.data.leakage_violations, fmt(t.majority_accuracy)
        ));
    }
    body.push_str("\n## Claims (paired per-seed differences A − B; `claims.json`)\n\n");
    body.push_str(&trainer::claims::claims_table(claims));
    (table, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_run_writes_the_outputs() {
        let _rng = testkit::device_rng_lock();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut ctx = RunCtx::new(Device::flex(), dir.path(), "flex");
        let r = run(&FinNewsConfig::quick(), &mut ctx).unwrap_or_else(|e| panic!("{e}"));
        for f in [
            "metrics.json",
            "report.md",
            "config.json",
            "stocks_backtest.svg",
            "forex_backtest.svg",
            "stocks_learning_curve.svg",
        ] {
            assert!(r.dir.join(f).exists(), "{f}");
        }
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(r.dir.join("metrics.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(m["stocks"]["data"]["leakage_violations"], 0);
        // the extractor measured first: it finds every event in its own words, none with a
        // held-out trigger, and a false event in every item that reports a rival's
        let ex = &m["stocks"]["extraction"];
        let pair = |k: &str| {
            let v = ex[k].as_array().cloned().unwrap_or_default();
            (
                v.first().and_then(serde_json::Value::as_u64).unwrap_or(0),
                v.get(1).and_then(serde_json::Value::as_u64).unwrap_or(0),
            )
        };
        let (found, of) = pair("plain");
        assert!(of > 0 && found == of, "{ex}");
        assert_eq!(pair("held_out_trigger").0, 0, "{ex}");
        let (found, of) = pair("rival_items");
        assert_eq!(found, of, "{ex}");
        // two training sizes × five models
        assert_eq!(m["stocks"]["summary"].as_array().map(Vec::len), Some(10));
        assert_eq!(m["forex"]["summary"].as_array().map(Vec::len), Some(4));
        // Claims: four per stock training size (paraphrased ones only where items exist) and
        // three for forex, each with one paired difference per seed.
        let claims: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(r.dir.join("claims.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        let claims = claims.as_array().cloned().unwrap_or_default();
        let n_seeds = FinNewsConfig::quick().seeds.len();
        assert!(
            (2 * 3 + 3..=2 * 4 + 3).contains(&claims.len()),
            "{}",
            claims.len()
        );
        for c in &claims {
            let d = c["differences"].as_array().map_or(0, Vec::len);
            assert!(d >= 1 && d <= n_seeds, "{c}");
            assert!(
                ["holds", "contradicted", "not_shown"]
                    .contains(&c["verdict"].as_str().unwrap_or("")),
                "{c}"
            );
        }
        assert!(matches!(
            run(&FinNewsConfig::quick().with_seeds(vec![]), &mut ctx),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            run(
                &FinNewsConfig::quick().with_parts(vec!["bonds".into()]),
                &mut ctx
            ),
            Err(Error::InvalidConfig(_))
        ));
        // one part alone
        let dir2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut ctx2 = RunCtx::new(Device::flex(), dir2.path(), "flex");
        let r = run(
            &FinNewsConfig::quick().with_parts(vec!["forex".into()]),
            &mut ctx2,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.dir.join("forex_backtest.svg").exists());
        assert!(!r.dir.join("stocks_backtest.svg").exists());
    }
}
