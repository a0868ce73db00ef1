//! Trade data: price series, leakage-safe windows and labels, chronological splits.
//!
//! A bar stamped `s` covers `[s + offset, s + offset + length)` and its prices are known only at
//! its end. For daily files the default is the whole calendar day (known at midnight), which is
//! conservative; [`PriceSeries::with_session`] narrows it to a trading session (for example
//! 09:30–16:00) so a news item released after the close is labelled against the same day's
//! close.
//!
//! For a news item at time `t`:
//! - the **features** read only bars that ended at or before `t` ([`trade_window`]);
//! - the **label** compares the last price known at `t` (the close of the last finished bar) with
//!   the open ([`LabelTarget::NextOpen`], the paper's choice) or the close
//!   ([`LabelTarget::NextClose`]) of the first bar that *starts* at or after `t`; moves smaller
//!   than the neutral band are dropped.
//!
//! Per step (`bars_per_step` consecutive bars, the paper's "10 minutes") each bar gives six
//! values — open, close, high, low, volume and VWAP (typical price `(h + l + c) / 3` per bar:
//! files carry no trades) — prices as percent from the reference price, volume as
//! `ln(1 + v)` minus its window mean; then the same six as change rates against the same bar
//! of the previous step (percent for prices, log difference for volume). So a step has
//! `12 · bars_per_step` values (the paper's 60 + 60 for ten one-minute bars).

use crate::time::{self, Minutes};
use crate::{Error, Result};
use textdata::readers::Bar;

/// A price series in time order.
#[derive(Clone, Debug)]
pub struct PriceSeries {
    /// A name for reports.
    pub name: String,
    /// Bar stamps (minutes), strictly increasing.
    pub stamps: Vec<Minutes>,
    /// The bars.
    pub bars: Vec<Bar>,
    /// Start of a bar relative to its stamp.
    pub offset: Minutes,
    /// Length of a bar.
    pub length: Minutes,
}

impl PriceSeries {
    /// A series from parsed bars (their `time` strings are parsed by [`time::parse`]). The bar
    /// length is the smallest gap between stamps (a day for daily files) unless `length` is
    /// given. Prices must be finite and positive; stamps strictly increasing.
    pub fn from_bars(name: &str, bars: Vec<Bar>, length: Option<Minutes>) -> Result<Self> {
        if bars.len() < 2 {
            return Err(Error::Series(format!("{name}: fewer than two bars")));
        }
        let stamps = bars
            .iter()
            .map(|b| time::parse(&b.time))
            .collect::<Result<Vec<_>>>()?;
        Self::from_stamped(name, stamps, bars, length)
    }

    /// A series from bars and their stamps.
    pub fn from_stamped(
        name: &str,
        stamps: Vec<Minutes>,
        bars: Vec<Bar>,
        length: Option<Minutes>,
    ) -> Result<Self> {
        if stamps.len() != bars.len() || bars.len() < 2 {
            return Err(Error::Series(format!(
                "{name}: {} stamps for {} bars (need at least two)",
                stamps.len(),
                bars.len()
            )));
        }
        if let Some(i) = stamps.windows(2).position(|w| w[1] <= w[0]) {
            return Err(Error::Series(format!(
                "{name}: stamps not strictly increasing at bar {} ({} then {})",
                i + 1,
                time::format(stamps[i]),
                time::format(stamps[i + 1])
            )));
        }
        if let Some((i, _)) = bars.iter().enumerate().find(|(_, b)| {
            ![b.open, b.high, b.low, b.close]
                .iter()
                .all(|x| x.is_finite() && *x > 0.0)
                || !b.volume.is_finite()
                || b.volume < 0.0
        }) {
            return Err(Error::Series(format!(
                "{name}: bar {i} has a non-positive or non-finite value"
            )));
        }
        let gap = stamps
            .windows(2)
            .map(|w| w[1] - w[0])
            .min()
            .unwrap_or(time::DAY);
        let length = length.unwrap_or(gap);
        if length <= 0 {
            return Err(Error::Series(format!(
                "{name}: bar length {length} minutes"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            stamps,
            bars,
            offset: 0,
            length,
        })
    }

    /// Daily bars that cover a session from `open` to `close` minutes after midnight.
    pub fn with_session(mut self, open: Minutes, close: Minutes) -> Result<Self> {
        if !(0 <= open && open < close && close <= time::DAY) {
            return Err(Error::Series(format!(
                "session {open}..{close} minutes is not inside a day"
            )));
        }
        self.offset = open;
        self.length = close - open;
        Ok(self)
    }

    /// Number of bars.
    pub fn len(&self) -> usize {
        self.bars.len()
    }

    /// Whether the series is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.bars.is_empty()
    }

    /// When bar `i` starts.
    pub fn start(&self, i: usize) -> Minutes {
        self.stamps[i] + self.offset
    }

    /// When bar `i` ends (its prices are known from then on).
    pub fn end(&self, i: usize) -> Minutes {
        self.start(i) + self.length
    }

    /// The last bar finished at or before `t`.
    pub fn last_finished(&self, t: Minutes) -> Option<usize> {
        let n = self
            .stamps
            .partition_point(|&s| s + self.offset + self.length <= t);
        n.checked_sub(1)
    }

    /// The first bar that starts at or after `t`.
    pub fn first_starting(&self, t: Minutes) -> Option<usize> {
        let i = self.stamps.partition_point(|&s| s + self.offset < t);
        (i < self.len()).then_some(i)
    }
}

/// How a step window is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowConfig {
    /// Steps in the window.
    pub steps: usize,
    /// Bars per step.
    pub bars_per_step: usize,
}

