//! Expert relevance scores (ESFT §3.3), computed from the routing that the forward pass
//! returns — no log files.
//!
//! For MoE layer l, routed expert i, sampled sequences j = 1..N_s of L_j real tokens and
//! the sparse gate g_{i,k} of token k:
//! - ESFT-Gate: g_i = (1/N_s) Σ_j (1/L_j) Σ_k g_{i,k}
//! - ESFT-Token: r_i = (1/N_s) Σ_j (1/L_j) Σ_k 1(g_{i,k} > 0) / K'
//!
//! Scores are normalised per sequence by its token count and never across layers (the
//! official `generate_expert_config.py` divides by the sum over layers, issue #17). Each
//! layer's token scores sum to 1; its gate scores sum to the mean routed gate mass.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Which relevance score drives the selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScoreFunction {
    /// Average gate score (ESFT-Gate).
    Gate,
    /// Token selection ratio (ESFT-Token).
    Token,
}

/// Scores of one MoE layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerScores {
    /// Decoder-layer index.
    pub layer: usize,
    /// ESFT-Gate score per routed expert.
    pub gate: Vec<f64>,
    /// ESFT-Token score per routed expert.
    pub token: Vec<f64>,
}

impl LayerScores {
    /// The scores of `f`.
    pub fn of(&self, f: ScoreFunction) -> &[f64] {
        match f {
            ScoreFunction::Gate => &self.gate,
            ScoreFunction::Token => &self.token,
        }
    }
}

/// Relevance scores of every MoE layer over a data sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelevanceScores {
    /// Per MoE layer, in order.
    pub layers: Vec<LayerScores>,
    /// Sequences that contributed (those with at least one real token).
    pub n_sequences: usize,
    /// Real tokens seen.
    pub n_tokens: usize,
}

/// Accumulates scores batch by batch (one forward per batch; all work is batched tensor ops).
#[derive(Clone, Debug, Default)]
pub struct ScoreAccumulator {
    sums: BTreeMap<usize, (Vec<f64>, Vec<f64>)>,
    n_sequences: usize,
    n_tokens: usize,
}

