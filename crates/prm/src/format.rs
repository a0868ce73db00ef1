//! Data formats: Math-Shepherd rows, TRL's stepwise rows and GSM8K JSONL.
//!
//! - Math-Shepherd (`peiyi9979/Math-Shepherd`): `{"input", "label", "task"}`; `input` is the
//!   question followed by `Step 1: ... ки\nStep 2: ... ки\n...`, and `label` is the same text with
//!   every `ки` replaced by `+` (good) or `-` (bad). `ки` is two characters and a label one, so
//!   labels are located by walking the segments between tags, not by string offsets.
//! - TRL (`trl-lib/math_shepherd`): `{"prompt", "completions": [step], "labels": [bool]}`.
//! - GSM8K: `{"question", "answer"}` with the final answer after `####` and calculator
//!   annotations `<<48/2=24>>` inside the reasoning lines (dropped when read).

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The Math-Shepherd step tag.
pub const SHEPHERD_TAG: &str = "ки";

/// A problem with its gold final answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// The question.
    pub question: String,
    /// The gold final answer.
    pub gold: String,
    /// A reference solution's steps (GSM8K's reasoning lines), possibly empty.
    pub reference_steps: Vec<String>,
}

/// A solution split into steps with one label in `[0, 1]` per step (1 = good; hard labels are
/// 0 or 1, soft labels a fraction).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LabeledSolution {
    /// The question.
    pub question: String,
    /// The steps, in order, as written (a `Step k:` prefix is kept when present).
    pub steps: Vec<String>,
    /// One label per step.
    pub labels: Vec<f64>,
}

impl LabeledSolution {
    /// Checks that there is one label per step, each in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if self.steps.len() != self.labels.len() {
            return Err(Error::LabelCount {
                steps: self.steps.len(),
                labels: self.labels.len(),
            });
        }
        if let Some(l) = self.labels.iter().find(|l| !(0.0..=1.0).contains(*l)) {
            return Err(Error::InvalidConfig(format!("label {l} outside [0, 1]")));
        }
        Ok(())
    }
}

/// One row of the Math-Shepherd dataset.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShepherdRow {
    /// Question and tagged steps.
    pub input: String,
    /// The same text with `+` / `-` in place of each tag.
    pub label: String,
    /// `GSM8K` or `MATH` (free text).
    #[serde(default)]
    pub task: String,
}

/// One row of TRL's stepwise format.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrlRow {
    /// The question.
    pub prompt: String,
    /// The steps.
    pub completions: Vec<String>,
    /// One label per step (true = good).
    pub labels: Vec<bool>,
}

/// Splits a Math-Shepherd row into question, steps and hard labels.
///
/// The question ends where `Step 1:` starts; rows whose first step lacks that prefix (a known
/// defect of the release) are split after the last `?` of the text before the first tag, and
/// failing that the whole first segment is taken as the first step with an empty question.
pub fn parse_shepherd(row: &ShepherdRow) -> Result<LabeledSolution> {
    let bad = |reason: String| Error::Format {
        source_name: "Math-Shepherd row".into(),
        line: 0,
        reason,
    };
    let segments: Vec<&str> = row.input.split(SHEPHERD_TAG).collect();
    if segments.len() < 2 {
        return Err(bad(format!("no {SHEPHERD_TAG:?} tag in input")));
    }
    let label_chars: Vec<char> = row.label.chars().collect();
    let mut labels = Vec::with_capacity(segments.len() - 1);
    let mut at = 0usize;
    for seg in &segments[..segments.len() - 1] {
        at += seg.chars().count();
        match label_chars.get(at) {
            Some('+') => labels.push(1.0),
            Some('-') => labels.push(0.0),
            other => {
                return Err(bad(format!(
                    "label text has {other:?} where step {} ends (expected '+' or '-')",
                    labels.len() + 1
                )));
            }
        }
        at += 1;
    }
    let first = segments[0];
    let (question, first_step) = if let Some(i) = first.find("Step 1:") {
        (&first[..i], &first[i..])
    } else if let Some(i) = first.rfind('?') {
        (&first[..=i], &first[i + 1..])
    } else {
        ("", first)
    };
    let mut steps = vec![first_step.trim().to_string()];
    steps.extend(
        segments[1..segments.len() - 1]
            .iter()
            .map(|s| s.trim().to_string()),
    );
    let sol = LabeledSolution {
        question: question.trim().to_string(),
        steps,
        labels,
    };
    sol.validate()?;
    Ok(sol)
}

/// The Math-Shepherd row of a solution (labels ≥ 0.5 become `+`).
pub fn to_shepherd(sol: &LabeledSolution, task: &str) -> Result<ShepherdRow> {
    sol.validate()?;
    let mut input = format!("{} ", sol.question);
    let mut label = input.clone();
    for (i, (s, l)) in sol.steps.iter().zip(&sol.labels).enumerate() {
        let sep = if i + 1 < sol.steps.len() { "\n" } else { "" };
        input.push_str(&format!("{s} {SHEPHERD_TAG}{sep}"));
        let mark = if *l >= 0.5 { '+' } else { '-' };
        label.push_str(&format!("{s} {mark}{sep}"));
    }
    Ok(ShepherdRow {
        input,
        label,
        task: task.to_string(),
    })
}

/// A solution in TRL's format (labels ≥ 0.5 are good).
pub fn to_trl(sol: &LabeledSolution) -> Result<TrlRow> {
    sol.validate()?;
    Ok(TrlRow {
        prompt: sol.question.clone(),
        completions: sol.steps.clone(),
        labels: sol.labels.iter().map(|&l| l >= 0.5).collect(),
    })
}

