//! The downstream tasks of the `esft` experiment, as byte-level chat examples in ESFT's
//! format (`User: {content}\n\nAssistant:` + ` {answer}` + end; the user turn is masked out
//! of the loss), and their batching, masked loss and scoring.
//!
//! - `sentiment`: movie-review snippets (the SST stand-in of `shared/assets.md`) → ` positive`
//!   / ` negative`; offline, templated reviews.
//! - `arithmetic`: generated multi-step word problems → the number.
//! - `chinese`: Chinese poems and sayings from fortunes-zh as plain LM text (every byte is a
//!   target); offline, a few embedded Tang poems.
//!
//! Generation tasks are scored by greedy exact match, computed with one teacher-forced
//! forward: greedy decoding reproduces the answer exactly iff the argmax at every answer
//! position equals the answer byte (the end byte `\n` included), because each step then sees
//! exactly the prefix it would have generated. The LM task is scored by next-byte accuracy.
//! Sentiment is a choice between two labels ([`Scoring::Choice`]): the label whose answer has
//! the higher likelihood after the prompt, so a model that writes neither label exactly is
//! still scored on which it prefers (exact match put four methods at the positive share, a
//! constant answer).

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::Error;
use trainer::host::IntsToHost;

/// End of an answer.
pub const END: u8 = b'\n';

/// One example: a masked prompt and a scored answer (an empty prompt for LM text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Prompt bytes (no loss).
    pub prompt: Vec<u8>,
    /// Answer bytes, ending with [`END`] for generation tasks.
    pub answer: Vec<u8>,
    /// The candidate answers of a [`Scoring::Choice`] example when they differ per example
    /// (the answer among them, in an order that does not give it away); empty: the task's
    /// [`TaskData::choices`].
    pub choices: Vec<Vec<u8>>,
}

impl Example {
    /// The candidates this example is scored among in a [`Scoring::Choice`] task.
    pub fn candidates<'a>(&'a self, task: &'a TaskData) -> &'a [Vec<u8>] {
        if self.choices.is_empty() {
            &task.choices
        } else {
            &self.choices
        }
    }
}

/// How a task is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Scoring {
    /// Greedy exact match of the answer.
    ExactMatch,
    /// Next-byte accuracy over the text.
    NextByte,
    /// Accuracy of the most likely candidate ([`Example::candidates`]: the example's own or
    /// the task's [`TaskData::choices`]) by the summed log-likelihood of the answer bytes after
    /// the prompt.
    Choice,
}

/// A task's data.
#[derive(Clone, Debug)]
pub struct TaskData {
    /// Name.
    pub name: String,
    /// Where the data came from.
    pub source: String,
    /// Training examples.
    pub train: Vec<Example>,
    /// Held-out examples.
    pub test: Vec<Example>,
    /// Scoring.
    pub scoring: Scoring,
    /// The candidate answers of a [`Scoring::Choice`] task (as [`chat`] encodes them).
    pub choices: Vec<Vec<u8>>,
}

impl TaskData {
    /// The same task with its last `n` training examples held out as a development split
    /// (returned second), for choosing hyper-parameters without touching the test examples.
    pub fn split_dev(&self, n: usize) -> (TaskData, Vec<Example>) {
        let n = n.min(self.train.len() / 2);
        let mut train = self.train.clone();
        let dev = train.split_off(train.len() - n);
        (
            TaskData {
                train,
                ..self.clone()
            },
            dev,
        )
    }
}

/// ESFT's chat format.
pub fn chat(content: &str, answer: &str) -> Example {
    let mut a = format!(" {answer}").into_bytes();
    a.push(END);
    Example {
        prompt: format!("User: {content}\n\nAssistant:").into_bytes(),
        answer: a,
        choices: Vec::new(),
    }
}

fn split(
    mut v: Vec<Example>,
    n_test: usize,
    rng: &mut trainer::Rng,
) -> (Vec<Example>, Vec<Example>) {
    rng.shuffle(&mut v);
    let n_test = n_test.min(v.len() / 5).max(1);
    let test = v.split_off(v.len() - n_test);
    (v, test)
}

