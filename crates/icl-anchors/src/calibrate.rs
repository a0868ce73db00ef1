//! Contextual calibration (Zhao et al., "Calibrate Before Use", ICML 2021) as a readout of the
//! label-word probabilities.
//!
//! A small decoder given a few demonstrations often prefers one label word whatever the input
//! (its prior from the demonstrations, their order and the label words' own frequencies).
//! Contextual calibration estimates that prior from content-free queries (`"N/A"`, `""`,
//! `"[MASK]"`) put after the same demonstrations, and divides it out:
//! `p̂(c | x) ∝ p(c | x) / p_cf(c)`, i.e. the label-word logits are shifted by `−log p_cf`.
//!
//! It is not part of Label Words are Anchors; this crate offers it so an analysis can start
//! from a model that is not constant. Used here as a fixed readout: estimated once per set of
//! demonstrations on the unmodified model, then applied to every prediction made with those
//! demonstrations (hooked or not) and, as a constant logit offset, inside anchor
//! re-weighting's loss ([`crate::reweight::Reweighting::loss_calibrated`]).

use burn::prelude::*;

use crate::Error;
use crate::analysis::{Prediction, predict};
use crate::model::CausalLm;
use crate::prompt::Prompt;
use plm::hooks::AttentionHooks;

/// The content-free queries of Zhao et al. (2021).
pub const CONTENT_FREE: [&str; 3] = ["N/A", "", "[MASK]"];

/// Log content-free label probabilities (`None`: the identity readout).
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    log_prior: Option<Vec<f32>>,
}

impl Calibration {
    /// No calibration: predictions pass through unchanged.
    pub fn identity() -> Self {
        Self { log_prior: None }
    }

