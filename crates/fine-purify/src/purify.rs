//! Fine-purifying: rank every scalar parameter by how poisonous it looks and reset the top
//! (1 − ρ) fraction to its pre-trained value.
//!
//! With drift δ_i = θ_ft,i − θ_pre,i and the clean Fisher H_i, the diffusion view of SGD makes
//! δ_i² ∝ H_i for dimensions moved only by the clean task, so the indicator is
//! r_i = δ_i² / (H_i + ε). Ablations use δ² alone, 1/H alone, or a random mask (Fine-mixing:
//! each dimension keeps its drift with probability ρ). The ranking finds the k-th largest score
//! with a selection algorithm (`select_nth_unstable`), never a full sort.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::params::{Entry, Snapshot};

/// The per-dimension score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Score {
    /// δ² / (H + ε): Fine-purifying.
    Diffusion,
    /// δ² alone.
    DriftOnly,
    /// 1 / (H + ε) alone.
    InverseHessian,
    /// A Bernoulli(ρ) keep mask: Fine-mixing.
    Random,
}

/// Where scores compete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// One ranking over every dimension of every tensor (default).
    Global,
    /// Each tensor resets its own top (1 − ρ) fraction.
    PerTensor,
}

/// Purification settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PurifyConfig {
    /// Score.
    pub score: Score,
    /// Ranking scope.
    pub scope: Scope,
    /// ρ: the fraction of dimensions that keep their fine-tuned value.
    pub reserve: f64,
    /// ε relative to the mean Fisher (ε = eps × mean H, plus 1e-30).
    pub eps: f64,
}

impl PurifyConfig {
    /// Fine-purifying with reserve ratio ρ.
    pub fn diffusion(reserve: f64) -> Self {
        Self {
            score: Score::Diffusion,
            scope: Scope::Global,
            reserve,
            eps: 1e-8,
        }
    }
}

/// What [`purify`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PurifyStats {
    /// Dimensions reset to their pre-trained value.
    pub reset: usize,
    /// Dimensions ranked.
    pub total: usize,
    /// Reset dimensions per tensor path.
    pub per_tensor: Vec<(String, usize)>,
}

/// Indices of the `k` largest values of `scores` (ties broken by position), using a selection
/// algorithm for the threshold.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let n = scores.len();
    if k == 0 || n == 0 {
        return Vec::new();
    }
    if k >= n {
        return (0..n).collect();
    }
    let mut tmp: Vec<f32> = scores.to_vec();
    // The k-th largest = element n−k in ascending order.
    let (_, kth, _) = tmp.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
    let thr = *kth;
    let mut out: Vec<usize> = (0..n)
        .filter(|&i| scores[i].total_cmp(&thr).is_gt())
        .collect();
    for (i, s) in scores.iter().enumerate() {
        if out.len() >= k {
            break;
        }
        if s.total_cmp(&thr).is_eq() {
            out.push(i);
        }
    }
    out
}

fn scores(
    cfg: &PurifyConfig,
    delta: &Entry,
    h: Option<&Entry>,
    eps: f32,
) -> crate::Result<Vec<f32>> {
    let need_h = matches!(cfg.score, Score::Diffusion | Score::InverseHessian);
    let h = match (need_h, h) {
        (true, None) => {
            return Err(Error::InvalidConfig(format!(
                "{:?} needs the Fisher",
                cfg.score
            )));
        }
        (_, h) => h,
    };
    Ok(match cfg.score {
        Score::Diffusion => delta
            .data
            .iter()
            .zip(&h.map(|e| e.data.clone()).unwrap_or_default())
            .map(|(d, h)| d * d / (h + eps))
            .collect(),
        Score::DriftOnly => delta.data.iter().map(|d| d * d).collect(),
        Score::InverseHessian => h
            .map(|e| e.data.iter().map(|h| 1.0 / (h + eps)).collect())
            .unwrap_or_default(),
        Score::Random => Vec::new(),
    })
}

/// Purifies `ft` towards `pre` (same layout). `fisher` is required by the Diffusion and
/// InverseHessian scores; `keep(path)` exempts tensors (e.g. the task head) from ranking and
/// resetting; `rng` drives the Random score.
pub fn purify(
    pre: &Snapshot,
    ft: &Snapshot,
    fisher: Option<&Snapshot>,
    cfg: &PurifyConfig,
    keep: impl Fn(&str) -> bool,
    rng: &mut trainer::Rng,
) -> crate::Result<(Snapshot, PurifyStats)> {
    if !(0.0..=1.0).contains(&cfg.reserve) {
        return Err(Error::InvalidConfig(format!(
            "reserve ratio {} outside [0, 1]",
            cfg.reserve
        )));
    }
    let delta = ft.minus(pre)?;
    if let Some(f) = fisher {
        f.check_same_layout(ft)?;
    }
    let ranked: Vec<usize> = (0..ft.entries.len())
        .filter(|&i| !keep(&ft.entries[i].path))
        .collect();
    let mean_h = fisher.map_or(0.0, |f| {
        let (s, n) = ranked.iter().fold((0f64, 0usize), |(s, n), &i| {
            (
                s + f.entries[i].data.iter().map(|&x| f64::from(x)).sum::<f64>(),
                n + f.entries[i].data.len(),
            )
        });
        s / n.max(1) as f64
    });
    let eps = (cfg.eps * mean_h) as f32 + 1e-30;
    let mut out = ft.clone();
    let mut per_tensor = Vec::new();
    let total: usize = ranked.iter().map(|&i| ft.entries[i].data.len()).sum();
    let reset_frac = 1.0 - cfg.reserve;
    // Per entry: which indices to reset.
    let mut resets: Vec<Vec<usize>> = vec![Vec::new(); ft.entries.len()];
    match (cfg.score, cfg.scope) {
        (Score::Random, _) => {
            for &i in &ranked {
                let n = ft.entries[i].data.len();
                resets[i] = (0..n)
                    .filter(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 >= cfg.reserve)
                    .collect();
            }
        }
        (_, Scope::PerTensor) => {
            for &i in &ranked {
                let s = scores(cfg, &delta.entries[i], fisher.map(|f| &f.entries[i]), eps)?;
                let k = (reset_frac * s.len() as f64).round() as usize;
                resets[i] = top_k(&s, k);
            }
        }
        (_, Scope::Global) => {
            let mut all = Vec::with_capacity(total);
            let mut owner = Vec::with_capacity(ranked.len());
            for &i in &ranked {
                let s = scores(cfg, &delta.entries[i], fisher.map(|f| &f.entries[i]), eps)?;
                owner.push((i, all.len()));
                all.extend(s);
            }
            let k = (reset_frac * all.len() as f64).round() as usize;
            let mut picked = top_k(&all, k);
            picked.sort_unstable();
            let mut o = 0;
            for g in picked {
                while o + 1 < owner.len() && owner[o + 1].1 <= g {
                    o += 1;
                }
                let (i, start) = owner[o];
                resets[i].push(g - start);
            }
        }
    }
    let mut reset = 0;
    for (i, r) in resets.iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        for &j in r {
            out.entries[i].data[j] = pre.entries[i].data[j];
        }
        reset += r.len();
        per_tensor.push((ft.entries[i].path.clone(), r.len()));
    }
    Ok((
        out,
        PurifyStats {
            reset,
            total,
            per_tensor,
        },
    ))
}