/// Sentiment from `movieReviewSnippets_GroundTruth.txt`, or templated reviews without a path.
/// From the file, only sentences whose mean rating is at least `min_rating` from 0 (0: every
/// non-neutral one); the templated reviews ignore it.
pub fn sentiment(
    path: Option<&Path>,
    min_rating: f64,
    n_test: usize,
    seed: u64,
) -> crate::Result<TaskData> {
    let mut rng = trainer::Rng::seed_from(seed);
    let label = |l: usize| if l == 1 { "positive" } else { "negative" };
    let (items, source) = match path {
        Some(p) => {
            let rows = textdata::readers::read_movie_snippets_rated(p)?;
            (
                rows.iter()
                    .filter(|(_, rating)| rating.abs() >= min_rating)
                    .map(|(r, _)| {
                        chat(
                            &format!("Review: {}\nSentiment?", r.text.trim()),
                            label(r.label),
                        )
                    })
                    .collect::<Vec<_>>(),
                if min_rating > 0.0 {
                    format!("{} (|rating| ≥ {min_rating})", p.display())
                } else {
                    p.display().to_string()
                },
            )
        }
        None => {
            let v = textdata::synthetic::templated_reviews(2000, |k| rng.below(k))
                .iter()
                .map(|r| chat(&format!("Review: {}\nSentiment?", r.text), label(r.label)))
                .collect();
            (v, "templated reviews (embedded)".to_string())
        }
    };
    let (train, test) = split(items, n_test, &mut rng);
    Ok(TaskData {
        name: "sentiment".into(),
        source,
        train,
        test,
        scoring: Scoring::Choice,
        choices: ["positive", "negative"]
            .iter()
            .map(|l| chat("", l).answer)
            .collect(),
    })
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends at a word boundary (the
/// whole text when it fits; a single over-long word is cut at a character boundary).
fn clip_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[..end].rfind(' ') {
        Some(space) if space > 0 => &text[..space],
        _ => &text[..end],
    }
}

/// Topic classification of BBC News articles (the folder's topics, e.g. business,
/// entertainment, politics, sport, tech) from the headline and the first words of the body,
/// clipped to `max_bytes` bytes; a choice among the topic names ([`Scoring::Choice`]).
///
/// The split follows the general corpus's ([`textdata::ByteCorpus::load`] with the same
/// `valid_fraction` over the same sorted files): the articles the corpus holds out are the test
/// articles (at most `n_test`), the rest the training articles, so no test article is in the
/// base's pretraining text or in the general rows mixed into fine-tuning.
pub fn topic(
    dir: &Path,
    valid_fraction: f64,
    max_bytes: usize,
    n_test: usize,
    seed: u64,
) -> crate::Result<TaskData> {
    let (articles, topics) = textdata::readers::read_bbc(dir)?;
    let (train, held_out) = textdata::split_every_kth(&articles, valid_fraction);
    if held_out.is_empty() || train.is_empty() || topics.len() < 2 {
        return Err(Error::InvalidConfig(format!(
            "topic: {} needs two topic folders and enough articles for a held-out split",
            dir.display()
        )));
    }
    let encode = |a: &textdata::readers::NewsArticle| {
        let text = format!("{}. {}", a.title, a.body.replace('\n', " "));
        chat(
            &format!("Article: {}\nTopic?", clip_bytes(&text, max_bytes)),
            &a.topic,
        )
    };
    let mut rng = trainer::Rng::seed_from(seed);
    let mut train: Vec<Example> = train.iter().map(encode).collect();
    rng.shuffle(&mut train);
    let mut test: Vec<Example> = held_out.iter().map(encode).collect();
    rng.shuffle(&mut test);
    test.truncate(n_test.max(1));
    Ok(TaskData {
        name: "topic".into(),
        source: format!(
            "{} (test: the articles the general corpus holds out)",
            dir.display()
        ),
        train,
        test,
        scoring: Scoring::Choice,
        choices: topics.iter().map(|t| chat("", t).answer).collect(),
    })
}

/// Generated multi-step arithmetic word problems (two or three operations).
///
/// `n_choices` ≥ 2 scores a test answer as a choice among the right number and `n_choices - 1`
/// distractors made by the likely slips of each problem (an operation dropped or flipped, a
/// carry off by ten), in a random order ([`Scoring::Choice`]); 0 or 1 scores by greedy exact
/// match ([`Scoring::ExactMatch`], which a small byte-level model leaves at its floor).
pub fn arithmetic(n_train: usize, n_test: usize, n_choices: usize, seed: u64) -> TaskData {
    let mut rng = trainer::Rng::seed_from(seed);
    let names = ["Tom", "Ann", "Li", "Sara", "Ravi", "Mia", "Omar", "Eva"];
    let items = ["apples", "coins", "books", "eggs", "pens", "cards"];
    let mut seen = std::collections::HashSet::new();
    let mut v = Vec::new();
    let mut tries = 0;
    while v.len() < n_train + n_test && tries < 50 * (n_train + n_test) {
        tries += 1;
        let n = names[rng.below(names.len())];
        let it = items[rng.below(items.len())];
        // the question, the answer and the slips
        let (q, ans, slips) = match rng.below(3) {
            0 => {
                let (a, b) = (2 + rng.below(40), 1 + rng.below(30));
                let c = rng.below(a + b);
                (
                    format!(
                        "{n} has {a} {it}, buys {b} more and gives {c} away. How many {it} now?"
                    ),
                    a + b - c,
                    vec![a + b + c, a + b, (a + b).abs_diff(c + b)],
                )
            }
            1 => {
                let (a, b) = (2 + rng.below(9), 2 + rng.below(9));
                let c = rng.below(a * b);
                (
                    format!(
                        "{n} buys {a} boxes of {b} {it} and loses {c}. How many {it} are left?"
                    ),
                    a * b - c,
                    vec![a * b, a * b + c, (a + b).abs_diff(c)],
                )
            }
            _ => {
                let (a, b, c) = (1 + rng.below(30), 1 + rng.below(30), 1 + rng.below(30));
                (
                    format!(
                        "{n} has {a} {it}, gets {b} and then {c} more. How many {it} in total?"
                    ),
                    a + b + c,
                    vec![a + b, a + c, (a + b).abs_diff(c)],
                )
            }
        };
        if !seen.insert(q.clone()) {
            continue;
        }
        let mut e = chat(&q, &ans.to_string());
        if n_choices >= 2 {
            let mut cands = vec![ans];
            for d in slips
                .into_iter()
                .chain([ans + 10, ans.abs_diff(10), ans + 1])
            {
                if cands.len() < n_choices && !cands.contains(&d) {
                    cands.push(d);
                }
            }
            // more choices than slips: numbers near the answer
            let mut k = 2;
            while cands.len() < n_choices {
                if !cands.contains(&(ans + k)) {
                    cands.push(ans + k);
                }
                k += 1;
            }
            rng.shuffle(&mut cands);
            e.choices = cands
                .iter()
                .map(|c| chat("", &c.to_string()).answer)
                .collect();
        }
        v.push(e);
    }
    let test = v.split_off(v.len().saturating_sub(n_test));
    TaskData {
        name: "arithmetic".into(),
        source: format!("generated word problems (seed {seed})"),
        train: v,
        test,
        scoring: if n_choices >= 2 {
            Scoring::Choice
        } else {
            Scoring::ExactMatch
        },
        choices: Vec::new(),
    }
}

/// Embedded Tang poems, one per line (the offline stand-in for fortunes-zh).
pub const EMBEDDED_ZH: &str = include_str!("../data/embedded_zh.txt");

/// Chinese text as LM examples: the passages of the fortune files in `dir` (fortunes-zh's
/// `usr/share/games/fortunes`), or the embedded poems.
pub fn chinese(dir: Option<&Path>, n_test: usize, seed: u64) -> crate::Result<TaskData> {
    let mut rng = trainer::Rng::seed_from(seed);
    let (passages, source) = match dir {
        Some(d) => {
            let mut all = Vec::new();
            for f in ["tang300", "song100", "chinese"] {
                let p = d.join(f);
                if p.exists() {
                    all.extend(textdata::readers::read_fortunes(&p)?);
                }
            }
            if all.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "no fortune files (tang300, song100, chinese) in {}",
                    d.display()
                )));
            }
            (all, d.display().to_string())
        }
        None => (
            EMBEDDED_ZH
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
            "embedded Tang poems".to_string(),
        ),
    };
    let items: Vec<Example> = passages
        .into_iter()
        .map(|p| Example {
            prompt: Vec::new(),
            answer: p.into_bytes(),
            choices: Vec::new(),
        })
        .collect();
    let (train, test) = split(items, n_test, &mut rng);
    Ok(TaskData {
        name: "chinese".into(),
        source,
        train,
        test,
        scoring: Scoring::NextByte,
        choices: Vec::new(),
    })
}

