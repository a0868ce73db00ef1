//! Calibration: expected calibration error and reliability diagrams.

use serde::Serialize;
#[cfg(feature = "experiment")]
use trainer::report::{Series, write_line_plot};

/// One confidence bin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    /// Lower edge (exclusive, except the first bin).
    pub lo: f64,
    /// Upper edge (inclusive).
    pub hi: f64,
    /// Examples in the bin.
    pub count: usize,
    /// Their accuracy.
    pub accuracy: f64,
    /// Their mean confidence.
    pub confidence: f64,
}

/// ECE over `bins` equal-width bins: Σ_b (n_b / N) |acc_b − conf_b|, and the bins.
pub fn ece(confidence: &[f32], correct: &[bool], bins: usize) -> (f64, Vec<Bin>) {
    let bins = bins.max(1);
    let n = confidence.len().min(correct.len());
    let mut count = vec![0usize; bins];
    let mut acc = vec![0f64; bins];
    let mut conf = vec![0f64; bins];
    for i in 0..n {
        let c = f64::from(confidence[i]).clamp(0.0, 1.0);
        // (lo, hi]: a confidence of exactly k/bins falls in bin k-1; 0 in bin 0.
        let b = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        count[b] += 1;
        acc[b] += f64::from(u8::from(correct[i]));
        conf[b] += c;
    }
    let mut e = 0.0;
    let out = (0..bins)
        .map(|b| {
            let k = count[b].max(1) as f64;
            let bin = Bin {
                lo: b as f64 / bins as f64,
                hi: (b + 1) as f64 / bins as f64,
                count: count[b],
                accuracy: acc[b] / k,
                confidence: conf[b] / k,
            };
            if count[b] > 0 {
                e += count[b] as f64 / n.max(1) as f64 * (bin.accuracy - bin.confidence).abs();
            }
            bin
        })
        .collect();
    (e, out)
}

/// A reliability diagram (accuracy against mean confidence per non-empty bin, one series per
/// model, and the diagonal) as SVG. Feature `experiment` (plots).
#[cfg(feature = "experiment")]
pub fn write_reliability(
    path: &std::path::Path,
    title: &str,
    models: &[(String, Vec<Bin>)],
) -> trainer::Result<()> {
    let mut series = vec![Series::new(
        "perfect calibration",
        vec![(0.0, 0.0), (1.0, 1.0)],
    )];
    for (name, bins) in models {
        series.push(Series::new(
            name.clone(),
            bins.iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.confidence, b.accuracy))
                .collect(),
        ));
    }
    write_line_plot(path, title, "confidence", "accuracy", &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_of_a_perfectly_calibrated_set_is_zero_and_of_an_overconfident_one_is_the_gap() {
        // Confidence 0.75 with 3 of 4 right: calibrated.
        let (e, bins) = ece(&[0.75; 4], &[true, true, true, false], 10);
        assert!(e.abs() < 1e-9);
        assert_eq!(bins[7].count, 4);
        // Confidence 1.0, half right: gap 0.5.
        let (e, _) = ece(&[1.0, 1.0], &[true, false], 10);
        assert!((e - 0.5).abs() < 1e-9);
    }
}
