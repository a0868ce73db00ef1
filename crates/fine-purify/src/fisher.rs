//! The diagonal of the clean-loss Hessian, estimated by the empirical Fisher: the mean over
//! clean batches of the squared gradient of every parameter.
//!
//! Per-batch (the default): the squared gradient of each mini-batch's mean loss; this
//! under-estimates the per-example Fisher by the batch size for pure noise, a constant factor
//! that does not change any ranking. Per-example: pass batches of one example (slower, exact
//! empirical Fisher). Where the gradients are taken is [`FisherAt`].

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::params::{Entry, Snapshot};

/// Where the Fisher is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FisherAt {
    /// At the fine-tuned weights (default).
    Finetuned,
    /// Averaged over `points` evenly spaced points of the straight path from the pre-trained
    /// to the fine-tuned weights, both ends included (`points` ≥ 2).
    PathAverage {
        /// Points on the path.
        points: usize,
    },
}

struct Square<'a> {
    grads: &'a GradientsParams,
    acc: &'a mut Vec<Vec<f64>>,
    i: usize,
    err: Option<trainer::host::TensorReadError>,
}

impl ModuleVisitor for Square<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let i = self.i;
        self.i += 1;
        let Some(g) = self.grads.get::<D>(param.id) else {
            return;
        };
        match trainer::host::f32s(g) {
            Ok(v) => {
                let slot = &mut self.acc[i];
                if slot.is_empty() {
                    slot.resize(v.len(), 0.0);
                }
                for (s, x) in slot.iter_mut().zip(v) {
                    *s += f64::from(x) * f64::from(x);
                }
            }
            Err(e) => self.err = Some(e),
        }
    }
}

/// Mean over `n` batches of the squared gradients of `loss(model, i)`. `model` must live on
/// an autodiff device. Parameters that get no gradient have a zero Fisher.
pub fn fisher_diagonal<M: Module>(
    model: &M,
    n: usize,
    mut loss: impl FnMut(&M, usize) -> crate::Result<Tensor<1>>,
) -> crate::Result<Snapshot> {
    if n == 0 {
        return Err(Error::InvalidConfig(
            "the Fisher needs at least one batch".into(),
        ));
    }
    let layout = Snapshot::of(model)?;
    let mut acc: Vec<Vec<f64>> = vec![Vec::new(); layout.entries.len()];
    for i in 0..n {
        let l = loss(model, i)?;
        let mut grads = l.backward();
        let gp = GradientsParams::from_module(&mut grads, model);
        let mut v = Square {
            grads: &gp,
            acc: &mut acc,
            i: 0,
            err: None,
        };
        model.visit(&mut v);
        if let Some(e) = v.err {
            return Err(Error::TensorRead(e));
        }
    }
    Ok(Snapshot {
        entries: layout
            .entries
            .into_iter()
            .zip(acc)
            .map(|(e, a)| Entry {
                data: if a.is_empty() {
                    vec![0.0; e.data.len()]
                } else {
                    a.iter().map(|v| (v / n as f64) as f32).collect()
                },
                path: e.path,
                shape: e.shape,
            })
            .collect(),
    })
}

/// The Fisher at `at`: `finetuned` is the model, `pre` the pre-trained snapshot with the same
/// layout (used only for path averages).
pub fn fisher_at<M: Module>(
    finetuned: &M,
    pre: &Snapshot,
    at: FisherAt,
    n: usize,
    mut loss: impl FnMut(&M, usize) -> crate::Result<Tensor<1>>,
) -> crate::Result<Snapshot> {
    match at {
        FisherAt::Finetuned => fisher_diagonal(finetuned, n, loss),
        FisherAt::PathAverage { points } => {
            if points < 2 {
                return Err(Error::InvalidConfig(
                    "a path average needs at least 2 points".into(),
                ));
            }
            let ft = Snapshot::of(finetuned)?;
            let mut sum: Option<Snapshot> = None;
            for j in 0..points {
                let t = j as f32 / (points - 1) as f32;
                let m = ft.lerp_from(pre, t)?.write_into(finetuned.clone())?;
                let f = fisher_diagonal(&m, n, &mut loss)?;
                sum = Some(match sum {
                    None => f,
                    Some(mut s) => {
                        for (a, b) in s.entries.iter_mut().zip(&f.entries) {
                            for (x, y) in a.data.iter_mut().zip(&b.data) {
                                *x += y;
                            }
                        }
                        s
                    }
                });
            }
            let mut s = sum.unwrap_or_default();
            for e in &mut s.entries {
                for x in &mut e.data {
                    *x /= points as f32;
                }
            }
            Ok(s)
        }
    }
}