/// A batch of examples, one per row, right-padded.
pub struct Batch {
    /// Inputs `[b, s]`.
    pub x: Tensor<2, Int>,
    /// Targets `[b, s]`.
    pub y: Tensor<2, Int>,
    /// Loss weight per target `[b, s]` (1 on answer bytes).
    pub w: Tensor<2>,
    /// Real input positions `[b, s]` (for the balance loss and the scores).
    pub token_mask: Tensor<2, Int>,
    /// Host copies for scoring.
    pub y_host: Vec<i64>,
    /// Host copy of `w`.
    pub w_host: Vec<f32>,
}

/// Encodes examples into `[len, seq_len]` tensors. A prompt that does not fit loses its
/// beginning; an answer that does not fit is cut at the end.
pub fn batch(examples: &[&Example], seq_len: usize, device: &Device) -> Batch {
    let b = examples.len();
    let mut x = vec![0i64; b * seq_len];
    let mut y = vec![0i64; b * seq_len];
    let mut w = vec![0f32; b * seq_len];
    let mut m = vec![0i64; b * seq_len];
    for (r, e) in examples.iter().enumerate() {
        let total = seq_len + 1;
        let answer = &e.answer[..e.answer.len().min(total)];
        let keep = (total - answer.len()).min(e.prompt.len());
        let prompt = &e.prompt[e.prompt.len() - keep..];
        let seq: Vec<u8> = prompt.iter().chain(answer).copied().collect();
        for t in 0..seq.len().saturating_sub(1) {
            let i = r * seq_len + t;
            x[i] = i64::from(seq[t]);
            y[i] = i64::from(seq[t + 1]);
            m[i] = 1;
            // Target t+1 is scored when it is an answer byte.
            if t + 1 >= prompt.len() {
                w[i] = 1.0;
            }
        }
    }
    let shape = [b, seq_len];
    Batch {
        x: Tensor::from_data(TensorData::new(x, shape), device),
        y: Tensor::from_data(TensorData::new(y.clone(), shape), device),
        w: Tensor::from_data(TensorData::new(w.clone(), shape), device),
        token_mask: Tensor::from_data(TensorData::new(m, shape), device),
        y_host: y,
        w_host: w,
    }
}