impl WindowConfig {
    /// Values per step: six features and six change rates per bar.
    pub fn step_dim(&self) -> usize {
        12 * self.bars_per_step
    }

    fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.bars_per_step == 0 {
            return Err(Error::InvalidConfig(format!(
                "a trade window needs steps ≥ 1 and bars_per_step ≥ 1, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// The trade features of one example.
#[derive(Clone, Debug, PartialEq)]
pub struct TradeWindow {
    /// `steps × step_dim` values, step-major.
    pub features: Vec<f32>,
    /// The end of the latest bar read (≤ the news time).
    pub last_end: Minutes,
    /// The reference price: the close of the last finished bar.
    pub reference: f64,
    /// Index of that bar.
    pub reference_index: usize,
}

fn six(b: &Bar) -> [f64; 6] {
    [
        b.open,
        b.close,
        b.high,
        b.low,
        b.volume,
        (b.high + b.low + b.close) / 3.0,
    ]
}

/// The window of steps that ends with the last bar finished at or before `t`; `None` when the
/// series does not reach that far back (one extra step is read for the first change rates).
pub fn trade_window(s: &PriceSeries, t: Minutes, cfg: WindowConfig) -> Result<Option<TradeWindow>> {
    cfg.validate()?;
    let Some(last) = s.last_finished(t) else {
        return Ok(None);
    };
    let need = (cfg.steps + 1) * cfg.bars_per_step;
    if last + 1 < need {
        return Ok(None);
    }
    let first = last + 1 - need;
    let bars = &s.bars[first..=last];
    let reference = bars[bars.len() - 1].close;
    let mean_lv = bars.iter().map(|b| b.volume.ln_1p()).sum::<f64>() / bars.len() as f64;
    let bps = cfg.bars_per_step;
    let mut features = Vec::with_capacity(cfg.steps * cfg.step_dim());
    for step in 1..=cfg.steps {
        let cur = &bars[step * bps..(step + 1) * bps];
        let prev = &bars[(step - 1) * bps..step * bps];
        for b in cur {
            for (k, x) in six(b).into_iter().enumerate() {
                features.push(if k == 4 {
                    (x.ln_1p() - mean_lv) as f32
                } else {
                    ((x / reference - 1.0) * 100.0) as f32
                });
            }
        }
        for (b, p) in cur.iter().zip(prev) {
            for (k, (x, y)) in six(b).into_iter().zip(six(p)).enumerate() {
                features.push(if k == 4 {
                    (x.ln_1p() - y.ln_1p()) as f32
                } else {
                    ((x / y - 1.0) * 100.0) as f32
                });
            }
        }
    }
    Ok(Some(TradeWindow {
        features,
        last_end: s.end(last),
        reference,
        reference_index: last,
    }))
}

/// Which price a label compares with the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LabelTarget {
    /// The open of the first bar starting at or after the news (the paper).
    NextOpen,
    /// The close of that bar.
    NextClose,
}

/// How labels are made.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelConfig {
    /// Target price.
    pub target: LabelTarget,
    /// Examples whose absolute log return is below this are dropped (0 keeps all but exact
    /// ties, which are dropped too).
    pub neutral_band: f64,
}

/// A movement label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Label {
    /// The price moved up.
    pub up: bool,
    /// `ln(target / reference)`.
    pub log_return: f64,
    /// Where the label starts (the news time): no feature reads a price after it.
    pub start: Minutes,
    /// When the target price is known.
    pub end: Minutes,
    /// Index of the target bar.
    pub target_index: usize,
}

/// The label of news at `t` against `reference` (the close of the last finished bar); `None`
/// when the series ends first or the move is inside the neutral band.
pub fn label(s: &PriceSeries, t: Minutes, reference: f64, cfg: LabelConfig) -> Option<Label> {
    let j = s.first_starting(t)?;
    let (price, end) = match cfg.target {
        LabelTarget::NextOpen => (s.bars[j].open, s.start(j)),
        LabelTarget::NextClose => (s.bars[j].close, s.end(j)),
    };
    let r = (price / reference).ln();
    if r == 0.0 || r.abs() < cfg.neutral_band {
        return None;
    }
    Some(Label {
        up: r > 0.0,
        log_return: r,
        start: t,
        end,
        target_index: j,
    })
}

/// The trade window and label of news at `t`, when both exist.
pub fn example(
    s: &PriceSeries,
    t: Minutes,
    window: WindowConfig,
    labels: LabelConfig,
) -> Result<Option<(TradeWindow, Label)>> {
    Ok(trade_window(s, t, window)?.and_then(|w| label(s, t, w.reference, labels).map(|l| (w, l))))
}

/// A chronological split.
#[derive(Clone, Debug)]
pub struct Split<T> {
    /// Earliest examples.
    pub train: Vec<T>,
    /// Middle.
    pub dev: Vec<T>,
    /// Latest.
    pub test: Vec<T>,
    /// Examples dropped because their label ends after the next part begins.
    pub purged: usize,
}

/// Sorts by time and cuts at `train_frac` and `train_frac + dev_frac` of the examples. A train
/// (dev) example whose label ends after the first dev (test) example's time is purged, so no
/// training label overlaps the period it is evaluated on.
pub fn chrono_split<T>(
    mut items: Vec<T>,
    time: impl Fn(&T) -> Minutes,
    label_end: impl Fn(&T) -> Minutes,
    train_frac: f64,
    dev_frac: f64,
) -> Result<Split<T>> {
    if !(train_frac > 0.0 && dev_frac >= 0.0 && train_frac + dev_frac < 1.0) {
        return Err(Error::InvalidConfig(format!(
            "split fractions {train_frac} / {dev_frac} must leave a test part"
        )));
    }
    items.sort_by_key(&time);
    let n = items.len();
    let a = ((n as f64) * train_frac).round() as usize;
    let b = (((n as f64) * (train_frac + dev_frac)).round() as usize).max(a);
    let mut test = items.split_off(b.min(n));
    let mut dev = items.split_off(a.min(b));
    let mut train = items;
    let mut purged = 0;
    if let Some(t_dev) = dev.first().or(test.first()).map(&time) {
        let before = train.len();
        train.retain(|x| label_end(x) <= t_dev);
        purged += before - train.len();
    }
    if let Some(t_test) = test.first().map(&time) {
        let before = dev.len();
        dev.retain(|x| label_end(x) <= t_test);
        purged += before - dev.len();
    }
    test.shrink_to_fit();
    dev.shrink_to_fit();
    Ok(Split {
        train,
        dev,
        test,
        purged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bar(t: &str, p: f64) -> Bar {
        Bar {
            time: t.into(),
            open: p,
            high: p * 1.01,
            low: p * 0.99,
            close: p * 1.002,
            volume: 100.0,
        }
    }

    fn hourly(prices: &[f64]) -> PriceSeries {
        let stamps: Vec<Minutes> = (0..prices.len() as i64)
            .map(|i| 1_000_000 + 60 * i)
            .collect();
        let bars = prices.iter().map(|&p| bar("", p)).collect();
        PriceSeries::from_stamped("h", stamps, bars, None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn daily_bars_finish_at_midnight_or_at_the_session_close() {
        let s = PriceSeries::from_bars(
            "d",
            vec![
                bar("1987-02-26", 10.0),
                bar("1987-02-27", 11.0),
                bar("1987-03-02", 12.0),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.length, time::DAY);
        let news = time::parse("26-FEB-1987 17:00").unwrap_or_else(|e| panic!("{e}"));
        // the 26th is not finished at 17:00 under whole-day bars
        assert_eq!(s.last_finished(news), None);
        assert_eq!(s.first_starting(news), Some(1));
        let s = s.with_session(570, 960).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.last_finished(news), Some(0));
        let l = label(
            &s,
            news,
            s.bars[0].close,
            LabelConfig {
                target: LabelTarget::NextOpen,
                neutral_band: 0.0,
            },
        );
        assert_eq!(l.map(|l| (l.up, l.target_index)), Some((true, 1)));
        // weekend news waits for Monday's open
        let sat = time::parse("1987-02-28 12:00").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.first_starting(sat), Some(2));
    }

    #[test]
    fn bad_series_are_rejected() {
        let unsorted = PriceSeries::from_bars(
            "x",
            vec![bar("2020-01-02", 1.0), bar("2020-01-01", 1.0)],
            None,
        );
        assert!(matches!(unsorted, Err(Error::Series(_))));
        let negative = PriceSeries::from_bars(
            "x",
            vec![bar("2020-01-01", 1.0), bar("2020-01-02", -1.0)],
            None,
        );
        assert!(matches!(negative, Err(Error::Series(_))));
        assert!(matches!(
            PriceSeries::from_bars("x", vec![bar("garbage", 1.0), bar("2020-01-02", 1.0)], None),
            Err(Error::BadTime(_))
        ));
        let s = hourly(&[1.0, 2.0, 3.0]);
        let zero = WindowConfig {
            steps: 0,
            bars_per_step: 1,
        };
        assert!(matches!(
            trade_window(&s, 2_000_000, zero),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn features_have_the_documented_layout() {
        let s = hourly(&[10.0, 10.0, 11.0, 12.1]);
        let cfg = WindowConfig {
            steps: 2,
            bars_per_step: 1,
        };
        let t = s.end(3);
        let w = trade_window(&s, t, cfg)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("window"));
        assert_eq!(w.features.len(), 2 * cfg.step_dim());
        assert_eq!(w.reference_index, 3);
        // last step's open is 12.1 against the reference close 12.1 * 1.002
        let last = &w.features[12..24];
        assert!((f64::from(last[0]) - (1.0 / 1.002 - 1.0) * 100.0).abs() < 1e-4);
        // change rate of the open: 12.1 / 11 - 1 = 10 %
        assert!((last[6] - 10.0).abs() < 1e-4);
        // too little history
        assert_eq!(trade_window(&s, s.end(1), cfg).ok().flatten(), None);
    }

    #[test]
    fn chronological_split_purges_overlapping_labels() {
        // (time, label end)
        let items: Vec<(i64, i64)> = vec![
            (5, 6),
            (1, 2),
            (2, 8),
            (3, 4),
            (6, 7),
            (7, 9),
            (8, 9),
            (9, 10),
            (4, 5),
            (10, 11),
        ];
        let s = chrono_split(items, |x| x.0, |x| x.1, 0.6, 0.2).unwrap_or_else(|e| panic!("{e}"));
        // train = times 1..6 minus (2, 8), whose label ends after the first dev time 7
        assert_eq!(
            s.train.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![1, 3, 4, 5, 6]
        );
        assert_eq!(s.dev.iter().map(|x| x.0).collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(s.test.iter().map(|x| x.0).collect::<Vec<_>>(), vec![9, 10]);
        assert_eq!(s.purged, 1);
        assert!(chrono_split(vec![1], |x| *x, |x| *x, 0.8, 0.2).is_err());
    }

    proptest! {
        /// No feature of an example reads a price after its label's start: rewriting every bar
        /// that had not finished at the news time leaves the features unchanged.
        #[test]
        fn features_never_read_past_the_label_start(
            prices in proptest::collection::vec(1.0f64..100.0, 30..60),
            noise in proptest::collection::vec(1.0f64..100.0, 60),
            at in 0.0f64..1.0,
            steps in 1usize..4,
            bps in 1usize..4,
            offset in 0i64..60,
        ) {
            let s = hourly(&prices);
            let t = s.start(0) + ((s.end(s.len() - 1) - s.start(0)) as f64 * at) as i64 + offset;
            let cfg = WindowConfig { steps, bars_per_step: bps };
            let labels = LabelConfig { target: LabelTarget::NextClose, neutral_band: 0.0 };
            let Some((w, l)) = example(&s, t, cfg, labels).unwrap_or_else(|e| panic!("{e}")) else {
                return Ok(());
            };
            prop_assert!(w.last_end <= l.start);
            prop_assert!(s.start(l.target_index) >= l.start);
            let mut future = s.clone();
            for i in 0..future.len() {
                if future.end(i) > t {
                    future.bars[i] = bar("", noise[i % noise.len()]);
                }
            }
            let w2 = trade_window(&future, t, cfg).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(Some(w), w2);
        }
    }
}
