//! Expert selection (ESFT §3.3) and the official expert-config JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::model::MoeLayerInfo;
use crate::scores::{RelevanceScores, ScoreFunction};

/// How experts are chosen from relevance scores (the flags of the official
/// `generate_expert_config.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectionConfig {
    /// Which score ranks the experts.
    pub score_function: ScoreFunction,
    /// Cumulative score to reach per layer (paper: 0.1 for Gate, 0.2 for Token).
    pub top_p: f64,
    /// Also train the shared experts.
    pub train_shared_experts: bool,
    /// Also train everything outside the experts (attention, norms, router, embeddings, head).
    pub train_non_expert_modules: bool,
    /// Divide each layer's gate scores by their sum before applying `top_p`. The official
    /// script and the paper use the raw gate scores (a layer's mass is the mean routed gate
    /// sum, about 0.35 in the released results), which is the default; token scores always
    /// sum to 1.
    pub normalise_gate: bool,
}

impl SelectionConfig {
    /// ESFT-Gate with the paper's p = 0.1.
    pub fn gate() -> Self {
        Self {
            score_function: ScoreFunction::Gate,
            top_p: 0.1,
            train_shared_experts: false,
            train_non_expert_modules: false,
            normalise_gate: false,
        }
    }

    /// ESFT-Token with the paper's p = 0.2.
    pub fn token() -> Self {
        Self {
            score_function: ScoreFunction::Token,
            top_p: 0.2,
            ..Self::gate()
        }
    }
}

/// Expert ids by descending score (ties by ascending id).
pub fn ranked(scores: &[f64]) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..scores.len()).collect();
    ids.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    ids
}

/// Experts by descending score until their cumulative score reaches `p`; the expert that
/// crosses `p` is included. Experts with a zero score are never selected.
pub fn select_layer(scores: &[f64], p: f64) -> Vec<usize> {
    let mut out = Vec::new();
    let mut cum = 0.0;
    for i in ranked(scores) {
        if cum >= p || scores[i] <= 0.0 {
            break;
        }
        cum += scores[i];
        out.push(i);
    }
    out
}

/// The official expert config (`--expert_config`, and `expert_cfg.json` in every adapter):
/// `{"experts": {"<decoder layer>": [routed ids, by score]}, "shared_experts": bool,
/// "non_expert_modules": bool}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertConfig {
    /// Trainable routed experts per decoder layer (string keys in JSON).
    pub experts: BTreeMap<usize, Vec<usize>>,
    /// Whether the shared experts train.
    #[serde(default)]
    pub shared_experts: bool,
    /// Whether everything outside the experts trains.
    #[serde(default)]
    pub non_expert_modules: bool,
}

/// Where a parameter sits, read from its module path.
#[derive(Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// Routed expert `expert` of decoder layer `layer`.
    Routed {
        /// Layer.
        layer: usize,
        /// Expert id.
        expert: usize,
    },
    /// The shared experts of a layer.
    Shared,
    /// Anything else (attention, norms, router, dense FFNs, embeddings, head).
    Other,
}

/// Classifies a module path such as `layers.3.mlp.Moe.experts.7.up_proj.weight` (enum
/// variant segments are ignored).
pub fn param_role(path: &str) -> ParamRole {
    let seg: Vec<&str> = path.split('.').collect();
    let layer = seg
        .iter()
        .position(|s| *s == "layers")
        .and_then(|i| seg.get(i + 1))
        .and_then(|s| s.parse::<usize>().ok());
    if let Some(i) = seg.iter().position(|s| *s == "experts")
        && let (Some(layer), Some(expert)) = (layer, seg.get(i + 1).and_then(|s| s.parse().ok()))
    {
        return ParamRole::Routed { layer, expert };
    }
    if seg.contains(&"shared_experts") {
        return ParamRole::Shared;
    }
    ParamRole::Other
}

