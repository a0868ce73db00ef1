//! Error diagnosis (§3.3): the label words' keys, seen through the principal directions of
//! the queries at the target position, predict which classes the model confuses.
//!
//! Keys k_i of the demonstrations' label words and queries q of N test inputs at one layer;
//! PCA (top-`n` components) of the centred queries; k̂_i = σ ⊙ (V k_i); the distance
//! ‖k̂_i − k̂_j‖ / max is the predicted separability of classes i and j (small = confusable).
//! The reference: for each class pair the AUC-ROC of p_i / (p_i + p_j) on the test inputs of
//! classes i and j (low = confused).

use serde::Serialize;

use crate::analysis::roc_auc;

/// Top-`k` principal directions of the rows of `x` (centred), by power iteration with
/// deflation on the covariance applied implicitly: (directions, singular values).
pub fn pca(x: &[Vec<f64>], k: usize, iters: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let n = x.len();
    let Some(d) = x.first().map(Vec::len) else {
        return (Vec::new(), Vec::new());
    };
    let mean: Vec<f64> = (0..d)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
        .collect();
    let xc: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(a, m)| a - m).collect())
        .collect();
    let mut comps: Vec<Vec<f64>> = Vec::new();
    let mut sing = Vec::new();
    for c in 0..k.min(d).min(n) {
        // Deterministic start, orthogonalised against the found directions each step.
        let mut v: Vec<f64> = (0..d)
            .map(|j| 1.0 + ((j * 7 + c * 13) % 11) as f64 / 11.0)
            .collect();
        let mut lambda = 0.0;
        for _ in 0..iters.max(1) {
            for u in &comps {
                let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                for (vi, ui) in v.iter_mut().zip(u) {
                    *vi -= dot * ui;
                }
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
            v.iter_mut().for_each(|a| *a /= norm);
            // w = Xcᵀ (Xc v)
            let proj: Vec<f64> = xc
                .iter()
                .map(|r| r.iter().zip(&v).map(|(a, b)| a * b).sum())
                .collect();
            let mut w = vec![0.0; d];
            for (r, p) in xc.iter().zip(&proj) {
                for (wi, ri) in w.iter_mut().zip(r) {
                    *wi += p * ri;
                }
            }
            lambda = w.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
            v = w;
        }
        for u in &comps {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            for (vi, ui) in v.iter_mut().zip(u) {
                *vi -= dot * ui;
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
        v.iter_mut().for_each(|a| *a /= norm);
        sing.push(lambda.max(0.0).sqrt());
        comps.push(v);
    }
    (comps, sing)
}

/// The diagnosis of one setting.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    /// Predicted separability `[C][C]` (normalised key distance; 1 on the diagonal).
    pub predicted: Vec<Vec<f64>>,
    /// Measured separability `[C][C]` (pairwise AUC; 1 on the diagonal; NaN when a class has
    /// no test input).
    pub actual: Vec<Vec<f64>>,
    /// Pearson correlation of the two over the class pairs.
    pub correlation: f64,
}

/// Runs the diagnosis: `keys[i]` the key of class i's label word, `queries` one per test
/// input, `probs[n][C]` the label-word probabilities and `gold[n]` the classes.
pub fn diagnose(
    keys: &[Vec<f64>],
    queries: &[Vec<f64>],
    probs: &[Vec<f64>],
    gold: &[usize],
    n_components: usize,
) -> Diagnosis {
    let c = keys.len();
    let (v, s) = pca(queries, n_components, 100);
    let proj: Vec<Vec<f64>> = keys
        .iter()
        .map(|k| {
            v.iter()
                .zip(&s)
                .map(|(u, sv)| sv * u.iter().zip(k).map(|(a, b)| a * b).sum::<f64>())
                .collect()
        })
        .collect();
    let mut dist = vec![vec![1.0; c]; c];
    let mut max = 0f64;
    for i in 0..c {
        for j in 0..c {
            if i != j {
                let d = proj[i]
                    .iter()
                    .zip(&proj[j])
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt();
                dist[i][j] = d;
                max = max.max(d);
            }
        }
    }
    for (i, row) in dist.iter_mut().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            if i != j {
                *x /= max.max(1e-300);
            }
        }
    }
    let mut actual = vec![vec![1.0; c]; c];
    for i in 0..c {
        for j in 0..c {
            if i == j {
                continue;
            }
            let idx: Vec<usize> = (0..gold.len())
                .filter(|&n| gold[n] == i || gold[n] == j)
                .collect();
            let sc: Vec<f64> = idx
                .iter()
                .map(|&n| probs[n][i] / (probs[n][i] + probs[n][j]).max(1e-30))
                .collect();
            let pos: Vec<bool> = idx.iter().map(|&n| gold[n] == i).collect();
            actual[i][j] = roc_auc(&sc, &pos).unwrap_or(f64::NAN);
        }
    }
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..c {
        for j in (i + 1)..c {
            let m = (actual[i][j] + actual[j][i]) / 2.0;
            if m.is_finite() {
                a.push(dist[i][j]);
                b.push(m);
            }
        }
    }
    Diagnosis {
        predicted: dist,
        actual,
        correlation: pearson(&a, &b),
    }
}

/// Pearson correlation (0 when undefined).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (ma, mb) = (
        a.iter().sum::<f64>() / n as f64,
        b.iter().sum::<f64>() / n as f64,
    );
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va <= 0.0 || vb <= 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}
