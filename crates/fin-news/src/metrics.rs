//! Accuracy, Matthews correlation and a simple backtest.

use serde::Serialize;

/// Fraction of predictions equal to the labels (0 for none).
pub fn accuracy(pred: &[bool], gold: &[bool]) -> f64 {
    if pred.is_empty() || pred.len() != gold.len() {
        return 0.0;
    }
    pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / pred.len() as f64
}

/// Matthews correlation coefficient of binary predictions (0 when undefined: a constant
/// prediction or label).
pub fn mcc(pred: &[bool], gold: &[bool]) -> f64 {
    let (mut tp, mut tn, mut fp, mut fneg) = (0f64, 0f64, 0f64, 0f64);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p, g) {
            (true, true) => tp += 1.0,
            (false, false) => tn += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fneg += 1.0,
        }
    }
    let den = ((tp + fp) * (tp + fneg) * (tn + fp) * (tn + fneg)).sqrt();
    if den == 0.0 {
        0.0
    } else {
        (tp * tn - fp * fneg) / den
    }
}

/// Result of [`backtest`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backtest {
    /// Trades taken.
    pub trades: usize,
    /// Sum of the strategy's log returns (long on "up", short on "down").
    pub strategy_log_return: f64,
    /// Sum of the buy-and-hold log returns over the same intervals.
    pub buy_hold_log_return: f64,
    /// Fraction of trades that made money.
    pub hit_rate: f64,
    /// Cumulative strategy log return after each trade (for plots).
    pub curve: Vec<f64>,
    /// Cumulative buy-and-hold log return after each trade.
    pub buy_hold_curve: Vec<f64>,
}

/// Every example is one trade from its reference price to its label's target price, taken in
/// time order, long when the prediction is "up" and short otherwise, without costs. Returns
/// are log returns, so cumulative returns are their sums; overlapping intervals (several news
/// items before the same open) are counted once per item.
pub fn backtest(pred_up: &[bool], log_returns: &[f64]) -> Backtest {
    let mut s = 0.0;
    let mut h = 0.0;
    let mut wins = 0usize;
    let mut curve = Vec::with_capacity(pred_up.len());
    let mut bh = Vec::with_capacity(pred_up.len());
    for (&p, &r) in pred_up.iter().zip(log_returns) {
        let x = if p { r } else { -r };
        s += x;
        h += r;
        wins += usize::from(x > 0.0);
        curve.push(s);
        bh.push(h);
    }
    let n = curve.len();
    Backtest {
        trades: n,
        strategy_log_return: s,
        buy_hold_log_return: h,
        hit_rate: if n == 0 { 0.0 } else { wins as f64 / n as f64 },
        curve,
        buy_hold_curve: bh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_known_cases() {
        let g = [true, true, false, false];
        assert_eq!(accuracy(&g, &g), 1.0);
        assert!((mcc(&g, &g) - 1.0).abs() < 1e-12);
        assert!((mcc(&[false, false, true, true], &g) + 1.0).abs() < 1e-12);
        assert_eq!(mcc(&[true; 4], &g), 0.0);
        assert_eq!(accuracy(&[], &[]), 0.0);
        let b = backtest(&[true, false, true], &[0.01, -0.02, -0.005]);
        assert!((b.strategy_log_return - 0.025).abs() < 1e-12);
        assert!((b.buy_hold_log_return + 0.015).abs() < 1e-12);
        assert!((b.hit_rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(b.curve.len(), 3);
    }
}
