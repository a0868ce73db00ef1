//! Cascades of complete models (CascadeBERT §3): members run from the smallest up; an example
//! leaves at the first member whose top class probability exceeds that member's threshold
//! (strictly), and the last member always answers.
//!
//! Inference is really dynamic: after each member the exited rows are dropped from the batch
//! (and trailing padding columns no longer needed are cut), so later members only see the
//! examples still undecided. The reference code runs every member on every example.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::Serialize;

use crate::Error;
use crate::member::Member;

/// A cascade: members in the order they run.
#[derive(Module, Debug)]
pub struct Cascade {
    /// The members.
    pub members: Vec<Member>,
}

/// What [`Cascade::infer`] (or an early-exit model) decided for each example.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ExitOutput {
    /// Predicted class per example.
    pub predictions: Vec<usize>,
    /// Index of the member (or layer) that answered.
    pub exit_at: Vec<usize>,
    /// Top probability at the exit.
    pub confidence: Vec<f32>,
    /// Encoder layers executed for each example (cumulative depth).
    pub layers: Vec<usize>,
}

impl ExitOutput {
    /// Appends another batch.
    pub fn extend(&mut self, o: ExitOutput) {
        self.predictions.extend(o.predictions);
        self.exit_at.extend(o.exit_at);
        self.confidence.extend(o.confidence);
        self.layers.extend(o.layers);
    }

    /// Accuracy against `labels`.
    pub fn accuracy(&self, labels: &[usize]) -> f64 {
        let ok = self
            .predictions
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        ok as f64 / labels.len().max(1) as f64
    }

    /// The paper's speed-up: `reference_layers` / mean executed layers.
    pub fn layer_speedup(&self, reference_layers: usize) -> f64 {
        let mean = self.layers.iter().sum::<usize>() as f64 / self.layers.len().max(1) as f64;
        reference_layers as f64 / mean.max(1e-9)
    }
}

/// Top probability and class of each row of `logits` `[b, c]`, on the host.
pub(crate) fn confidence(logits: Tensor<2>) -> crate::Result<(Vec<f32>, Vec<usize>)> {
    let p = softmax(logits, 1);
    let (conf, idx) = p.max_dim_with_indices(1);
    Ok((
        trainer::host::f32s(conf)?,
        trainer::host::i64s(idx)?
            .into_iter()
            .map(|v| v as usize)
            .collect(),
    ))
}

/// Rows `keep` of a right-padded batch, with the padding columns no kept row needs removed.
pub(crate) fn compact(
    ids: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    lengths: &[usize],
    keep: &[usize],
) -> (Tensor<2, Int>, Tensor<2, Int>, Vec<usize>) {
    let device = ids.device();
    let sel = Tensor::<1, Int>::from_data(
        TensorData::new(
            keep.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [keep.len()],
        ),
        &device,
    );
    let lens: Vec<usize> = keep.iter().map(|&i| lengths[i]).collect();
    let width = lens.iter().copied().max().unwrap_or(1).max(1);
    let ids = ids.select(0, sel.clone()).slice(s![.., 0..width]);
    let mask = mask.select(0, sel).slice(s![.., 0..width]);
    (ids, mask, lens)
}

/// Real lengths of the rows of a right-padded mask.
pub(crate) fn lengths(mask: &Tensor<2, Int>) -> crate::Result<Vec<usize>> {
    let [b, _] = mask.dims();
    let sums = trainer::host::i64s(mask.clone().sum_dim(1).reshape([b]))?;
    Ok(sums.into_iter().map(|v| v.max(0) as usize).collect())
}

impl Cascade {
    /// A cascade of `members` (at least one). Members are complete models that train apart: two
    /// that share a parameter id (one a `clone()` of the other's encoder) are refused, as burn
    /// would tie them (build them with `trainer::params::fresh_copy`).
    pub fn new(members: Vec<Member>) -> crate::Result<Self> {
        if members.is_empty() {
            return Err(Error::InvalidConfig(
                "a cascade needs at least one member".into(),
            ));
        }
        let mut seen = std::collections::HashMap::new();
        for (i, m) in members.iter().enumerate() {
            for p in trainer::inventory(m) {
                if let Some(j) = seen.insert(p.id, i)
                    && j != i
                {
                    return Err(Error::InvalidConfig(format!(
                        "members {j} and {i} share the parameter {} (a clone of one encoder ties \
                         them: build members with trainer::params::fresh_copy)",
                        p.path
                    )));
                }
            }
        }
        Ok(Self { members })
    }

    /// Every member's logits on the whole batch (training, and the "all members" reference).
    pub fn forward_all(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Vec<Tensor<2>> {
        self.members
            .iter()
            .map(|m| m.forward(ids.clone(), mask.clone()))
            .collect()
    }

    /// Cumulative depth after each member.
    pub fn cumulative_layers(&self) -> Vec<usize> {
        self.members
            .iter()
            .scan(0, |acc, m| {
                *acc += m.n_layers();
                Some(*acc)
            })
            .collect()
    }

    /// Dynamic inference with batch compaction. `thresholds[i]` is member i's exit threshold
    /// (one per member but the last, which always answers; extra entries are ignored).
    ///
    /// # Shapes
    /// `ids`, `mask` `[batch, seq]`, right-padded.
    pub fn infer(
        &self,
        ids: Tensor<2, Int>,
        mask: Tensor<2, Int>,
        thresholds: &[f64],
    ) -> crate::Result<ExitOutput> {
        let n = self.members.len();
        if thresholds.len() + 1 < n {
            return Err(Error::InvalidConfig(format!(
                "{} thresholds for {n} members (need {})",
                thresholds.len(),
                n - 1
            )));
        }
        let [b, _] = ids.dims();
        let mut out = ExitOutput {
            predictions: vec![0; b],
            exit_at: vec![0; b],
            confidence: vec![0.0; b],
            layers: vec![0; b],
        };
        let depth = self.cumulative_layers();
        let mut rows: Vec<usize> = (0..b).collect(); // original index of each current row
        let mut lens = lengths(&mask)?;
        let (mut ids, mut mask) = (ids, mask);
        for (i, m) in self.members.iter().enumerate() {
            let (conf, pred) = confidence(m.forward(ids.clone(), mask.clone()))?;
            let last = i + 1 == n;
            let mut keep = Vec::new();
            for (r, &ex) in rows.iter().enumerate() {
                if last || f64::from(conf[r]) > thresholds[i] {
                    out.predictions[ex] = pred[r];
                    out.exit_at[ex] = i;
                    out.confidence[ex] = conf[r];
                    out.layers[ex] = depth[i];
                } else {
                    keep.push(r);
                }
            }
            if keep.is_empty() {
                break;
            }
            if keep.len() < rows.len() {
                let (i2, m2, l2) = compact(ids, mask, &lens, &keep);
                (ids, mask, lens) = (i2, m2, l2);
                rows = keep.iter().map(|&r| rows[r]).collect();
            }
        }
        Ok(out)
    }
}
