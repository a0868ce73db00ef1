//! The diagonal of the clean-loss Hessian, estimated by the empirical Fisher: the mean over
//! clean batches of the squared gradient of every parameter.
//!
//! What `loss` returns decides the estimate. Per-example (batches of one example): the exact
//! empirical Fisher, E(g²) = μ² + σ², the indicator as the paper defines it and the
//! experiment's default. Per-batch: the squared gradient of each mini-batch's mean loss, which
//! estimates μ² + σ²/B instead — cheaper, but it shrinks each dimension's noise term by the batch
//! size, so dimensions whose gradients are mostly noise rank lower than they should. Where the
//! gradients are taken is [`FisherAt`].

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

/// Adds every parameter's squared gradient to its running sum, on the device (flattened,
/// f32); nothing is read back until the last batch.
struct Square<'a> {
    grads: &'a GradientsParams,
    acc: &'a mut Vec<Option<Tensor<1>>>,
    i: usize,
}

impl ModuleVisitor for Square<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let i = self.i;
        self.i += 1;
        let Some(g) = self.grads.get::<D>(param.id) else {
            return;
        };
        let n = g.shape().num_elements();
        let sq = g.reshape([n]).square();
        let slot = &mut self.acc[i];
        *slot = Some(match slot.take() {
            Some(s) => s + sq,
            None => sq,
        });
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
    let mut acc: Vec<Option<Tensor<1>>> = vec![None; layout.entries.len()];
    for i in 0..n {
        let l = loss(model, i)?;
        let mut grads = l.backward();
        let gp = GradientsParams::from_module(&mut grads, model);
        model.visit(&mut Square {
            grads: &gp,
            acc: &mut acc,
            i: 0,
        });
    }
    let mut entries = Vec::with_capacity(acc.len());
    for (e, a) in layout.entries.into_iter().zip(acc) {
        entries.push(Entry {
            data: match a {
                Some(sum) => trainer::host::f32s(sum.div_scalar(n as f32))?,
                None => vec![0.0; e.data.len()],
            },
            path: e.path,
            shape: e.shape,
        });
    }
    Ok(Snapshot { entries })
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