impl ExpertConfig {
    /// Selects experts per layer from `scores`.
    pub fn select(scores: &RelevanceScores, cfg: &SelectionConfig) -> crate::Result<Self> {
        if !(cfg.top_p.is_finite() && cfg.top_p >= 0.0) {
            return Err(Error::InvalidConfig(format!(
                "top_p {} (needs ≥ 0)",
                cfg.top_p
            )));
        }
        let experts = scores
            .layers
            .iter()
            .map(|l| {
                let v = l.of(cfg.score_function);
                let total: f64 = v.iter().sum();
                let v: Vec<f64> = if cfg.normalise_gate
                    && cfg.score_function == ScoreFunction::Gate
                    && total > 0.0
                {
                    v.iter().map(|x| x / total).collect()
                } else {
                    v.to_vec()
                };
                (l.layer, select_layer(&v, cfg.top_p))
            })
            .collect();
        Ok(Self {
            experts,
            shared_experts: cfg.train_shared_experts,
            non_expert_modules: cfg.train_non_expert_modules,
        })
    }

    /// The same number of experts per layer as `self`, drawn uniformly at random (the paper's
    /// Table 4 control).
    pub fn random_like(
        &self,
        layers: &[MoeLayerInfo],
        rng: &mut trainer::Rng,
    ) -> crate::Result<Self> {
        self.validate(layers)?;
        let mut experts = BTreeMap::new();
        for (&layer, ids) in &self.experts {
            let n = layers
                .iter()
                .find(|l| l.layer == layer)
                .map_or(0, |l| l.n_experts);
            let mut all: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut all);
            all.truncate(ids.len());
            experts.insert(layer, all);
        }
        Ok(Self {
            experts,
            ..self.clone()
        })
    }

    /// Only the shared experts train.
    pub fn shared_only(layers: &[MoeLayerInfo]) -> Self {
        Self {
            experts: layers.iter().map(|l| (l.layer, Vec::new())).collect(),
            shared_experts: true,
            non_expert_modules: false,
        }
    }

    /// Checks every layer and expert named against the model.
    pub fn validate(&self, layers: &[MoeLayerInfo]) -> crate::Result<()> {
        for (&layer, ids) in &self.experts {
            let info =
                layers
                    .iter()
                    .find(|l| l.layer == layer)
                    .ok_or_else(|| Error::UnknownLayer {
                        layer,
                        moe_layers: layers.iter().map(|l| l.layer).collect(),
                    })?;
            let mut seen = BTreeSet::new();
            for &expert in ids {
                if expert >= info.n_experts {
                    return Err(Error::UnknownExpert {
                        layer,
                        expert,
                        n_experts: info.n_experts,
                    });
                }
                if !seen.insert(expert) {
                    return Err(Error::DuplicateExpert { layer, expert });
                }
            }
        }
        Ok(())
    }

    /// Whether the parameter at module path `path` trains under this config.
    pub fn is_trainable(&self, path: &str) -> bool {
        match param_role(path) {
            ParamRole::Routed { layer, expert } => self
                .experts
                .get(&layer)
                .is_some_and(|ids| ids.contains(&expert)),
            ParamRole::Shared => self.shared_experts,
            ParamRole::Other => self.non_expert_modules,
        }
    }

    /// Mean number of selected routed experts per listed layer.
    pub fn mean_experts_per_layer(&self) -> f64 {
        let n: usize = self.experts.values().map(Vec::len).sum();
        n as f64 / self.experts.len().max(1) as f64
    }

    /// Reads an expert-config JSON file.
    pub fn read(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The JSON text (layers in numeric order).
    pub fn to_json(&self) -> crate::Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Json {
            path: "expert_cfg.json".into(),
            reason: e.to_string(),
        })
    }

    /// Writes the JSON file atomically.
    pub fn write(&self, path: &Path) -> crate::Result<()> {
        Ok(trainer::fs::write_atomic(path, self.to_json()?.as_bytes())?)
    }
}
