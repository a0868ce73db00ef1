//! Demonstrations in the paper's templates, and where everything sits in the token sequence.
//!
//! A prompt is built segment by segment — for each demonstration `input_prefix`, ` {text}`,
//! `label_prefix`, the label word, `separator`; then the query without its label — so every
//! position is known exactly whatever the tokenizer does with leading spaces.

use serde::{Deserialize, Serialize};

use crate::Error;

/// A task template (SST-2: `Review: {text}\nSentiment: Positive`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Before the input text (`Review:`).
    pub input_prefix: String,
    /// Before the label (`\nSentiment:`).
    pub label_prefix: String,
    /// Label words, with their leading space (`" Negative"`, `" Positive"`).
    pub labels: Vec<String>,
    /// Between demonstrations (`\n`).
    pub separator: String,
}

impl Template {
    /// The SST-2 template of the paper.
    pub fn sst2() -> Self {
        Self {
            input_prefix: "Review:".into(),
            label_prefix: "\nSentiment:".into(),
            labels: vec![" Negative".into(), " Positive".into()],
            separator: "\n".into(),
        }
    }

    /// The AGNews template of the paper.
    pub fn agnews() -> Self {
        Self {
            input_prefix: "Article:".into(),
            label_prefix: "\nAnswer:".into(),
            labels: [" World", " Sports", " Business", " Technology"]
                .map(String::from)
                .to_vec(),
            separator: "\n".into(),
        }
    }

    /// BBC News topics in the AGNews style (labels in the corpus's sorted topic order:
    /// business, entertainment, politics, sport, tech).
    pub fn bbc() -> Self {
        Self {
            input_prefix: "Article:".into(),
            label_prefix: "\nAnswer:".into(),
            labels: [
                " Business",
                " Entertainment",
                " Politics",
                " Sports",
                " Technology",
            ]
            .map(String::from)
            .to_vec(),
            separator: "\n".into(),
        }
    }
}

/// Which tokens of a multi-token label word stand for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelTokens {
    /// The first token (the official code).
    First,
    /// Every token; flows average over them.
    All,
}

/// A tokenised prompt with its positions (0-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Per demonstration, the positions of its label word's tokens.
    pub label_tokens: Vec<Vec<usize>>,
    /// Per demonstration, its class.
    pub demo_labels: Vec<usize>,
    /// Positions of the demonstrations' input texts.
    pub text_positions: Vec<usize>,
    /// Per demonstration, the positions of its input text.
    pub demo_text: Vec<Vec<usize>>,
    /// Positions of the demonstrations' formatting and label tokens (the hidden anchors).
    pub anchor_positions: Vec<usize>,
    /// Tokens of the demonstration part (the query starts here).
    pub demo_len: usize,
    /// The final position, where the label is predicted.
    pub query: usize,
}

impl Prompt {
    /// The label positions p_k under `which` (one entry per demonstration for `First`).
    pub fn label_positions(&self, which: LabelTokens) -> Vec<usize> {
        match which {
            LabelTokens::First => self
                .label_tokens
                .iter()
                .filter_map(|t| t.first().copied())
                .collect(),
            LabelTokens::All => self.label_tokens.iter().flatten().copied().collect(),
        }
    }
}

/// Builds a prompt from `demos` (text, class) and a query text. `tok` encodes a piece of text
/// without special tokens.
pub fn build(
    tok: &dyn Fn(&str) -> crate::Result<Vec<u32>>,
    template: &Template,
    demos: &[(String, usize)],
    query: &str,
) -> crate::Result<Prompt> {
    let mut ids = Vec::new();
    let mut label_tokens = Vec::new();
    let mut demo_labels = Vec::new();
    let mut text_positions = Vec::new();
    let mut demo_text = Vec::new();
    let mut anchors = Vec::new();
    let push = |ids: &mut Vec<u32>,
                piece: &str,
                anchor: bool,
                text: bool,
                anchors: &mut Vec<usize>,
                texts: &mut Vec<usize>|
     -> crate::Result<Vec<usize>> {
        let t = tok(piece)?;
        let start = ids.len();
        ids.extend(t);
        let pos: Vec<usize> = (start..ids.len()).collect();
        if anchor {
            anchors.extend(&pos);
        }
        if text {
            texts.extend(&pos);
        }
        Ok(pos)
    };
    for (text, label) in demos {
        let word = template.labels.get(*label).ok_or_else(|| {
            Error::BadPrompt(format!(
                "demonstration label {label} of {} classes",
                template.labels.len()
            ))
        })?;
        push(
            &mut ids,
            &template.input_prefix,
            true,
            false,
            &mut anchors,
            &mut text_positions,
        )?;
        // An empty text (the Text_anchor baseline) leaves only the formatting.
        let tp = if text.trim().is_empty() {
            Vec::new()
        } else {
            push(
                &mut ids,
                &format!(" {}", text.trim()),
                false,
                true,
                &mut anchors,
                &mut text_positions,
            )?
        };
        demo_text.push(tp);
        push(
            &mut ids,
            &template.label_prefix,
            true,
            false,
            &mut anchors,
            &mut text_positions,
        )?;
        let lt = push(
            &mut ids,
            word,
            true,
            false,
            &mut anchors,
            &mut text_positions,
        )?;
        if lt.is_empty() {
            return Err(Error::EmptyTokens(word.clone()));
        }
        label_tokens.push(lt);
        demo_labels.push(*label);
        push(
            &mut ids,
            &template.separator,
            true,
            false,
            &mut anchors,
            &mut text_positions,
        )?;
    }
    let demo_len = ids.len();
    let mut none = Vec::new();
    push(
        &mut ids,
        &template.input_prefix,
        false,
        false,
        &mut none,
        &mut text_positions,
    )?;
    push(
        &mut ids,
        &format!(" {}", query.trim()),
        false,
        false,
        &mut none,
        &mut text_positions,
    )?;
    push(
        &mut ids,
        &template.label_prefix,
        false,
        false,
        &mut none,
        &mut text_positions,
    )?;
    if ids.is_empty() {
        return Err(Error::BadPrompt("empty prompt".into()));
    }
    Ok(Prompt {
        query: ids.len() - 1,
        ids,
        label_tokens,
        demo_labels,
        text_positions,
        demo_text,
        anchor_positions: anchors,
        demo_len,
    })
}

/// The first token of every label word (the class-score vocabulary of the paper).
pub fn label_word_ids(
    tok: &dyn Fn(&str) -> crate::Result<Vec<u32>>,
    template: &Template,
) -> crate::Result<Vec<u32>> {
    template
        .labels
        .iter()
        .map(|l| {
            tok(l)?
                .first()
                .copied()
                .ok_or_else(|| Error::EmptyTokens(l.clone()))
        })
        .collect()
}
