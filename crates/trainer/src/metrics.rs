//! Metrics streamed as JSON lines (`metrics.jsonl`), one record per step or evaluation.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Named scalar metrics, e.g. `{"valid_loss": 2.31, "accuracy": 0.8}`.
pub type Metrics = BTreeMap<String, f64>;

/// Mean and sample standard deviation (divisor `n − 1`; 0 for one value) of `v`, as reported
/// over seeds; `(NaN, NaN)` for no values.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

/// ROC AUC of `scores` for the positives (Mann–Whitney, ties counted half). `None` without both
/// classes.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let pos: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, p)| !**p)
        .map(|(s, _)| *s)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for &a in &pos {
        for &b in &neg {
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// After optimizer step `step` (1-based count of steps taken).
    Train {
        /// Steps taken so far.
        step: usize,
        /// Mean loss over the step's micro-batches.
        loss: f64,
        /// Learning rate used for this step.
        lr: f64,
        /// Joint L2 norm of the trainable gradients before clipping.
        grad_norm: f64,
        /// Extra scalars the task reported (auxiliary losses and the like).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        extra: Metrics,
    },
    /// Evaluation after `step` steps.
    Eval {
        /// Steps taken so far.
        step: usize,
        /// What the task's evaluation returned.
        metrics: Metrics,
    },
}

impl Record {
    /// The step the record belongs to.
    pub fn step(&self) -> usize {
        match self {
            Self::Train { step, .. } | Self::Eval { step, .. } => *step,
        }
    }
}

/// Appends records to a JSONL file, flushing each line.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Starts a new log at `path` (an existing one is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        crate::fs::write_atomic(path, b"")?;
        Self::append(path)
    }

    /// Reopens `path` for a resumed run, keeping only the records of steps `<= step` (later ones
    /// came from the interrupted part of the run and will be produced again).
    pub fn resume(path: &Path, step: usize) -> Result<Self> {
        let kept: Vec<Record> = read_records(path)?
            .into_iter()
            .filter(|r| r.step() <= step)
            .collect();
        let mut bytes = Vec::new();
        for r in &kept {
            serde_json::to_writer(&mut bytes, r)?;
            bytes.push(b'\n');
        }
        crate::fs::write_atomic(path, &bytes)?;
        Self::append(path)
    }

    fn append(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads all well-formed records of a JSONL file (a torn last line from a killed run is skipped).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        // sample variance 5/3
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[7.0]), (7.0, 0.0));
        let (m, s) = mean_std(&[]);
        assert!(m.is_nan() && s.is_nan());
    }
}
