//! `cargo xtask forward --model PATH --ids "1 2 3" [--out FILE] [--device D]`: load any supported
//! checkpoint and write what it computes for one sequence, so a user can check it loads right.
//!
//! - a `.gguf` file (llama architecture) or an HF folder whose `config.json` says
//!   `"model_type": "llama"`, `"gpt2"`, `"deepseek"` or `"deepseek_v2"` → the logits at the last position,
//!   shape `[vocab]`;
//! - an HF folder with `"model_type": "bert"` → the last hidden states, shape `[seq, d_model]`.
//!
//! Output: JSON `{"shape": [...], "data": [...]}` to `--out` (written atomically) or stdout.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

fn parse_ids(ids: &str) -> Result<Vec<i64>> {
    let v: Vec<i64> = ids
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .with_context(|| format!("'{s}' is not a token id"))
        })
        .collect::<Result<_>>()?;
    if v.is_empty() {
        bail!("--ids holds no token id");
    }
    if let Some(bad) = v.iter().find(|&&i| i < 0) {
        bail!("token id {bad} is negative");
    }
    Ok(v)
}

fn check_vocab(ids: &[i64], vocab: usize) -> Result<()> {
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        bail!("token id {bad} is outside the vocabulary of {vocab}");
    }
    Ok(())
}

/// Runs the checkpoint at `model` on `ids`; returns `(shape, data)`.
pub fn forward(model: &Path, ids: &str, device: &Device) -> Result<(Vec<usize>, Vec<f32>)> {
    let ids = parse_ids(ids)?;
    let n = ids.len();
    let tokens = || Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, n]), device);
    // [1, n, vocab] -> the last position's logits.
    let last = |logits: Tensor<3>| -> Result<(Vec<usize>, Vec<f32>)> {
        let [_, _, v] = logits.dims();
        let data = logits
            .slice(s![.., n - 1..n, ..])
            .reshape([v])
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok((vec![v], data))
    };
    let last_logits = |m: &plm::llama::Llama| -> Result<(Vec<usize>, Vec<f32>)> {
        check_vocab(&ids, m.embed_tokens.weight.dims()[0])?;
        last(m.forward(tokens()).logits)
    };
    if model.extension().is_some_and(|e| e == "gguf") {
        let (m, _) = plm::llama::Llama::load_gguf(model, device)?;
        return last_logits(&m);
    }
    let cfg = model.join("config.json");
    let text = std::fs::read_to_string(&cfg).with_context(|| {
        format!(
            "{} is neither a .gguf file nor a folder with config.json",
            model.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("invalid {}", cfg.display()))?;
    match v["model_type"].as_str() {
        Some("llama") => last_logits(&plm::llama::Llama::load_hf(model, device)?),
        Some("gpt2") => {
            let m = plm::gpt2::Gpt2::load_hf(model, device)?;
            check_vocab(&ids, m.wte.weight.dims()[0])?;
            last(m.forward(tokens()).logits)
        }
        Some("deepseek") => {
            let m = moe_arch::deepseek::DeepseekLm::load_hf(model, device)?;
            check_vocab(&ids, m.embed_tokens.weight.dims()[0])?;
            last(m.forward(tokens(), None)?.logits)
        }
        Some("deepseek_v2") => {
            let m = moe_arch::deepseek_v2::DeepseekV2Lm::load_hf(model, device)?;
            check_vocab(&ids, m.embed_tokens.weight.dims()[0])?;
            last(m.forward(tokens(), None)?.logits)
        }
        Some("bert") => {
            let m = plm::bert::Bert::load_hf(model, device)?;
            check_vocab(&ids, m.embeddings.word_embeddings.weight.dims()[0])?;
            let h = m.forward(tokens(), None, None).last_hidden_state;
            let [_, s, d] = h.dims();
            let data = h
                .reshape([s * d])
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok((vec![s, d], data))
        }
        Some(other) => bail!(
            "unknown architecture '{other}' in {} (supported: bert, deepseek, deepseek_v2, gpt2, llama, .gguf llama)",
            cfg.display()
        ),
        None => bail!("{} has no model_type", cfg.display()),
    }
}

/// The JSON document `forward` writes.
pub fn to_json(shape: &[usize], data: &[f32]) -> String {
    serde_json::json!({ "shape": shape, "data": data }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_with_spaces_or_commas_and_reject_junk() {
        assert_eq!(parse_ids("1 2,3").unwrap(), vec![1, 2, 3]);
        assert!(parse_ids("1 x").is_err());
        assert!(parse_ids("  ").is_err());
        assert!(parse_ids("-4").is_err());
    }
}