    /// From label-word probability vectors of content-free queries (averaged, as Zhao et
    /// al.). Errors on no vectors, vectors of different lengths, or a non-finite or
    /// non-positive mean probability.
    pub fn from_probs(probs: &[Vec<f32>]) -> crate::Result<Self> {
        let first = probs
            .first()
            .ok_or_else(|| Error::InvalidConfig("calibration from no content-free query".into()))?;
        let c = first.len();
        if c == 0 || probs.iter().any(|p| p.len() != c) {
            return Err(Error::InvalidConfig(format!(
                "calibration: label probability vectors of lengths {:?}",
                probs.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        let mut mean = vec![0f64; c];
        for p in probs {
            for (m, &x) in mean.iter_mut().zip(p) {
                *m += f64::from(x) / probs.len() as f64;
            }
        }
        let z: f64 = mean.iter().sum();
        if !(z.is_finite() && mean.iter().all(|&m| m > 0.0 && m.is_finite())) {
            return Err(Error::InvalidConfig(format!(
                "calibration: content-free probabilities {mean:?} must be positive and finite"
            )));
        }
        Ok(Self {
            log_prior: Some(mean.iter().map(|&m| (m / z).ln() as f32).collect()),
        })
    }

    /// Estimates the prior with `model` on `content_free` prompts (the demonstrations followed
    /// by each of [`CONTENT_FREE`]; build them with [`crate::prompt::build`]), no hooks.
    pub fn estimate<M: CausalLm>(
        model: &M,
        content_free: &[Prompt],
        label_ids: &[u32],
        device: &Device,
    ) -> crate::Result<Self> {
        let none = AttentionHooks::none();
        let probs = content_free
            .iter()
            .map(|p| predict(model, p, label_ids, &none, 0, device).map(|x| x.probs))
            .collect::<crate::Result<Vec<_>>>()?;
        Self::from_probs(&probs)
    }

    /// The content-free label distribution (`None` for the identity).
    pub fn prior(&self) -> Option<Vec<f32>> {
        self.log_prior
            .as_ref()
            .map(|l| l.iter().map(|x| x.exp()).collect())
    }

    /// `log p_cf`, subtracted from the label-word logits by the calibrated readout (`None` for
    /// the identity).
    pub fn log_prior(&self) -> Option<&[f32]> {
        self.log_prior.as_deref()
    }

    /// Keeps this calibration only if it reads held-out predictions `raw` (made without it) at
    /// least as accurately as they read raw, against their `gold` classes; the identity
    /// otherwise. Returns the readout kept and the two accuracies `(raw, calibrated)`. Errors
    /// when the lengths differ, there are no predictions, or a class count differs from the
    /// calibration's.
    pub fn checked_on(
        self,
        raw: &[Prediction],
        gold: &[usize],
    ) -> crate::Result<(Self, (f64, f64))> {
        if raw.is_empty() || raw.len() != gold.len() {
            return Err(Error::InvalidConfig(format!(
                "calibration check on {} predictions with {} gold classes",
                raw.len(),
                gold.len()
            )));
        }
        let hits = |ps: &mut dyn Iterator<Item = usize>| {
            ps.zip(gold).filter(|(p, g)| p == *g).count() as f64 / gold.len() as f64
        };
        let plain = hits(&mut raw.iter().map(|p| p.class));
        let calibrated = raw
            .iter()
            .map(|p| self.apply(p.clone()).map(|c| c.class))
            .collect::<crate::Result<Vec<_>>>()?;
        let with = hits(&mut calibrated.into_iter());
        let kept = if with >= plain {
            self
        } else {
            Self::identity()
        };
        Ok((kept, (plain, with)))
    }

    /// `p` read through the calibration: probabilities ∝ p / p_cf, class their argmax (ties to
    /// the lower class); the vocabulary top-k and attention are unchanged. Errors when the
    /// class counts differ.
    pub fn apply(&self, mut p: Prediction) -> crate::Result<Prediction> {
        let Some(lp) = &self.log_prior else {
            return Ok(p);
        };
        if lp.len() != p.probs.len() {
            return Err(Error::BadPrompt(format!(
                "calibration over {} classes applied to {}",
                lp.len(),
                p.probs.len()
            )));
        }
        let logits: Vec<f64> = p
            .probs
            .iter()
            .zip(lp)
            .map(|(&x, &l)| f64::from(x.max(f32::MIN_POSITIVE)).ln() - f64::from(l))
            .collect();
        let m = logits.iter().copied().fold(f64::MIN, f64::max);
        let e: Vec<f64> = logits.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        p.probs = e.iter().map(|x| (x / z) as f32).collect();
        p.class = p
            .probs
            .iter()
            .enumerate()
            .fold(0, |b, (i, &x)| if x > p.probs[b] { i } else { b });
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(probs: &[f32]) -> Prediction {
        Prediction {
            class: 0,
            probs: probs.to_vec(),
            top_words: vec![7, 3],
            attention_to_labels: vec![vec![0.5]],
        }
    }

    #[test]
    fn a_uniform_prior_changes_nothing() {
        let c = Calibration::from_probs(&[vec![0.5, 0.5], vec![0.5, 0.5]]).unwrap();
        let p = c.apply(pred(&[0.7, 0.3])).unwrap();
        assert_eq!(p.class, 0);
        assert!((p.probs[0] - 0.7).abs() < 1e-6 && (p.probs[1] - 0.3).abs() < 1e-6);
        assert_eq!(p.top_words, vec![7, 3]);
    }

    #[test]
    fn a_biased_prior_is_divided_out() {
        // prior (0.8, 0.2) averaged from two queries; p = (0.6, 0.4) → ∝ (0.75, 2) → class 1
        let c = Calibration::from_probs(&[vec![0.9, 0.1], vec![0.7, 0.3]]).unwrap();
        let prior = c.prior().unwrap();
        assert!((prior[0] - 0.8).abs() < 1e-6);
        let p = c.apply(pred(&[0.6, 0.4])).unwrap();
        assert_eq!(p.class, 1);
        let want = 2.0 / 2.75;
        assert!((p.probs[1] - want).abs() < 1e-6, "{:?}", p.probs);
        assert!((c.log_prior().unwrap()[0] - 0.8f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn identity_passes_through() {
        let p = Calibration::identity().apply(pred(&[0.2, 0.8])).unwrap();
        assert_eq!(p, pred(&[0.2, 0.8]));
        assert!(Calibration::identity().log_prior().is_none());
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(Calibration::from_probs(&[]).is_err());
        assert!(Calibration::from_probs(&[vec![0.5, 0.5], vec![1.0]]).is_err());
        assert!(Calibration::from_probs(&[vec![0.0, 1.0]]).is_err());
        assert!(Calibration::from_probs(&[vec![f32::NAN, 1.0]]).is_err());
        let c = Calibration::from_probs(&[vec![0.5, 0.5]]).unwrap();
        assert!(c.apply(pred(&[0.2, 0.3, 0.5])).is_err());
    }
}
