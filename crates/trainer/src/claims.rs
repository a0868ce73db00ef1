//! Claims with verdicts: what an experiment may call a reproduction.
//!
//! An experiment declares its paper's claims in code ([`Claim`]: "metric of A is below metric of
//! B") before it runs. Afterwards [`Claim::evaluate`] pairs the two methods' values seed by seed
//! (the same seed gives both runs the same data order and initialisation), and reports the
//! per-seed differences A − B, their mean and a two-sided 95 % Student-t interval over seeds.
//! The verdict:
//!
//! - **holds**: the interval excludes 0 on the side the paper states;
//! - **contradicted**: it excludes 0 on the other side;
//! - **not shown**: it contains 0 — the difference is inside the seeds' spread — or there are
//!   fewer than two seeds (no interval).
//!
//! [`write_claims`] writes `claims.json`; [`claims_table`] renders the README-ready table.
//!
//! ```
//! use trainer::claims::{Claim, Direction, Verdict};
//! let c = Claim::new("moe-beats-dense", "valid loss", "moe", "dense", Direction::Less,
//!                    "the MoE model reaches a lower validation loss than the dense one");
//! let r = c.evaluate(&[1.90, 1.93, 1.91], &[2.10, 2.08, 2.12]).unwrap();
//! assert_eq!(r.verdict, Verdict::Holds);
//! ```

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The paper's direction for A − B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A's metric is above B's (A − B > 0).
    Greater,
    /// A's metric is below B's (A − B < 0).
    Less,
}

/// What the seeds show about a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The 95 % interval of A − B excludes 0 in the paper's direction.
    Holds,
    /// It excludes 0 in the other direction.
    Contradicted,
    /// It contains 0, or there are fewer than two seeds.
    NotShown,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Holds => "holds",
            Self::Contradicted => "contradicted",
            Self::NotShown => "not shown",
        })
    }
}

/// A claim of the paper, declared before the experiment runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// Short identifier (`deepseekmoe-below-gshard`).
    pub id: String,
    /// The metric compared (`validation loss (nats/byte)`).
    pub metric: String,
    /// Method A.
    pub a: String,
    /// Method B.
    pub b: String,
    /// The paper's direction for A − B.
    pub direction: Direction,
    /// The claim in words, as the paper makes it.
    pub statement: String,
}

/// A claim with its evidence and verdict (one entry of `claims.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimResult {
    /// The claim.
    #[serde(flatten)]
    pub claim: Claim,
    /// A's value per seed.
    pub a_values: Vec<f64>,
    /// B's value per seed (same order).
    pub b_values: Vec<f64>,
    /// A − B per seed.
    pub differences: Vec<f64>,
    /// Mean of the differences.
    pub mean_difference: f64,
    /// Two-sided 95 % interval of the mean difference (`None` with fewer than two seeds).
    pub interval: Option<(f64, f64)>,
    /// How the interval is computed.
    pub interval_method: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// Two-sided 95 % Student-t critical values for 1–30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The two-sided 95 % t critical value for `df` degrees of freedom (table to 30, then the
/// values at 40, 60 and 120, then the normal 1.960), rounding the degrees of freedom down.
pub fn t95(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T95[df - 1],
        31..=39 => 2.042,
        40..=59 => 2.021,
        60..=119 => 2.000,
        120..=999 => 1.980,
        _ => 1.960,
    }
}

/// Mean and two-sided 95 % t interval of `xs` (`None` for the interval with fewer than two).
pub fn mean_t_interval(xs: &[f64]) -> (f64, Option<(f64, f64)>) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, None);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, None);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t95(n - 1) * (var / n as f64).sqrt();
    (mean, Some((mean - half, mean + half)))
}

/// `mean ± half-width of the 95 % t interval` of `xs` × `scale` with `digits` decimals: the
/// mean alone for one value, a dash for none (how the experiments' tables report over seeds).
pub fn format_mean_interval(xs: &[f64], scale: f64, digits: usize) -> String {
    if xs.is_empty() {
        return "—".into();
    }
    match mean_t_interval(xs) {
        (m, Some((lo, hi))) => format!(
            "{:.digits$} ± {:.digits$}",
            scale * m,
            scale * (hi - lo) / 2.0
        ),
        (m, None) => format!("{:.digits$}", scale * m),
    }
}

