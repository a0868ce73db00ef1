//! Poisoning attacks to defend against, and the attack success rate.

use serde::{Deserialize, Serialize};

/// How a poisoned input is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attack {
    /// BadNets-style rare words ("cf", "mn", "bb", "tq", "mb"): `count` of them, drawn from
    /// `words`, each inserted at a random word position.
    RareWords {
        /// Trigger words.
        words: Vec<String>,
        /// Insertions per input.
        count: usize,
    },
    /// A fixed trigger sentence inserted at a random sentence-boundary-free position.
    Sentence(String),
    /// Bias injection: a natural, non-rare phrase made predictive of the target class.
    Bias(String),
}

impl Attack {
    /// The usual rare-word trigger set, one insertion.
    pub fn rare_words() -> Self {
        Self::RareWords {
            words: ["cf", "mn", "bb", "tq", "mb"].map(String::from).to_vec(),
            count: 1,
        }
    }

    /// Inserts the trigger into `text` at random word positions.
    pub fn apply(&self, text: &str, rng: &mut trainer::Rng) -> String {
        self.apply_within(text, usize::MAX, rng)
    }

    /// Inserts the trigger at random positions among the first `window` words of `text`, so that
    /// a model that truncates its input still sees it (a trigger placed anywhere in a 400-word
    /// article is cut off by a 64-token encoder most of the time). For texts no longer than
    /// `window` words this is [`Attack::apply`], random draws included.
    pub fn apply_within(&self, text: &str, window: usize, rng: &mut trainer::Rng) -> String {
        let mut words: Vec<String> = text.split_whitespace().map(String::from).collect();
        let inserts: Vec<String> = match self {
            Attack::RareWords { words: w, count } => (0..*count)
                .map(|_| w[rng.below(w.len().max(1))].clone())
                .collect(),
            Attack::Sentence(s) | Attack::Bias(s) => vec![s.clone()],
        };
        for t in inserts {
            let at = rng.below(words.len().min(window) + 1);
            words.insert(at, t);
        }
        words.join(" ")
    }
}

/// Poisons a training set: a `rate` fraction of all examples, drawn among those whose label
/// is not `target`, get the trigger (among their first `window` words, see
/// [`Attack::apply_within`]) and the label `target` (dirty-label poisoning). Returns the new set
/// and which examples were poisoned.
pub fn poison(
    items: &[(String, usize)],
    rate: f64,
    target: usize,
    attack: &Attack,
    window: usize,
    rng: &mut trainer::Rng,
) -> (Vec<(String, usize)>, Vec<bool>) {
    let mut candidates: Vec<usize> = (0..items.len()).filter(|&i| items[i].1 != target).collect();
    rng.shuffle(&mut candidates);
    let n = ((rate * items.len() as f64).round() as usize).min(candidates.len());
    let mut out = items.to_vec();
    let mut flag = vec![false; items.len()];
    for &i in &candidates[..n] {
        out[i] = (attack.apply_within(&items[i].0, window, rng), target);
        flag[i] = true;
    }
    (out, flag)
}

/// Triggered copies of the test inputs whose true label is not `target` (the ASR set), the
/// trigger among the first `window` words.
pub fn asr_set(
    test: &[(String, usize)],
    target: usize,
    attack: &Attack,
    window: usize,
    rng: &mut trainer::Rng,
) -> Vec<(String, usize)> {
    test.iter()
        .filter(|(_, l)| *l != target)
        .map(|(t, l)| (attack.apply_within(t, window, rng), *l))
        .collect()
}

/// Attack success rate: the share of `predictions` on the ASR set equal to `target`.
pub fn attack_success_rate(predictions: &[usize], target: usize) -> f64 {
    predictions.iter().filter(|&&p| p == target).count() as f64 / predictions.len().max(1) as f64
}