/// A TRL row as a labelled solution.
pub fn from_trl(row: &TrlRow) -> Result<LabeledSolution> {
    let sol = LabeledSolution {
        question: row.prompt.clone(),
        steps: row.completions.clone(),
        labels: row
            .labels
            .iter()
            .map(|&b| if b { 1.0 } else { 0.0 })
            .collect(),
    };
    sol.validate()?;
    Ok(sol)
}

/// One GSM8K record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Gsm8kRow {
    /// The question.
    pub question: String,
    /// Reasoning lines and `#### answer`.
    pub answer: String,
}

/// A GSM8K record as a problem: the gold answer after `####`, and the reasoning lines (without
/// calculator annotations) as the reference steps.
pub fn gsm8k_problem(row: &Gsm8kRow) -> Result<Problem> {
    let Some(i) = row.answer.rfind("####") else {
        return Err(Error::Format {
            source_name: "GSM8K record".into(),
            line: 0,
            reason: "no '####' final answer".into(),
        });
    };
    let gold = row.answer[i + 4..].trim().replace(',', "");
    let reference_steps = row.answer[..i]
        .lines()
        .map(textdata::readers::strip_calculator)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Ok(Problem {
        question: row.question.trim().to_string(),
        gold,
        reference_steps,
    })
}

/// Reads a JSONL file of `T`, naming the line of the first bad record.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| Error::Format {
            source_name: path.display().to_string(),
            line: i + 1,
            reason: e.to_string(),
        })?);
    }
    Ok(out)
}

/// Writes records as JSONL atomically (a temporary file renamed into place).
pub fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, r).map_err(|e| Error::Format {
            source_name: path.display().to_string(),
            line: 0,
            reason: e.to_string(),
        })?;
        buf.write_all(b"\n").map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(trainer::fs::write_atomic(path, &buf)?)
}

/// Reads a GSM8K JSONL split (e.g. `test.jsonl`) through `textdata`'s reader.
pub fn read_gsm8k(path: &Path) -> Result<Vec<Problem>> {
    Ok(textdata::readers::read_gsm8k(path)?
        .into_iter()
        .map(|p| Problem {
            question: p.question,
            gold: p.answer,
            reference_steps: p.steps,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ShepherdRow {
        ShepherdRow {
            input: "Tom has 3 apples. How many? Step 1: 3+2=5 ки\nStep 2: The answer is: 5 ки"
                .into(),
            label: "Tom has 3 apples. How many? Step 1: 3+2=5 +\nStep 2: The answer is: 5 -".into(),
            task: "GSM8K".into(),
        }
    }

    #[test]
    fn shepherd_rows_parse_and_round_trip() {
        let sol = parse_shepherd(&row()).expect("parses");
        assert_eq!(sol.question, "Tom has 3 apples. How many?");
        assert_eq!(sol.steps, vec!["Step 1: 3+2=5", "Step 2: The answer is: 5"]);
        assert_eq!(sol.labels, vec![1.0, 0.0]);
        let back = to_shepherd(&sol, "GSM8K").expect("writes");
        assert_eq!(back, row());
        assert_eq!(parse_shepherd(&back).expect("parses"), sol);
    }

    #[test]
    fn a_first_step_without_prefix_splits_at_the_question_mark() {
        let r = ShepherdRow {
            input: "How many? 3+2=5 ки\nThe answer is: 5 ки".into(),
            label: "How many? 3+2=5 +\nThe answer is: 5 +".into(),
            task: String::new(),
        };
        let sol = parse_shepherd(&r).expect("parses");
        assert_eq!(sol.question, "How many?");
        assert_eq!(sol.steps[0], "3+2=5");
    }

    #[test]
    fn bad_rows_are_typed_errors() {
        let mut r = row();
        r.label = r.input.clone();
        assert!(matches!(parse_shepherd(&r), Err(Error::Format { .. })));
        r.input = "no tags".into();
        assert!(matches!(parse_shepherd(&r), Err(Error::Format { .. })));
        let bad = LabeledSolution {
            question: "q".into(),
            steps: vec!["a".into()],
            labels: vec![],
        };
        assert!(matches!(to_trl(&bad), Err(Error::LabelCount { .. })));
    }

    #[test]
    fn trl_round_trip() {
        let sol = parse_shepherd(&row()).expect("parses");
        let t = to_trl(&sol).expect("trl");
        assert_eq!(t.labels, vec![true, false]);
        assert_eq!(from_trl(&t).expect("back"), sol);
    }

    #[test]
    fn gsm8k_records_and_files() {
        let r = Gsm8kRow {
            question: "Natalia sold 48 clips. ".into(),
            answer:
                "She sold 48/2 = <<48/2=24>>24 in May.\nTotal 48+24 = <<48+24=72>>72\n#### 1,072"
                    .into(),
        };
        let p = gsm8k_problem(&r).expect("parses");
        assert_eq!(p.gold, "1072");
        assert_eq!(p.reference_steps[0], "She sold 48/2 = 24 in May.");
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("x.jsonl");
        write_jsonl(&f, &[r.clone(), r]).expect("write");
        assert_eq!(read_gsm8k(&f).expect("read").len(), 2);
        std::fs::write(
            &f,
            "{\"question\": \"q\", \"answer\": \"#### 1\"}\nnot json\n",
        )
        .expect("w");
        let e = read_gsm8k(&f).expect_err("bad line");
        assert!(e.to_string().contains('2'), "{e}");
        std::fs::write(&f, "{\"question\": \"q\", \"answer\": \"a\"}\n").expect("w");
        assert!(matches!(read_gsm8k(&f), Err(Error::Data(_))));
    }
}