impl Claim {
    /// A claim that `metric` of `a` is above (`Greater`) or below (`Less`) that of `b`.
    pub fn new(
        id: impl Into<String>,
        metric: impl Into<String>,
        a: impl Into<String>,
        b: impl Into<String>,
        direction: Direction,
        statement: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            metric: metric.into(),
            a: a.into(),
            b: b.into(),
            direction,
            statement: statement.into(),
        }
    }

    /// The verdict on per-seed values of A and B, paired by position (seed).
    pub fn evaluate(&self, a: &[f64], b: &[f64]) -> Result<ClaimResult> {
        if a.len() != b.len() || a.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "claim {}: {} values of {} against {} of {} (one per seed, paired)",
                self.id,
                a.len(),
                self.a,
                b.len(),
                self.b
            )));
        }
        if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "claim {}: a non-finite value ({v})",
                self.id
            )));
        }
        let differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let (mean_difference, interval) = mean_t_interval(&differences);
        let verdict = match (interval, self.direction) {
            (Some((lo, _)), Direction::Greater) if lo > 0.0 => Verdict::Holds,
            (Some((_, hi)), Direction::Greater) if hi < 0.0 => Verdict::Contradicted,
            (Some((_, hi)), Direction::Less) if hi < 0.0 => Verdict::Holds,
            (Some((lo, _)), Direction::Less) if lo > 0.0 => Verdict::Contradicted,
            _ => Verdict::NotShown,
        };
        Ok(ClaimResult {
            claim: self.clone(),
            a_values: a.to_vec(),
            b_values: b.to_vec(),
            differences,
            mean_difference,
            interval,
            interval_method: "two-sided 95 % Student t over seeds (paired differences)".into(),
            verdict,
        })
    }
}

/// Evaluates each of `claims` whose two sides have values: `values(method, metric)` gives a
/// method's per-seed values of a metric (the same seed order for every method), `None` or
/// empty for a method that did not run; claims that need such a method are left out.
pub fn evaluate_available(
    claims: &[Claim],
    values: impl Fn(&str, &str) -> Option<Vec<f64>>,
) -> Result<Vec<ClaimResult>> {
    let mut out = Vec::new();
    for c in claims {
        let a = values(&c.a, &c.metric).filter(|v| !v.is_empty());
        let b = values(&c.b, &c.metric).filter(|v| !v.is_empty());
        if let (Some(a), Some(b)) = (a, b) {
            out.push(c.evaluate(&a, &b)?);
        }
    }
    Ok(out)
}

/// The README-ready table: claim, seeds, mean A − B, interval, verdict.
pub fn claims_table(results: &[ClaimResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let op = match r.claim.direction {
                Direction::Greater => ">",
                Direction::Less => "<",
            };
            vec![
                format!(
                    "{}: {} {op} {} ({})",
                    r.claim.statement, r.claim.a, r.claim.b, r.claim.metric
                ),
                r.differences.len().to_string(),
                format!("{:+.4}", r.mean_difference),
                r.interval
                    .map_or("—".into(), |(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]")),
                r.verdict.to_string(),
            ]
        })
        .collect();
    crate::report::markdown_table(
        &[
            "claim",
            "seeds",
            "mean A − B",
            "95 % interval (t)",
            "verdict",
        ],
        &rows,
    )
}

