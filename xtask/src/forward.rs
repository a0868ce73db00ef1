//! `cargo xtask forward --model PATH --ids "1 2 3" [--dtype f32|bf16|f16|stored] [--out FILE]
//! [--device D]`: load any supported checkpoint and write what it computes for one sequence, so a
//! user can check it loads right. The architecture comes from `plm::checkpoint::Architecture`:
//!
//! - a `.gguf` file (llama architecture) or an HF folder (one `model.safetensors` or a sharded
//!   index) whose `config.json` says `"model_type"` `llama`, `mistral`, `qwen2`, `gpt2`,
//!   `deepseek`, `deepseek_v2` or `deepseek_v3` → the logits at the last position, shape `[vocab]`;
//! - an HF folder with `"model_type": "bert"` → the last hidden states, shape `[seq, d_model]`.
//!
//! Output: JSON `{"shape": [...], "data": [...]}` to `--out` (written atomically) or stdout.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::DType;
use plm::checkpoint::{Architecture, LoadDtype};

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

/// `[1, n, vocab]` logits → the last position's, as f32 on the host.
fn last_position(logits: Tensor<3>) -> Result<(Vec<usize>, Vec<f32>)> {
    let [_, n, v] = logits.dims();
    let data = logits
        .slice(s![.., n - 1..n, ..])
        .reshape([v])
        .cast(DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((vec![v], data))
}

/// Runs the checkpoint at `model` on `ids` with parameters held in `dtype`; returns
/// `(shape, data)`.
pub fn forward(
    model: &Path,
    ids: &str,
    dtype: LoadDtype,
    device: &Device,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let ids = parse_ids(ids)?;
    let n = ids.len();
    let tokens = || Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, n]), device);
    match Architecture::detect(model)? {
        Architecture::GgufLlama => {
            if dtype != LoadDtype::F32 {
                bail!("GGUF files are dequantised to f32: --dtype {dtype} does not apply");
            }
            let (m, _) = plm::llama::Llama::load_gguf(model, device)?;
            check_vocab(&ids, m.embed_tokens.weight.dims()[0])?;
            last_position(m.forward(tokens()).logits)
        }
        Architecture::Llama | Architecture::Mistral | Architecture::Qwen2 => {
            let m = plm::llama::Llama::load_hf_dtype(model, dtype, device)?;
            check_vocab(&ids, m.embed_tokens.weight.dims()[0])?;
            last_position(m.forward(tokens()).logits)
        }
        Architecture::Gpt2 => {
            let m = plm::gpt2::Gpt2::load_hf_dtype(model, dtype, device)?;
            check_vocab(&ids, m.wte.weight.dims()[0])?;
            let out = m.try_forward_with(tokens(), &plm::hooks::AttentionHooks::fast())?;
            last_position(out.logits)
        }
        Architecture::Deepseek => {
            let m = moe_arch::deepseek::DeepseekLm::load_hf_dtype(model, dtype, device)?;
            check_vocab(&ids, m.embed_tokens.weight.dims()[0])?;
            last_position(m.forward(tokens(), None)?.logits)
        }
        Architecture::DeepseekV2 | Architecture::DeepseekV3 => {
            let m = moe_arch::deepseek_v2::DeepseekV2Lm::load_hf_dtype(model, dtype, device)?;
            check_vocab(&ids, m.embed_tokens.weight.dims()[0])?;
            last_position(m.forward(tokens(), None)?.logits)
        }
        Architecture::Bert => {
            let m = plm::bert::Bert::load_hf_dtype(model, dtype, device)?;
            check_vocab(&ids, m.embeddings.word_embeddings.weight.dims()[0])?;
            let h = m.try_forward(tokens(), None, None)?.last_hidden_state;
            let [_, s, d] = h.dims();
            let data = h
                .reshape([s * d])
                .cast(DType::F32)
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok((vec![s, d], data))
        }
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