/// Log-probability of every target `[b, s]`.
fn target_log_probs(logits: Tensor<3>, y: Tensor<2, Int>) -> Tensor<2> {
    let [b, s, _] = logits.dims();
    log_softmax(logits, 2)
        .gather(2, y.reshape([b, s, 1]))
        .reshape([b, s])
}

/// Cross-entropy averaged over the weighted targets.
///
/// # Shapes
/// `logits` `[b, s, V]`, `y` `[b, s]`, `w` `[b, s]` → `[1]`.
pub fn masked_cross_entropy(logits: Tensor<3>, y: Tensor<2, Int>, w: Tensor<2>) -> Tensor<1> {
    let total = w.clone().sum().clamp_min(1.0);
    weighted_log_likelihood(logits, y, w).neg() / total
}

/// Sum of the targets' log-probabilities times their weights (a loss with per-target weights
/// that need not sum to one: mixtures of differently normalised rows).
///
/// # Shapes
/// `logits` `[b, s, V]`, `y` `[b, s]`, `w` `[b, s]` → `[1]`.
pub fn weighted_log_likelihood(logits: Tensor<3>, y: Tensor<2, Int>, w: Tensor<2>) -> Tensor<1> {
    (target_log_probs(logits, y) * w).sum()
}

/// Summed log-likelihood of each row's weighted targets.
///
/// # Shapes
/// `logits` `[b, s, V]`, `y` `[b, s]`, `w` `[b, s]` → `[b]`.
pub fn row_log_likelihood(logits: Tensor<3>, y: Tensor<2, Int>, w: Tensor<2>) -> Tensor<1> {
    let [b, _, _] = logits.dims();
    (target_log_probs(logits, y) * w).sum_dim(1).reshape([b])
}

