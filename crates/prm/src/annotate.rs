//! Automatic process annotation (Math-Shepherd §3.3).
//!
//! For every step `s_i` of a solution, a completer decodes `N` continuations of the prefix
//! `(problem, s_1..s_i)`; the step's hard label is 1 when any continuation reaches the gold
//! answer and its soft label is the fraction that does. The last step carries the solution's
//! own final answer, so it is labelled by checking that answer directly (no completions): a
//! completion of a finished solution would only restate it. Steps are joined by `sep` and the
//! continuation starts after a trailing `sep`, the layout the generator was trained on.

use serde::{Deserialize, Serialize};

use crate::answer::{answers_equal, extract_answer};
use crate::sample::Policy;
use crate::{Error, Result};

/// The labels of one solution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLabels {
    /// Hard estimation: 1 when any completion reaches the gold answer.
    pub hard: Vec<f64>,
    /// Soft estimation: the fraction of completions that reach it.
    pub soft: Vec<f64>,
    /// Completions decoded.
    pub completions: usize,
}

/// The text a completer continues after `steps[..=i]`.
pub fn prefix(prompt: &str, steps: &[String], i: usize, sep: &str) -> String {
    let mut p = prompt.to_string();
    for s in &steps[..=i] {
        p.push_str(s);
        p.push_str(sep);
    }
    p
}

/// Labels every step of `steps` (a solution to the problem whose text is `prompt`) with `n`
/// completions per step from `policy`.
pub fn annotate(
    policy: &mut dyn Policy,
    prompt: &str,
    steps: &[String],
    gold: &str,
    n: usize,
    sep: &str,
) -> Result<StepLabels> {
    if n == 0 || steps.is_empty() {
        return Err(Error::InvalidConfig(
            "annotation needs n >= 1 and at least one step".into(),
        ));
    }
    let mut hard = Vec::with_capacity(steps.len());
    let mut soft = Vec::with_capacity(steps.len());
    let mut completions = 0;
    for i in 0..steps.len() {
        let last = i + 1 == steps.len();
        let frac = match (last, extract_final(&steps[i])) {
            (true, Some(a)) => f64::from(u8::from(answers_equal(&a, gold))),
            _ => {
                let outs = policy.complete(&prefix(prompt, steps, i, sep), n)?;
                completions += outs.len();
                let ok = outs
                    .iter()
                    .filter(|c| extract_answer(c).is_some_and(|a| answers_equal(&a, gold)))
                    .count();
                ok as f64 / outs.len().max(1) as f64
            }
        };
        soft.push(frac);
        hard.push(if frac > 0.0 { 1.0 } else { 0.0 });
    }
    Ok(StepLabels {
        hard,
        soft,
        completions,
    })
}

/// The final answer a step states explicitly (`The answer is ...` or `#### ...`), if any.
pub fn extract_final(step: &str) -> Option<String> {
    let l = step.to_lowercase();
    if l.contains("answer is") || l.contains("answer:") || step.contains("####") {
        extract_answer(step)
    } else {
        None
    }
}

/// Accuracy of labels against the truth (`label >= threshold` means good).
pub fn label_accuracy(labels: &[f64], truth: &[bool], threshold: f64) -> f64 {
    let n = labels.len().min(truth.len());
    if n == 0 {
        return 0.0;
    }
    labels
        .iter()
        .zip(truth)
        .filter(|(l, t)| (**l >= threshold) == **t)
        .count() as f64
        / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::ScriptedPolicy;

    #[test]
    fn hard_and_soft_labels_follow_the_completions() {
        // The completer reaches 10 from a prefix that still holds "5", half of the time.
        let calls = std::cell::RefCell::new(Vec::new());
        let mut p = ScriptedPolicy(|prefix: &str, n: usize| {
            calls.borrow_mut().push(prefix.to_string());
            let good = prefix.contains("=5");
            (0..n)
                .map(|j| {
                    if good && j % 2 == 0 {
                        "The answer is: 10".to_string()
                    } else {
                        "The answer is: 7".to_string()
                    }
                })
                .collect()
        });
        let steps: Vec<String> = vec!["2+3=5".into(), "5*2=11".into(), "The answer is: 11".into()];
        let l = annotate(&mut p, "Q\n", &steps, "10", 4, "\n").expect("labels");
        assert_eq!(l.soft, vec![0.5, 0.5, 0.0]);
        assert_eq!(l.hard, vec![1.0, 1.0, 0.0]);
        assert_eq!(l.completions, 8);
        let calls = calls.borrow();
        assert_eq!(calls[0], "Q\n2+3=5\n");
        assert_eq!(calls[1], "Q\n2+3=5\n5*2=11\n");
    }

    #[test]
    fn a_correct_final_step_is_good_and_bad_input_is_an_error() {
        let mut p = ScriptedPolicy(|_: &str, n: usize| vec![String::new(); n]);
        let steps = vec!["The answer is: 1,000".to_string()];
        let l = annotate(&mut p, "Q\n", &steps, "1000", 8, "\n").expect("labels");
        assert_eq!((l.hard[0], l.completions), (1.0, 0));
        assert!(annotate(&mut p, "Q\n", &[], "1", 8, "\n").is_err());
        assert!(annotate(&mut p, "Q\n", &steps, "1", 0, "\n").is_err());
        assert_eq!(
            label_accuracy(&[1.0, 0.2, 0.9], &[true, true, false], 0.5),
            1.0 / 3.0
        );
    }
}