impl ScoreAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one batch.
    ///
    /// # Shapes
    /// `routing`: `(layer, ids [batch·seq, k], gates [batch·seq, k])` per MoE layer as
    /// returned by [`crate::MoeModel::forward_moe`]; `token_mask` `[batch, seq]` (1 = real;
    /// `None` = all real); `n_experts` routed experts per layer.
    pub fn add(
        &mut self,
        routing: &[(usize, Tensor<2, Int>, Tensor<2>)],
        token_mask: Option<Tensor<2, Int>>,
        batch: usize,
        seq: usize,
        n_experts: usize,
    ) -> crate::Result<()> {
        let Some((_, first, _)) = routing.first() else {
            return Ok(());
        };
        let device = first.device();
        let mask = match token_mask {
            Some(m) => m.float().reshape([batch, seq, 1]),
            None => Tensor::<3>::ones([batch, seq, 1], &device),
        };
        let lens = mask.clone().sum_dim(1).reshape([batch, 1]); // [b, 1]
        let lens_host = trainer::host::f64s(lens.clone().reshape([batch]))?;
        let used = lens_host.iter().filter(|&&l| l > 0.0).count();
        // Sequences without real tokens contribute nothing (and are not counted).
        let inv = lens.clamp_min(1.0).recip(); // [b, 1]
        for (layer, idx, w) in routing {
            let [n, k] = idx.dims();
            if n != batch * seq {
                return Err(Error::InvalidConfig(format!(
                    "routing of layer {layer} has {n} rows for a {batch}×{seq} batch"
                )));
            }
            let zeros = Tensor::<2>::zeros([n, n_experts], &device);
            let gate = zeros
                .clone()
                .scatter(1, idx.clone(), w.clone(), IndexingUpdateOp::Add);
            let sel = zeros.scatter(
                1,
                idx.clone(),
                Tensor::<2>::ones([n, k], &device).div_scalar(k as f64),
                IndexingUpdateOp::Add,
            );
            let per_seq = |t: Tensor<2>| {
                (t.reshape([batch, seq, n_experts]) * mask.clone())
                    .sum_dim(1)
                    .reshape([batch, n_experts])
                    * inv.clone()
            };
            let g = trainer::host::f64s(per_seq(gate).sum_dim(0).reshape([n_experts]))?;
            let r = trainer::host::f64s(per_seq(sel).sum_dim(0).reshape([n_experts]))?;
            let slot = self
                .sums
                .entry(*layer)
                .or_insert_with(|| (vec![0.0; n_experts], vec![0.0; n_experts]));
            if slot.0.len() != n_experts {
                return Err(Error::InvalidConfig(format!(
                    "layer {layer} had {} experts and now {n_experts}",
                    slot.0.len()
                )));
            }
            for i in 0..n_experts {
                slot.0[i] += g[i];
                slot.1[i] += r[i];
            }
        }
        self.n_sequences += used;
        self.n_tokens += lens_host.iter().sum::<f64>() as usize;
        Ok(())
    }

    /// The averaged scores.
    pub fn finish(&self) -> RelevanceScores {
        let n = self.n_sequences.max(1) as f64;
        RelevanceScores {
            layers: self
                .sums
                .iter()
                .map(|(&layer, (g, r))| LayerScores {
                    layer,
                    gate: g.iter().map(|v| v / n).collect(),
                    token: r.iter().map(|v| v / n).collect(),
                })
                .collect(),
            n_sequences: self.n_sequences,
            n_tokens: self.n_tokens,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Summary {
    token_scores: BTreeMap<usize, BTreeMap<usize, f64>>,
    gate_scores: BTreeMap<usize, BTreeMap<usize, f64>>,
}

impl RelevanceScores {
    /// The scores of layer `layer`.
    pub fn layer(&self, layer: usize) -> Option<&LayerScores> {
        self.layers.iter().find(|l| l.layer == layer)
    }

    /// Routed experts needed to cover `fraction` of a layer's score mass (normalised to sum
    /// to 1), averaged over layers: the routing concentration (a uniform router needs
    /// `fraction × n_experts`).
    pub fn experts_to_cover(&self, f: ScoreFunction, fraction: f64) -> f64 {
        let counts: Vec<f64> = self
            .layers
            .iter()
            .map(|l| {
                let v = l.of(f);
                let total: f64 = v.iter().sum();
                let mut sorted = v.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let mut cum = 0.0;
                let mut n = 0usize;
                for s in sorted {
                    if total <= 0.0 || cum >= fraction * total - 1e-12 {
                        break;
                    }
                    cum += s;
                    n += 1;
                }
                n as f64
            })
            .collect();
        counts.iter().sum::<f64>() / counts.len().max(1) as f64
    }

    /// The `k` best experts of each layer under `f` (ties by id).
    pub fn top_experts(&self, f: ScoreFunction, k: usize) -> BTreeMap<usize, Vec<usize>> {
        self.layers
            .iter()
            .map(|l| {
                (
                    l.layer,
                    crate::select::ranked(l.of(f)).into_iter().take(k).collect(),
                )
            })
            .collect()
    }

    /// The official `summary.json` layout: `{"token_scores": {layer: {expert: score}},
    /// "gate_scores": {...}}` with string keys, rounded to 4 decimals as the repository does.
    pub fn to_summary_json(&self) -> String {
        let round = |v: f64| (v * 1e4).round() / 1e4;
        let table = |f: ScoreFunction| {
            self.layers
                .iter()
                .map(|l| {
                    (
                        l.layer,
                        l.of(f)
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| (i, round(v)))
                            .collect(),
                    )
                })
                .collect()
        };
        let s = Summary {
            token_scores: table(ScoreFunction::Token),
            gate_scores: table(ScoreFunction::Gate),
        };
        serde_json::to_string_pretty(&s).unwrap_or_default()
    }

    /// Reads a `summary.json` (this crate's or the official repository's).
    pub fn read_summary_json(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let s: Summary = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let dense = |m: &BTreeMap<usize, f64>| -> Vec<f64> {
            let n = m.keys().max().map_or(0, |k| k + 1);
            (0..n).map(|i| m.get(&i).copied().unwrap_or(0.0)).collect()
        };
        let mut layers = Vec::new();
        for (layer, tok) in &s.token_scores {
            let gate = s.gate_scores.get(layer).map(dense).unwrap_or_default();
            let token = dense(tok);
            if gate.len() != token.len() {
                return Err(Error::Json {
                    path: path.to_path_buf(),
                    reason: format!("layer {layer}: gate and token scores list different experts"),
                });
            }
            layers.push(LayerScores {
                layer: *layer,
                gate,
                token,
            });
        }
        Ok(Self {
            layers,
            n_sequences: 0,
            n_tokens: 0,
        })
    }
}
