//! Fine-pruning (Liu et al., 2018) for BERT encoders: the feed-forward neurons least active
//! on clean data are removed (their input column, bias and output row set to zero, which
//! later fine-tuning cannot revive: both factors of their contribution get zero gradient),
//! then the model is fine-tuned on the clean set. Pruning is per layer, by mean activation.

use burn::prelude::*;
use plm::bert::Bert;
use plm::hooks::AttentionHooks;

use crate::Error;
use crate::params::Snapshot;
use trainer::host::ToHost;

/// Mean post-GELU activation of every FFN neuron of every layer over the real tokens of the
/// batches `(ids, mask)`.
pub fn mean_ffn_activations(
    bert: &Bert,
    batches: &[(Tensor<2, Int>, Tensor<2, Int>)],
) -> crate::Result<Vec<Vec<f32>>> {
    let hooks = AttentionHooks::fast();
    let n_layers = bert.n_layers();
    let mut sums: Vec<Vec<f64>> = vec![Vec::new(); n_layers];
    let mut count = 0f64;
    for (ids, mask) in batches {
        let [b, s] = ids.dims();
        let km = Bert::key_mask(mask.clone());
        let m = mask.clone().float().reshape([b, s, 1]);
        count += f64::from(m.clone().sum().into_scalar::<f32>());
        let mut h = bert.embed(ids.clone(), None);
        for (l, slot) in sums.iter_mut().enumerate() {
            let (out, _, _, ff) = bert.layer_forward_ffn(l, h, Some(km.clone()), &hooks);
            h = out;
            let [_, _, f] = ff.dims();
            let v = (ff * m.clone())
                .sum_dim(1)
                .sum_dim(0)
                .reshape([f])
                .to_f32s()?;
            if slot.is_empty() {
                slot.resize(f, 0.0);
            }
            for (a, x) in slot.iter_mut().zip(v) {
                *a += f64::from(x);
            }
        }
    }
    Ok(sums
        .into_iter()
        .map(|v| v.into_iter().map(|x| (x / count.max(1.0)) as f32).collect())
        .collect())
}

/// Zeroes the `fraction` least active neurons of each layer in a snapshot whose paths start
/// with `prefix` (e.g. `bert.` for a classifier). Returns the number pruned.
pub fn prune(
    snap: &mut Snapshot,
    prefix: &str,
    acts: &[Vec<f32>],
    fraction: f64,
) -> crate::Result<usize> {
    let mut pruned = 0;
    for (l, a) in acts.iter().enumerate() {
        let k = (fraction * a.len() as f64).round() as usize;
        let neg: Vec<f32> = a.iter().map(|x| -x).collect();
        let idx = crate::purify::top_k(&neg, k);
        let path = |s: &str| format!("{prefix}encoder.layer.{l}.{s}");
        let find = |snap: &Snapshot, p: &str| -> crate::Result<usize> {
            snap.entries
                .iter()
                .position(|e| e.path == p)
                .ok_or_else(|| Error::Mismatch {
                    path: p.to_string(),
                    reason: "not found".into(),
                })
        };
        let wi = find(snap, &path("intermediate.dense.weight"))?;
        let bi = find(snap, &path("intermediate.dense.bias"))?;
        let wo = find(snap, &path("output.dense.weight"))?;
        let f = a.len();
        let d = snap.entries[wi].data.len() / f; // [d, f] (burn: [in, out])
        for &j in &idx {
            for r in 0..d {
                snap.entries[wi].data[r * f + j] = 0.0;
            }
            snap.entries[bi].data[j] = 0.0;
            let dout = snap.entries[wo].shape[1];
            for c in 0..dout {
                snap.entries[wo].data[j * dout + c] = 0.0;
            }
        }
        pruned += idx.len();
    }
    Ok(pruned)
}
