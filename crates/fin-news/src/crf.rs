//! A linear-chain CRF over tag emissions: batched negative log-likelihood (forward algorithm)
//! and Viterbi decoding. The recursions run over positions with whole-batch tensor operations;
//! only Viterbi's back-tracking runs on the host, after one read of the back-pointers.

use burn::module::{Module, Param};
use burn::prelude::*;

use crate::{Error, Result};
use trainer::host::IntsToHost;

/// Transition scores of a CRF.
#[derive(Module, Debug)]
pub struct Crf {
    /// `transitions[i, j]`: score of tag `i` followed by tag `j`.
    pub transitions: Param<Tensor<2>>,
    /// Score of starting with a tag.
    pub start: Param<Tensor<1>>,
    /// Score of ending with a tag.
    pub end: Param<Tensor<1>>,
}

/// `log Σ exp` over `dim` (kept as size 1).
pub fn logsumexp<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let m = x.clone().max_dim(dim).detach();
    (x - m.clone()).exp().sum_dim(dim).log() + m
}

impl Crf {
    /// A CRF over `n_tags` tags, all scores zero.
    pub fn new(n_tags: usize, device: &Device) -> Self {
        Self {
            transitions: Param::from_tensor(Tensor::zeros([n_tags, n_tags], device)),
            start: Param::from_tensor(Tensor::zeros([n_tags], device)),
            end: Param::from_tensor(Tensor::zeros([n_tags], device)),
        }
    }

    fn n_tags(&self) -> usize {
        self.start.dims()[0]
    }

    /// Mean over the batch of `−log p(tags | emissions)`, and the number of real tokens.
    ///
    /// # Shapes
    /// `emissions` `[b, s, T]`, `tags` and `mask` `[b, s]` (1 = real; every sequence's first
    /// position must be real and real positions must come first).
    pub fn nll(
        &self,
        emissions: Tensor<3>,
        tags: Tensor<2, Int>,
        mask: Tensor<2, Int>,
    ) -> Tensor<1> {
        let [b, s, t] = emissions.dims();
        let m = mask.clone().float(); // [b, s]
        // gold path score
        let emit = emissions
            .clone()
            .gather(2, tags.clone().reshape([b, s, 1]))
            .reshape([b, s]);
        let mut score = (emit * m.clone()).sum_dim(1).reshape([b]);
        let first = tags.clone().slice(s![.., 0..1]).reshape([b]);
        score = score + self.start.val().select(0, first);
        if s > 1 {
            let prev = tags.clone().slice(s![.., 0..s - 1]);
            let next = tags.clone().slice(s![.., 1..s]);
            let flat = (prev.mul_scalar(t as i64) + next).reshape([b * (s - 1)]);
            let tr = self
                .transitions
                .val()
                .reshape([t * t])
                .select(0, flat)
                .reshape([b, s - 1]);
            score = score + (tr * m.clone().slice(s![.., 1..s])).sum_dim(1).reshape([b]);
        }
        let lengths = mask.clone().sum_dim(1).reshape([b, 1]); // [b, 1]
        let last = tags.gather(1, lengths.sub_scalar(1)).reshape([b]);
        score = score + self.end.val().select(0, last);
        // partition function
        let mut alpha = self.start.val().reshape([1, t])
            + emissions.clone().slice(s![.., 0..1, ..]).reshape([b, t]);
        let trans = self.transitions.val().reshape([1, t, t]);
        for i in 1..s {
            let e = emissions
                .clone()
                .slice(s![.., i..i + 1, ..])
                .reshape([b, t]);
            let nxt =
                logsumexp(alpha.clone().reshape([b, t, 1]) + trans.clone(), 1).reshape([b, t]) + e;
            let mi = m.clone().slice(s![.., i..i + 1]); // [b, 1]
            alpha = nxt * mi.clone() + alpha * (mi.neg().add_scalar(1.0));
        }
        let log_z = logsumexp(alpha + self.end.val().reshape([1, t]), 1).reshape([b]);
        (log_z - score).mean().reshape([1])
    }

