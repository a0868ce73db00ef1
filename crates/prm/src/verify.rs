//! Verification: best-of-N by reward, self-consistency, and reward-weighted self-consistency.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::answer::answer_key;

/// How step scores become a solution score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregate {
    /// The lowest step score (Math-Shepherd, after Lightman et al.).
    Min,
    /// The product of step scores.
    Product,
    /// The last step's score.
    Last,
}

/// The solution score of `steps` (0 for a solution without steps).
pub fn aggregate(steps: &[f64], how: Aggregate) -> f64 {
    if steps.is_empty() {
        return 0.0;
    }
    match how {
        Aggregate::Min => steps.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregate::Product => steps.iter().product(),
        Aggregate::Last => steps[steps.len() - 1],
    }
}

/// One candidate solution: its final answer and its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The extracted final answer (`None` when it gave none).
    pub answer: Option<String>,
    /// The reward-model score.
    pub score: f64,
}

/// The index of the highest-scoring candidate (the first among equals).
pub fn best_of_n(cands: &[Candidate]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, c) in cands.iter().enumerate() {
        if best.is_none_or(|b| c.score > cands[b].score) {
            best = Some(i);
        }
    }
    best
}

fn vote(cands: &[Candidate], weight: impl Fn(&Candidate) -> f64) -> Option<String> {
    let mut order: Vec<String> = Vec::new();
    let mut tally: HashMap<String, (f64, String)> = HashMap::new();
    for c in cands {
        let Some(a) = &c.answer else { continue };
        let k = answer_key(a);
        let e = tally.entry(k.clone()).or_insert_with(|| {
            order.push(k.clone());
            (0.0, a.clone())
        });
        e.0 += weight(c);
    }
    let mut best: Option<&String> = None;
    for k in &order {
        if best.is_none_or(|b| tally[k].0 > tally[b].0) {
            best = Some(k);
        }
    }
    best.map(|k| tally[k].1.clone())
}

/// Self-consistency: the most frequent answer (the first seen among equals).
pub fn majority(cands: &[Candidate]) -> Option<String> {
    vote(cands, |_| 1.0)
}

/// Self-consistency weighted by reward: `argmax_a sum_i 1(a_i = a) * score_i`.
pub fn weighted_vote(cands: &[Candidate]) -> Option<String> {
    vote(cands, |c| c.score)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(a: &str, s: f64) -> Candidate {
        Candidate {
            answer: Some(a.into()),
            score: s,
        }
    }

    #[test]
    fn the_three_verifiers_can_disagree() {
        let cands = vec![
            c("5", 0.2),
            c("5.0", 0.3),
            c("7", 0.9),
            c("8", 0.4),
            c("8", 0.45),
        ];
        assert_eq!(best_of_n(&cands), Some(2));
        assert_eq!(majority(&cands).as_deref(), Some("5"));
        assert_eq!(weighted_vote(&cands).as_deref(), Some("7"));
        let none = Candidate {
            answer: None,
            score: 1.0,
        };
        assert_eq!(majority(std::slice::from_ref(&none)), None);
        assert_eq!(best_of_n(&[none]), Some(0));
        assert_eq!(best_of_n(&[]), None);
    }

    #[test]
    fn aggregates() {
        assert_eq!(aggregate(&[0.9, 0.2, 0.8], Aggregate::Min), 0.2);
        assert!((aggregate(&[0.5, 0.5], Aggregate::Product) - 0.25).abs() < 1e-12);
        assert_eq!(aggregate(&[0.9, 0.2, 0.8], Aggregate::Last), 0.8);
        assert_eq!(aggregate(&[], Aggregate::Min), 0.0);
    }

    proptest! {
        #[test]
        fn min_le_last_and_product_le_min(s in proptest::collection::vec(0.0f64..=1.0, 1..12)) {
            let mn = aggregate(&s, Aggregate::Min);
            prop_assert!(mn <= aggregate(&s, Aggregate::Last));
            prop_assert!(aggregate(&s, Aggregate::Product) <= mn + 1e-12);
        }

        #[test]
        fn uniform_weights_make_weighted_vote_the_majority(
            answers in proptest::collection::vec(0u8..4, 1..20)
        ) {
            let cands: Vec<Candidate> = answers.iter().map(|a| c(&a.to_string(), 0.5)).collect();
            prop_assert_eq!(majority(&cands), weighted_vote(&cands));
        }
    }
}
