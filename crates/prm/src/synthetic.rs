//! Multi-step arithmetic word problems with exact answers and known step correctness.
//!
//! A problem is a chain: someone starts with 2–20 things and 1–5 operations change it (buy or
//! give away 1–9, two or three times as many, keep one of two or three equal piles; values stay
//! positive integers); the question asks for the final quantity. Its solution
//! has one `Step k: <the sentence>, so a op b = c` line per operation and a final `The answer is: c` line, so
//! 2–6 steps. Every intermediate value is known, so the truth of each step of any generated
//! solution is known: a step is correct when it and every step before it reach the gold chain's
//! values (the answer step when its answer is the gold answer).

use serde::{Deserialize, Serialize};
use trainer::Rng;

use crate::annotate::extract_final;
use crate::answer::{answers_equal, numeric_value};
use crate::format::Problem;

/// A generated problem with its gold chain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChainProblem {
    /// Question, gold answer and the reference steps.
    pub problem: Problem,
    /// The value after each operation (the last is the answer).
    pub chain: Vec<i64>,
}

const NAMES: &[(&str, &str)] = &[
    ("Tom", "he"),
    ("Mia", "she"),
    ("Sam", "he"),
    ("Ana", "she"),
    ("Leo", "he"),
    ("Zoe", "she"),
    ("Max", "he"),
    ("Ivy", "she"),
];
const THINGS: &[&str] = &[
    "apples", "coins", "books", "stamps", "marbles", "cards", "pens", "shells",
];

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// One problem with `ops` operations (1–5).
pub fn problem(rng: &mut Rng, ops: usize) -> ChainProblem {
    let (name, pron) = NAMES[rng.below(NAMES.len())];
    let thing = THINGS[rng.below(THINGS.len())];
    let mut v = 2 + rng.below(19) as i64;
    let mut q = format!("{name} has {v} {thing}.");
    let mut steps = Vec::with_capacity(ops + 1);
    let mut chain = Vec::with_capacity(ops);
    for k in 0..ops.clamp(1, 5) {
        // Pick an operation that keeps the value a small positive integer.
        let (sentence, sym, b, next) = loop {
            match rng.below(4) {
                0 => {
                    let b = 1 + rng.below(9) as i64;
                    break (format!("{} buys {b} more.", cap(pron)), '+', b, v + b);
                }
                1 if v > 1 => {
                    let b = 1 + rng.below((v - 1).min(9) as usize) as i64;
                    break (format!("{} gives away {b}.", cap(pron)), '-', b, v - b);
                }
                2 if v <= 30 => {
                    let b = 2 + rng.below(2) as i64;
                    break (
                        format!("{} then has {b} times as many.", cap(pron)),
                        '*',
                        b,
                        v * b,
                    );
                }
                3 => {
                    let divisors: Vec<i64> = (2..=3).filter(|d| v % d == 0).collect();
                    if divisors.is_empty() {
                        continue;
                    }
                    let b = divisors[rng.below(divisors.len())];
                    break (
                        format!("{} keeps one of {b} equal piles.", cap(pron)),
                        '/',
                        b,
                        v / b,
                    );
                }
                _ => continue,
            }
        };
        q.push(' ');
        q.push_str(&sentence);
        // The step restates its sentence, then computes: `Step 2: He buys 6 more, so 35 + 6 = 41`.
        steps.push(format!(
            "Step {}: {}, so {v} {sym} {b} = {next}",
            k + 1,
            sentence.trim_end_matches('.')
        ));
        chain.push(next);
        v = next;
    }
    q.push_str(&format!(" How many {thing} does {name} have now?"));
    steps.push(format!("The answer is: {v}"));
    ChainProblem {
        problem: Problem {
            question: q,
            gold: v.to_string(),
            reference_steps: steps,
        },
        chain,
    }
}

/// `n` problems with 1–5 operations each (2–6 steps), drawn from `rng`.
pub fn problems(rng: &mut Rng, n: usize) -> Vec<ChainProblem> {
    (0..n)
        .map(|_| {
            let ops = 1 + rng.below(5);
            problem(rng, ops)
        })
        .collect()
}

/// The result a step states (the number after its last `=`).
fn step_result(step: &str) -> Option<f64> {
    step.rsplit_once('=').and_then(|(_, r)| numeric_value(r))
}

/// The true correctness of each step of a solution to `p`.
pub fn step_truth(p: &ChainProblem, steps: &[String]) -> Vec<bool> {
    let mut ok = true;
    let mut k = 0;
    steps
        .iter()
        .map(|s| {
            if ok {
                ok = match extract_final(s) {
                    Some(a) => k == p.chain.len() && answers_equal(&a, &p.problem.gold),
                    None => {
                        let good = p
                            .chain
                            .get(k)
                            .zip(step_result(s))
                            .is_some_and(|(&c, r)| (r - c as f64).abs() < 1e-9);
                        k += 1;
                        good
                    }
                };
            }
            ok
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::extract_answer;

    #[test]
    fn reference_solutions_are_right_and_every_step_true() {
        let mut rng = Rng::seed_from(4);
        for p in problems(&mut rng, 300) {
            let steps = &p.problem.reference_steps;
            assert!((2..=6).contains(&steps.len()));
            assert_eq!(steps.len(), p.chain.len() + 1);
            let last = steps.last().map(String::as_str).unwrap_or("");
            assert_eq!(
                extract_answer(last).as_deref(),
                Some(p.problem.gold.as_str())
            );
            assert!(step_truth(&p, steps).iter().all(|&t| t));
            assert!(p.chain.iter().all(|&v| v > 0));
        }
    }

    #[test]
    fn an_error_makes_its_step_and_all_later_steps_false() {
        let mut rng = Rng::seed_from(5);
        let p = problem(&mut rng, 3);
        let mut steps = p.problem.reference_steps.clone();
        steps[1] = format!(
            "{} = {}",
            steps[1].rsplit_once('=').map_or("", |x| x.0),
            p.chain[1] + 1
        );
        assert_eq!(step_truth(&p, &steps), vec![true, false, false, false]);
        // Skipping the computation and guessing the answer is wrong too.
        let guess = vec![format!("The answer is: {}", p.problem.gold)];
        assert_eq!(step_truth(&p, &guess), vec![false]);
    }
}
