//! Difficulty labels and the difficulty-aware regularisation (CascadeBERT §3.3).

use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};
use serde::{Deserialize, Serialize};

use crate::Error;

/// How per-seed correctness becomes a difficulty label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DifficultyRule {
    /// Easy when the small model is right under a strict majority of the seeds (default; the
    /// released "5seeds-2level" files do not say their rule).
    Majority,
    /// Easy only when right under every seed.
    All,
    /// Easy when right under at least one seed.
    Any,
}

/// `correct[s][i]`: whether seed s's small model got training example i right → `hard[i]`.
pub fn difficulty_labels(correct: &[Vec<bool>], rule: DifficultyRule) -> crate::Result<Vec<bool>> {
    let Some(first) = correct.first() else {
        return Err(Error::InvalidConfig(
            "difficulty labels need at least one seed".into(),
        ));
    };
    if correct.iter().any(|c| c.len() != first.len()) {
        return Err(Error::BadInput(
            "seeds labelled different numbers of examples".into(),
        ));
    }
    let k = correct.len();
    Ok((0..first.len())
        .map(|i| {
            let right = correct.iter().filter(|c| c[i]).count();
            let easy = match rule {
                DifficultyRule::Majority => 2 * right > k,
                DifficultyRule::All => right == k,
                DifficultyRule::Any => right > 0,
            };
            !easy
        })
        .collect())
}

/// The DAR loss on one member's logits: every easy example of the batch is paired with a hard
/// one drawn uniformly with replacement, and the loss is the mean of
/// max(0, eps − (c_easy − c_hard)) over the pairs, with c the top class probability. `None`
/// when the batch has no easy or no hard example.
///
/// # Shapes
/// `logits` `[batch, classes]`, `hard` one flag per row.
pub fn dar_loss(
    logits: Tensor<2>,
    hard: &[bool],
    eps: f64,
    rng: &mut trainer::Rng,
) -> crate::Result<Option<Tensor<1>>> {
    let [b, _] = logits.dims();
    if hard.len() != b {
        return Err(Error::BadInput(format!(
            "{} difficulty flags for {b} rows",
            hard.len()
        )));
    }
    let easy: Vec<i64> = (0..b).filter(|&i| !hard[i]).map(|i| i as i64).collect();
    let hards: Vec<i64> = (0..b).filter(|&i| hard[i]).map(|i| i as i64).collect();
    if easy.is_empty() || hards.is_empty() {
        return Ok(None);
    }
    let partner: Vec<i64> = easy.iter().map(|_| hards[rng.below(hards.len())]).collect();
    let device = logits.device();
    let n = easy.len();
    let conf = softmax(logits, 1).max_dim(1).reshape([b]); // [b]
    let idx = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device);
    let ce = conf.clone().select(0, idx(easy));
    let ch = conf.select(0, idx(partner));
    Ok(Some(
        relu((ce - ch).neg().add_scalar(eps)).mean().reshape([1]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_label_as_documented() {
        let c = vec![
            vec![true, true, false],
            vec![true, false, false],
            vec![false, true, false],
        ];
        assert_eq!(
            difficulty_labels(&c, DifficultyRule::Majority).unwrap(),
            vec![false, false, true]
        );
        assert_eq!(
            difficulty_labels(&c, DifficultyRule::All).unwrap(),
            vec![true, true, true]
        );
        assert_eq!(
            difficulty_labels(&c, DifficultyRule::Any).unwrap(),
            vec![false, false, true]
        );
        assert!(difficulty_labels(&[], DifficultyRule::Any).is_err());
    }

    #[test]
    fn dar_is_the_hinge_on_confidence_gaps() {
        let d = Device::flex();
        // Row confidences: softmax of [x, 0] → σ(x).
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![3.0f32, 0.0, 0.0, 0.0, 1.0, 0.0], [3, 2]),
            &d,
        );
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let mut rng = trainer::Rng::seed_from(1);
        // One easy (row 0), one hard (row 1): deterministic pair.
        let l: f32 = dar_loss(
            logits.clone().slice(s![0..2, ..]),
            &[false, true],
            0.5,
            &mut rng,
        )
        .unwrap()
        .unwrap()
        .into_scalar();
        let want = (0.5 - (sig(3.0) - 0.5)).max(0.0);
        assert!((f64::from(l) - want).abs() < 1e-6, "{l} vs {want}");
        // A wide margin already met gives zero.
        let l: f32 = dar_loss(
            logits.clone().slice(s![0..2, ..]),
            &[false, true],
            0.1,
            &mut rng,
        )
        .unwrap()
        .unwrap()
        .into_scalar();
        assert_eq!(l, 0.0);
        assert!(
            dar_loss(logits.clone(), &[false, false, false], 0.5, &mut rng)
                .unwrap()
                .is_none()
        );
        assert!(dar_loss(logits, &[false], 0.5, &mut rng).is_err());
    }
}
