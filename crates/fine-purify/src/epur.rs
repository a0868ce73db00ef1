//! E-PUR (embedding purification, from Fine-mixing): words whose embeddings drifted far while
//! being rare in the clean data look like triggers; their embeddings go back to the
//! pre-trained values. Score of word k: ‖δ_k‖₂ / ln(max(freq_k, c)), with freq_k its count in the
//! clean set.

use crate::Error;
use crate::params::Entry;

/// The `top_n` word ids by E-PUR score. `pre`/`ft` are the word-embedding tables
/// `[vocab, dim]`; `freq` the clean-set count of every word; `c` > 1 floors the frequency.
pub fn epur_words(
    pre: &Entry,
    ft: &Entry,
    freq: &[u64],
    c: f64,
    top_n: usize,
) -> crate::Result<Vec<usize>> {
    if pre.shape != ft.shape || pre.shape.len() != 2 || freq.len() != pre.shape[0] {
        return Err(Error::Mismatch {
            path: ft.path.clone(),
            reason: format!(
                "embedding shapes {:?} / {:?} with {} word counts",
                pre.shape,
                ft.shape,
                freq.len()
            ),
        });
    }
    if c <= 1.0 {
        return Err(Error::InvalidConfig(format!(
            "E-PUR frequency floor c = {c} (needs > 1)"
        )));
    }
    let (v, d) = (pre.shape[0], pre.shape[1]);
    let score: Vec<f32> = (0..v)
        .map(|k| {
            let norm: f64 = (0..d)
                .map(|j| f64::from(ft.data[k * d + j] - pre.data[k * d + j]).powi(2))
                .sum::<f64>()
                .sqrt();
            (norm / (freq[k] as f64).max(c).ln()) as f32
        })
        .collect();
    Ok(crate::purify::top_k(&score, top_n))
}

/// Resets rows `words` of `ft` to `pre`.
pub fn reset_rows(ft: &mut Entry, pre: &Entry, words: &[usize]) {
    let d = ft.shape.get(1).copied().unwrap_or(0);
    for &k in words {
        ft.data[k * d..(k + 1) * d].copy_from_slice(&pre.data[k * d..(k + 1) * d]);
    }
}