/// Writes `claims.json` (the evaluated claims, in declaration order) atomically.
pub fn write_claims(path: &std::path::Path, results: &[ClaimResult]) -> Result<()> {
    crate::fs::write_json_atomic(path, &results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn means_with_intervals_format_for_tables() {
        assert_eq!(format_mean_interval(&[], 1.0, 2), "—");
        assert_eq!(format_mean_interval(&[0.5], 100.0, 1), "50.0");
        // mean 2, sample sd 1, n 3: half-width 4.303 / sqrt(3)
        assert_eq!(
            format_mean_interval(&[1.0, 2.0, 3.0], 1.0, 3),
            "2.000 ± 2.484"
        );
    }

    fn claim(direction: Direction) -> Claim {
        Claim::new("c", "loss", "a", "b", direction, "a beats b")
    }

    #[test]
    fn a_difference_inside_the_seeds_spread_is_not_shown() {
        // differences 1, 2, 3: mean 2, sd 1, half-width 4.303/sqrt(3) = 2.484
        let r = claim(Direction::Greater)
            .evaluate(&[1.0, 2.0, 3.0], &[0.0, 0.0, 0.0])
            .unwrap();
        let (lo, hi) = r.interval.unwrap();
        assert!((r.mean_difference - 2.0).abs() < 1e-12);
        assert!((lo - (2.0 - 2.484_301)).abs() < 1e-4, "{lo}");
        assert!((hi - (2.0 + 2.484_301)).abs() < 1e-4, "{hi}");
        assert_eq!(r.verdict, Verdict::NotShown);
    }

    #[test]
    fn consistent_differences_hold_or_contradict_by_direction() {
        let a = [1.0, 1.1, 0.9, 1.05, 0.95];
        let b = [0.0; 5];
        assert_eq!(
            claim(Direction::Greater).evaluate(&a, &b).unwrap().verdict,
            Verdict::Holds
        );
        assert_eq!(
            claim(Direction::Less).evaluate(&a, &b).unwrap().verdict,
            Verdict::Contradicted
        );
        assert_eq!(
            claim(Direction::Less).evaluate(&b, &a).unwrap().verdict,
            Verdict::Holds
        );
    }

    #[test]
    fn one_seed_is_never_evidence_and_bad_input_is_an_error() {
        let r = claim(Direction::Greater).evaluate(&[5.0], &[1.0]).unwrap();
        assert_eq!((r.interval, r.verdict), (None, Verdict::NotShown));
        assert!(
            claim(Direction::Greater)
                .evaluate(&[1.0, 2.0], &[1.0])
                .is_err()
        );
        assert!(claim(Direction::Greater).evaluate(&[], &[]).is_err());
        assert!(
            claim(Direction::Greater)
                .evaluate(&[f64::NAN, 1.0], &[0.0, 0.0])
                .is_err()
        );
    }

    #[test]
    fn the_table_and_the_json_carry_every_claim() {
        let r = claim(Direction::Less)
            .evaluate(&[1.0, 1.2], &[2.0, 2.1])
            .unwrap();
        let t = claims_table(std::slice::from_ref(&r));
        assert!(
            t.contains("a beats b: a < b (loss)") && t.contains("| 2 |"),
            "{t}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("claims.json");
        write_claims(&p, std::slice::from_ref(&r)).unwrap();
        let back: Vec<ClaimResult> =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back, vec![r]);
    }

    proptest! {
        #[test]
        fn swapping_the_methods_and_the_direction_keeps_the_verdict(
            a in proptest::collection::vec(-10.0f64..10.0, 2..12),
            shift in -3.0f64..3.0,
        ) {
            let b: Vec<f64> = a.iter().enumerate().map(|(i, x)| x + shift + 0.1 * (i % 3) as f64).collect();
            let r1 = claim(Direction::Greater).evaluate(&a, &b).unwrap();
            let r2 = claim(Direction::Less).evaluate(&b, &a).unwrap();
            prop_assert_eq!(r1.verdict, r2.verdict);
            // holds only when every seed could not put the mean on the other side of 0
            if r1.verdict == Verdict::Holds {
                prop_assert!(r1.mean_difference > 0.0);
            }
        }
    }

    #[test]
    fn claims_without_both_sides_are_left_out() {
        let cs = [
            Claim::new("a<b", "m", "a", "b", Direction::Less, "a below b"),
            Claim::new(
                "a<c",
                "m",
                "a",
                "c",
                Direction::Less,
                "a below c (c not run)",
            ),
            Claim::new(
                "a<d",
                "m",
                "a",
                "d",
                Direction::Less,
                "a below d (d has no values)",
            ),
        ];
        let r = evaluate_available(&cs, |name, _| match name {
            "a" => Some(vec![1.0, 1.1, 0.9]),
            "b" => Some(vec![2.0, 2.2, 2.1]),
            "d" => Some(Vec::new()),
            _ => None,
        })
        .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].claim.id, "a<b");
        assert_eq!(r[0].verdict, Verdict::Holds);
    }
}
