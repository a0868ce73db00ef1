//! `cargo xtask inspect MODEL [--json]`: what a checkpoint is before anything is loaded —
//! architecture, parameter count, stored dtypes and bytes, shards, and the MoE layout.
//! Reads only `config.json` and the safetensors headers (or the GGUF header), so it is instant
//! even for a checkpoint far larger than memory.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use plm::checkpoint::{Architecture, Weights};
use serde::Serialize;

/// The MoE layout read from `config.json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct MoeLayout {
    /// Layers with routed experts.
    pub moe_layers: usize,
    /// Routed experts per MoE layer.
    pub routed_experts: usize,
    /// Shared experts per MoE layer.
    pub shared_experts: usize,
    /// Routed experts per token.
    pub experts_per_token: usize,
    /// Width of one expert.
    pub expert_width: usize,
    /// Routing (`topk_method`, `scoring_func`, groups).
    pub routing: String,
    /// Stored values in routed experts, over all layers.
    pub routed_params: u64,
    /// Values a token uses: everything but the routed experts, plus its `experts_per_token`
    /// experts in each MoE layer.
    pub activated_params: u64,
}

/// What `inspect` reports.
#[derive(Serialize, Debug)]
pub struct Summary {
    /// The checkpoint.
    pub path: String,
    /// Its architecture (`model_type`, or `gguf`).
    pub architecture: String,
    /// Stored values over all tensors.
    pub params: u64,
    /// Tensors.
    pub tensors: usize,
    /// Bytes of tensor data (headers excluded).
    pub bytes: u64,
    /// Stored values per dtype.
    pub dtypes: BTreeMap<String, u64>,
    /// Weight files.
    pub shards: Vec<String>,
    /// The MoE layout, for MoE checkpoints.
    pub moe: Option<MoeLayout>,
}

fn usize_key(cfg: &serde_json::Value, key: &str) -> Option<usize> {
    cfg[key].as_u64().map(|v| v as usize)
}

fn moe_layout(cfg: &serde_json::Value, weights: &Weights, arch: Architecture) -> Option<MoeLayout> {
    let routed = usize_key(cfg, "n_routed_experts")?;
    let layers = usize_key(cfg, "num_hidden_layers")?;
    let first = usize_key(cfg, "first_k_dense_replace").unwrap_or(0);
    let freq = usize_key(cfg, "moe_layer_freq").unwrap_or(1).max(1);
    let moe_layers = (first..layers).filter(|l| l % freq == 0).count();
    let k = usize_key(cfg, "num_experts_per_tok").unwrap_or(0);
    let routed_params: u64 = weights
        .shards
        .iter()
        .flat_map(|s| s.tensors.iter())
        .filter(|(name, _)| name.contains(".mlp.experts."))
        .map(|(_, t)| t.numel())
        .sum();
    let per_expert = routed_params
        .checked_div((moe_layers * routed) as u64)
        .unwrap_or(0);
    let activated = weights.n_params() - routed_params + (moe_layers * k) as u64 * per_expert;
    let text = |key: &str| cfg[key].as_str().map(str::to_string);
    // transformers' DeepseekV3Config saves neither key: its router is always noaux_tc + sigmoid.
    let v3 = arch == Architecture::DeepseekV3;
    let mut routing = vec![
        text("topk_method").unwrap_or_else(|| if v3 { "noaux_tc" } else { "greedy" }.into()),
        text("scoring_func").unwrap_or_else(|| if v3 { "sigmoid" } else { "softmax" }.into()),
    ];
    if let (Some(g), Some(tg)) = (usize_key(cfg, "n_group"), usize_key(cfg, "topk_group")) {
        routing.push(format!("{tg} of {g} groups"));
    }
    Some(MoeLayout {
        moe_layers,
        routed_experts: routed,
        shared_experts: usize_key(cfg, "n_shared_experts").unwrap_or(0),
        experts_per_token: k,
        expert_width: usize_key(cfg, "moe_intermediate_size").unwrap_or(0),
        routing: routing.join(", "),
        routed_params,
        activated_params: activated,
    })
}

/// Reads what `inspect` reports about `model`.
pub fn inspect(model: &Path) -> Result<Summary> {
    let arch = Architecture::detect(model)?;
    if arch == Architecture::GgufLlama {
        let g = plm::gguf::Gguf::open(model)?;
        let mut dtypes = BTreeMap::new();
        let mut params = 0u64;
        for t in &g.tensors {
            let n: u64 = t.dims.iter().product();
            params += n;
            *dtypes.entry(format!("{:?}", t.ggml_type)).or_insert(0) += n;
        }
        return Ok(Summary {
            path: model.display().to_string(),
            architecture: arch.to_string(),
            params,
            tensors: g.tensors.len(),
            bytes: std::fs::metadata(model)?.len(),
            dtypes,
            shards: vec![model.display().to_string()],
            moe: None,
        });
    }
    let cfg: serde_json::Value = plm::checkpoint::read_config(model)?;
    let weights = Weights::open(model)?;
    Ok(Summary {
        path: model.display().to_string(),
        architecture: arch.to_string(),
        params: weights.n_params(),
        tensors: weights.names().count(),
        bytes: weights.n_bytes(),
        dtypes: weights.dtype_counts(),
        shards: weights
            .shards
            .iter()
            .map(|s| s.path.display().to_string())
            .collect(),
        moe: moe_layout(&cfg, &weights, arch),
    })
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// The summary as the lines `inspect` prints.
pub fn render(s: &Summary) -> String {
    let mut out = vec![
        format!("checkpoint    {}", s.path),
        format!("architecture  {}", s.architecture),
        format!("parameters    {} ({} tensors)", human(s.params), s.tensors),
        format!("bytes         {}B", human(s.bytes)),
        format!(
            "dtypes        {}",
            s.dtypes
                .iter()
                .map(|(k, v)| format!("{k} {}", human(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!("shards        {}", s.shards.len()),
    ];
    if let Some(m) = &s.moe {
        out.push(format!(
            "moe           {} layers × ({} routed + {} shared) experts of width {}, top-{}, {}",
            m.moe_layers,
            m.routed_experts,
            m.shared_experts,
            m.expert_width,
            m.experts_per_token,
            m.routing
        ));
        out.push(format!(
            "              routed experts {} parameters, activated per token {}",
            human(m.routed_params),
            human(m.activated_params)
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_deepseek_v2_layout_counts_its_experts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/deepseek_v2_tiny/qlora");
        let s = inspect(&dir).unwrap();
        assert_eq!(s.architecture, "deepseek_v2");
        let m = s.moe.unwrap();
        // 3 layers, the first dense: 2 MoE layers of 8 experts, each 3 matrices 32 × 16.
        assert_eq!(
            (m.moe_layers, m.routed_experts, m.experts_per_token),
            (2, 8, 2)
        );
        assert_eq!(m.routed_params, 2 * 8 * 3 * 32 * 16);
        assert_eq!(m.activated_params, s.params - (2 * 6 * 3 * 32 * 16) as u64);
        assert!(render(&inspect(&dir).unwrap()).contains("top-2"));
    }
}
