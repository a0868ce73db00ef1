//! Math-Shepherd's process labels without a human: a completer continues every prefix of a
//! solution N times, and a step is good when completions from it still reach the gold answer
//! (hard: any; soft: the fraction). Here the completer is scripted (it recovers the gold answer
//! with probability 0.7 from a correct prefix and 0.05 from a wrong one) so the example runs in
//! milliseconds; `prm::sample::LmPolicy` puts any plm decoder in its place.
//!
//! `cargo run --release -p prm --example step_labels`

use prm::annotate::annotate;
use prm::format::{LabeledSolution, to_shepherd};
use prm::sample::ScriptedPolicy;
use prm::synthetic::{problem, step_truth};
use prm::verify::{Aggregate, Candidate, aggregate, best_of_n, majority};
use trainer::Rng;

const SEP: &str = "\n";

/// The reference solution with step `k`'s result off by `delta` and the answer off with it.
fn flawed(steps: &[String], k: usize, delta: i64) -> Vec<String> {
    let mut out = steps.to_vec();
    let shift = |s: &str| -> String {
        match s.rsplit_once("= ").or_else(|| s.rsplit_once(": ")) {
            Some((head, n)) => match n.trim().parse::<i64>() {
                Ok(v) => format!(
                    "{head}{} {}",
                    if s.contains("= ") { "=" } else { ":" },
                    v + delta
                ),
                Err(_) => s.to_string(),
            },
            None => s.to_string(),
        }
    };
    out[k] = shift(&out[k]);
    if let Some(last) = out.last_mut() {
        *last = shift(last);
    }
    out
}

fn main() -> Result<(), prm::Error> {
    let mut rng = Rng::seed_from(7);
    let p = problem(&mut rng, 4);
    let prompt = format!("{}{SEP}", p.problem.question);
    let gold = p.problem.gold.clone();
    println!("{}\ngold answer: {gold}\n", p.problem.question);

    // The completer: knows which prefixes are still on track (as a good policy would).
    let answer_from = |prefix: &str, rng: &mut Rng, truth: &[bool]| -> String {
        let steps_seen = prefix.matches(SEP).count() - 1;
        let on_track = truth[..steps_seen].iter().all(|&t| t);
        let hit = rng.next_f64() < if on_track { 0.7 } else { 0.05 };
        let v: i64 = gold.parse().unwrap_or(0);
        format!(
            " ... The answer is: {}",
            if hit { v } else { v + 1 + rng.below(5) as i64 }
        )
    };

    // Step labels of `steps` from 8 completions per step.
    let label = |steps: &[String], rng: &mut Rng| {
        let truth = step_truth(&p, steps);
        let mut crng = rng.fork();
        let mut policy = ScriptedPolicy(|prefix: &str, n: usize| {
            (0..n)
                .map(|_| answer_from(prefix, &mut crng, &truth))
                .collect()
        });
        annotate(&mut policy, &prompt, steps, &gold, 8, SEP)
    };

    // 1. Label a solution whose second step is wrong.
    let steps = flawed(&p.problem.reference_steps, 1, 3);
    let truth = step_truth(&p, &steps);
    let labels = label(&steps, &mut rng)?;
    println!("step | true | hard | soft | text");
    for (i, s) in steps.iter().enumerate() {
        println!(
            "{i:>4} | {:>4} | {:>4} | {:.2} | {s}",
            u8::from(truth[i]),
            labels.hard[i],
            labels.soft[i]
        );
    }
    let row = to_shepherd(
        &LabeledSolution {
            question: p.problem.question.clone(),
            steps: steps.clone(),
            labels: labels.hard.clone(),
        },
        "synthetic",
    )?;
    println!("\nas a Math-Shepherd row: {}\n", row.label);

    // 2. Best-of-8 with the soft labels as step scores (min over steps), against majority vote:
    //    five candidates share one wrong answer, three reach the gold one.
    let mut candidates = Vec::new();
    for c in 0..8 {
        let steps = if c < 3 {
            p.problem.reference_steps.clone()
        } else {
            flawed(&p.problem.reference_steps, c % 3, 2)
        };
        let soft = label(&steps, &mut rng)?.soft;
        let answer = prm::annotate::extract_final(steps.last().map_or("", String::as_str));
        candidates.push(Candidate {
            answer,
            score: aggregate(&soft, Aggregate::Min),
        });
    }
    let best = best_of_n(&candidates).and_then(|i| candidates[i].answer.clone());
    println!(
        "best-of-8 by step labels: {:?}; majority vote: {:?}; gold: {gold}",
        best,
        majority(&candidates)
    );
    Ok(())
}