/// (correct, counted) for a batch: whole answers for exact match, bytes for next-byte.
pub fn score_batch(
    logits: Tensor<3>,
    batch: &Batch,
    scoring: Scoring,
) -> crate::Result<(usize, usize)> {
    let [b, s, _] = logits.dims();
    let pred = logits.argmax(2).reshape([b * s]).to_i64s()?;
    let mut correct = 0;
    let mut counted = 0;
    for r in 0..b {
        let row = r * s..(r + 1) * s;
        let scored: Vec<usize> = row.filter(|&i| batch.w_host[i] > 0.0).collect();
        if scored.is_empty() {
            continue;
        }
        let ok = scored
            .iter()
            .filter(|&&i| pred[i] == batch.y_host[i])
            .count();
        match scoring {
            // a choice task's own accuracy needs every candidate (the experiment's
            // `task_score`); per batch, the given answer's exact match
            Scoring::ExactMatch | Scoring::Choice => {
                counted += 1;
                correct += usize::from(ok == scored.len());
            }
            Scoring::NextByte => {
                counted += scored.len();
                correct += ok;
            }
        }
    }
    Ok((correct, counted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_masked_and_truncated_from_the_left() {
        let d = Device::flex();
        let e = chat("abcdefghij", "42");
        let b = batch(&[&e], 8, &d);
        // 9 bytes kept: the last 5 prompt bytes + " 42\n".
        let ans: Vec<i64> = (0..8)
            .filter(|&i| b.w_host[i] > 0.0)
            .map(|i| b.y_host[i])
            .collect();
        assert_eq!(ans, vec![i64::from(b' '), 52, 50, 10]);
        let lm = Example {
            prompt: vec![],
            answer: b"xyz".to_vec(),
            choices: vec![],
        };
        let b = batch(&[&lm], 8, &d);
        assert_eq!(b.w_host.iter().filter(|&&w| w > 0.0).count(), 2);
    }

    #[test]
    fn exact_match_needs_every_answer_byte() {
        let d = Device::flex();
        let e = chat("q", "7");
        let bt = batch(&[&e], 16, &d);
        let mut logits = vec![0f32; 16 * 256];
        for t in 0..16 {
            logits[t * 256 + bt.y_host[t] as usize] = 5.0;
        }
        let l = Tensor::<3>::from_data(TensorData::new(logits.clone(), [1, 16, 256]), &d);
        assert_eq!(score_batch(l, &bt, Scoring::ExactMatch).unwrap(), (1, 1));
        let last = (0..16).rfind(|&i| bt.w_host[i] > 0.0).unwrap();
        logits[last * 256 + 3] = 9.0;
        let l = Tensor::<3>::from_data(TensorData::new(logits, [1, 16, 256]), &d);
        assert_eq!(score_batch(l, &bt, Scoring::ExactMatch).unwrap(), (0, 1));
    }

    #[test]
    fn generated_problems_are_distinct_and_correct() {
        let t = arithmetic(300, 50, 4, 1);
        assert_eq!(t.test.len(), 50);
        let p = String::from_utf8(t.train[0].prompt.clone()).unwrap();
        assert!(p.starts_with("User: ") && p.ends_with("Assistant:"));
        let mut all: Vec<_> = t
            .train
            .iter()
            .chain(&t.test)
            .map(|e| e.prompt.clone())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn arithmetic_choices_hold_the_answer_once_among_distinct_slips() {
        let t = arithmetic(200, 50, 4, 2);
        assert_eq!(t.scoring, Scoring::Choice);
        let mut first = 0;
        for e in t.train.iter().chain(&t.test) {
            let c = e.candidates(&t);
            assert_eq!(c.len(), 4);
            assert_eq!(c.iter().filter(|x| **x == e.answer).count(), 1);
            let mut d = c.to_vec();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 4, "distinct candidates");
            first += usize::from(c[0] == e.answer);
        }
        // the answer's position is random, not first
        assert!(first > 25 && first < 125, "answer first in {first} of 250");
        let exact = arithmetic(20, 5, 0, 2);
        assert_eq!(exact.scoring, Scoring::ExactMatch);
        assert!(exact.test.iter().all(|e| e.choices.is_empty()));
    }

    #[test]
    fn the_dev_split_comes_from_the_training_examples_only() {
        let t = arithmetic(40, 10, 0, 3);
        let (rest, dev) = t.split_dev(8);
        assert_eq!(dev.len(), 8);
        assert_eq!(rest.train.len() + dev.len(), t.train.len());
        assert!(
            dev.iter()
                .all(|e| !rest.train.contains(e) && !t.test.contains(e))
        );
        assert_eq!(rest.test, t.test);
        // never more than half of the training data
        assert_eq!(t.split_dev(1000).1.len(), t.train.len() / 2);
    }

    #[test]
    fn row_likelihoods_sum_the_weighted_log_probabilities_per_row() {
        let d = Device::flex();
        let e1 = chat("x", "positive");
        let e2 = chat("x", "negative");
        let b = batch(&[&e1, &e2], 24, &d);
        // uniform logits: each scored byte costs ln V
        let logits = Tensor::<3>::zeros([2, 24, 256], &d);
        let ll = row_log_likelihood(logits, b.y, b.w)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let per = (256f32).ln();
        for (r, e) in [&e1, &e2].iter().enumerate() {
            let n = e.answer.len() as f32;
            assert!((ll[r] + n * per).abs() < 1e-3, "{} vs {}", ll[r], -n * per);
        }
        let s = sentiment(None, 0.0, 20, 1).unwrap();
        assert_eq!(s.scoring, Scoring::Choice);
        assert_eq!(
            s.choices,
            vec![b" positive\n".to_vec(), b" negative\n".to_vec()]
        );
    }

    /// The topic task's test articles are exactly the ones the general corpus holds out; the
    /// training articles are all in its training text; prompts fit their byte budget.
    #[test]
    fn topic_test_articles_are_the_general_corpus_held_out_ones() {
        let dir = tempfile::tempdir().unwrap();
        for topic in ["business", "sport", "tech"] {
            std::fs::create_dir_all(dir.path().join(topic)).unwrap();
            for i in 0..17 {
                std::fs::write(
                    dir.path().join(topic).join(format!("{i:03}.txt")),
                    format!("Headline {topic} {i:03}\n\nThe body of {topic} story {i:03} goes on and on for a while.\n"),
                )
                .unwrap();
            }
        }
        let corpus = textdata::ByteCorpus::load(Some(dir.path()), 0.1, 0).unwrap();
        let text = |v: &[u32]| String::from_utf8(v.iter().map(|&b| b as u8).collect()).unwrap();
        let (train_text, valid_text) = (text(&corpus.train), text(&corpus.valid));
        let t = topic(dir.path(), 0.1, 40, 1000, 3).unwrap();
        assert_eq!(t.test.len(), corpus.valid_docs);
        assert_eq!(t.train.len(), corpus.train_docs);
        assert_eq!(
            t.choices,
            vec![
                b" business\n".to_vec(),
                b" sport\n".to_vec(),
                b" tech\n".to_vec()
            ]
        );
        let headline = |e: &Example| {
            let p = String::from_utf8(e.prompt.clone()).unwrap();
            let h = &p[p.find("Headline").unwrap()..];
            h[..h.find('.').unwrap()].to_string()
        };
        for e in &t.test {
            let h = headline(e);
            assert!(valid_text.contains(&h) && !train_text.contains(&h), "{h}");
            // the answer is the article's own folder
            let topic_name = h.split(' ').nth(1).unwrap();
            assert_eq!(e.answer, format!(" {topic_name}\n").into_bytes());
        }
        for e in &t.train {
            assert!(train_text.contains(&headline(e)));
        }
        for e in t.train.iter().chain(&t.test) {
            let p = String::from_utf8(e.prompt.clone()).unwrap();
            let body = &p["User: Article: ".len()..p.find("\nTopic?").unwrap()];
            assert!(body.len() <= 40, "{body:?}");
        }
        assert_eq!(topic(dir.path(), 0.1, 40, 2, 3).unwrap().test.len(), 2);
        assert_eq!(clip_bytes("héllo wörld", 8), "héllo");
        assert_eq!(clip_bytes("abcdefgh", 4), "abcd");
        assert_eq!(clip_bytes("short", 40), "short");
        assert!(topic(&dir.path().join("missing"), 0.1, 40, 10, 1).is_err());
    }

    #[test]
    fn the_rating_threshold_keeps_only_strongly_rated_snippets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snippets.txt");
        let mut text = String::new();
        // 40 sentences rated ±2.5, 40 rated ±0.5, one neutral
        for i in 0..80 {
            let r = if i < 40 { 2.5 } else { 0.5 } * if i % 2 == 0 { 1.0 } else { -1.0 };
            text.push_str(&format!("{i}\t{r}\tsentence number {i}\n"));
        }
        text.push_str("80\t0\tneutral\n");
        std::fs::write(&path, text).unwrap();
        let all = sentiment(Some(&path), 0.0, 10, 1).unwrap();
        assert_eq!(all.train.len() + all.test.len(), 80);
        let strong = sentiment(Some(&path), 2.0, 10, 1).unwrap();
        assert_eq!(strong.train.len() + strong.test.len(), 40);
        let number = |e: &Example| -> usize {
            let p = String::from_utf8_lossy(&e.prompt).into_owned();
            let rest = &p[p.find("number ").unwrap() + 7..];
            rest[..rest.find('\n').unwrap()].parse().unwrap()
        };
        for e in strong.train.iter().chain(&strong.test) {
            assert!(
                number(e) < 40,
                "a weakly rated sentence was kept: {}",
                number(e)
            );
        }
        assert!(strong.source.contains("≥ 2"));
    }
}