    /// The best tag sequence of every row (its real positions only).
    pub fn decode(&self, emissions: Tensor<3>, mask: Tensor<2, Int>) -> Result<Vec<Vec<usize>>> {
        let [b, s, t] = emissions.dims();
        if t != self.n_tags() {
            return Err(Error::InvalidConfig(format!(
                "{t} emission columns for a CRF over {} tags",
                self.n_tags()
            )));
        }
        let mut score = self.start.val().reshape([1, t])
            + emissions.clone().slice(s![.., 0..1, ..]).reshape([b, t]);
        let trans = self.transitions.val().reshape([1, t, t]);
        let mut back = Vec::with_capacity(s.saturating_sub(1));
        for i in 1..s {
            let cand = score.clone().reshape([b, t, 1]) + trans.clone(); // [b, from, to]
            let best = cand.clone().max_dim(1).reshape([b, t]);
            back.push(cand.argmax(1).reshape([b, 1, t]));
            let e = emissions
                .clone()
                .slice(s![.., i..i + 1, ..])
                .reshape([b, t]);
            let mi = mask.clone().slice(s![.., i..i + 1]).float();
            score = (best + e) * mi.clone() + score * mi.neg().add_scalar(1.0);
        }
        let final_scores = trainer::host::f32s(score + self.end.val().reshape([1, t]))?;
        let lengths: Vec<i64> = mask.sum_dim(1).to_i64s()?;
        let bp: Vec<i64> = if back.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(back, 1).to_i64s()?
        };
        let mut out = Vec::with_capacity(b);
        for r in 0..b {
            let len = (lengths[r].max(1) as usize).min(s);
            let row = &final_scores[r * t..(r + 1) * t];
            let mut tag = (0..t)
                .max_by(|&x, &y| row[x].total_cmp(&row[y]))
                .unwrap_or(0);
            let mut path = vec![tag; len];
            for i in (1..len).rev() {
                // back-pointer stored at step i (index i - 1): best previous tag of `tag`
                tag = bp[(r * (s - 1) + (i - 1)) * t + tag] as usize;
                path[i - 1] = tag;
            }
            out.push(path);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Brute force over every path of a tiny CRF.
    fn brute(
        crf: &Crf,
        em: &[f32],
        s: usize,
        t: usize,
        len: usize,
    ) -> (f64, Vec<(Vec<usize>, f64)>) {
        let tr: Vec<f32> = crf
            .transitions
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let st: Vec<f32> = crf
            .start
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let en: Vec<f32> = crf
            .end
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let mut paths = Vec::new();
        let total = t.pow(len as u32);
        for code in 0..total {
            let p: Vec<usize> = (0..len).map(|i| (code / t.pow(i as u32)) % t).collect();
            let mut sc = f64::from(st[p[0]]) + f64::from(en[p[len - 1]]);
            for i in 0..len {
                sc += f64::from(em[i * t + p[i]]);
                if i > 0 {
                    sc += f64::from(tr[p[i - 1] * t + p[i]]);
                }
            }
            paths.push((p, sc));
        }
        let _ = s;
        let m = paths.iter().map(|x| x.1).fold(f64::MIN, f64::max);
        let z = m + paths.iter().map(|x| (x.1 - m).exp()).sum::<f64>().ln();
        (z, paths)
    }

    #[test]
    fn nll_and_viterbi_match_brute_force() {
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(5);
        let (b, s, t) = (2, 4, 3);
        let mut crf = Crf::new(t, &d);
        crf.transitions =
            Param::from_tensor(Tensor::random([t, t], Distribution::Normal(0.0, 1.0), &d));
        crf.start = Param::from_tensor(Tensor::random([t], Distribution::Normal(0.0, 1.0), &d));
        crf.end = Param::from_tensor(Tensor::random([t], Distribution::Normal(0.0, 1.0), &d));
        let em = Tensor::<3>::random([b, s, t], Distribution::Normal(0.0, 1.0), &d);
        let tags = Tensor::<2, Int>::from_data(
            TensorData::new(vec![0i64, 2, 1, 1, 2, 0, 1, 0], [b, s]),
            &d,
        );
        let mask = Tensor::<2, Int>::from_data(
            TensorData::new(vec![1i64, 1, 1, 1, 1, 1, 0, 0], [b, s]),
            &d,
        );
        let emv: Vec<f32> = em
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let nll: Vec<f32> = crf
            .nll(em.clone(), tags, mask.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let gold = [vec![0usize, 2, 1, 1], vec![2, 0]];
        let mut expect = 0.0;
        let decoded = crf.decode(em, mask).unwrap_or_else(|e| panic!("{e}"));
        for r in 0..b {
            let len = gold[r].len();
            let (z, paths) = brute(&crf, &emv[r * s * t..], s, t, len);
            let g = paths
                .iter()
                .find(|p| p.0 == gold[r])
                .map(|p| p.1)
                .unwrap_or(0.0);
            expect += (z - g) / b as f64;
            let best = paths
                .iter()
                .max_by(|x, y| x.1.total_cmp(&y.1))
                .map(|p| p.0.clone());
            assert_eq!(Some(decoded[r].clone()), best);
        }
        assert!(
            (f64::from(nll[0]) - expect).abs() < 1e-4,
            "{} vs {expect}",
            nll[0]
        );
    }
}
