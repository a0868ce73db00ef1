//! Seeded batched sampling with the KV cache, and the policy interface annotation uses.
//!
//! [`sample`] decodes `n` continuations of one prompt together: one batch-1 prefill, the cache
//! repeated `n` times, then one batched decode step per token. Rows that hit a stop token leave
//! the batch (the cache keeps only the live rows), so short continuations cost nothing once
//! done. Temperature, nucleus (top-p) filtering and the inverse-CDF draw run as tensor ops on
//! the device (softmax, descending sort, cumulative sums, one comparison); the caller's seeded
//! [`Rng`] gives one uniform number per row, and one token id per row is read back, so results
//! depend only on the seed.

use burn::prelude::*;
use plm::hooks::AttentionHooks;
use plm::llama::{KvCache, Llama};
use trainer::Rng;

use crate::tags::Tokenizer;
use crate::{Error, Result};

/// Decoding settings.
#[derive(Config, Debug, PartialEq)]
pub struct SampleConfig {
    /// Softmax temperature; 0 decodes greedily.
    #[config(default = 0.7)]
    pub temperature: f64,
    /// Nucleus mass kept (1 keeps everything).
    #[config(default = 0.95)]
    pub top_p: f64,
    /// New tokens at most.
    #[config(default = 256)]
    pub max_new_tokens: usize,
}

impl SampleConfig {
    /// Greedy decoding of at most `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self::new()
            .with_temperature(0.0)
            .with_max_new_tokens(max_new_tokens)
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidConfig(format!(
                "temperature {} must be >= 0 and top_p {} in (0, 1]",
                self.temperature, self.top_p
            )));
        }
        Ok(())
    }
}

/// One token per row of `logits` `[rows, vocab]`.
///
/// Everything but one uniform number per row stays on the device: softmax, the nucleus filter
/// (descending sort, cumulative mass), the cumulative sum of what is kept and the inverse-CDF
/// lookup (the count of cumulative masses below `u · total`); one token id per row is read back.
pub fn draw(logits: Tensor<2>, cfg: &SampleConfig, rng: &mut Rng) -> Result<Vec<u32>> {
    cfg.validate()?;
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    let ids = if cfg.temperature == 0.0 {
        logits.argmax(1)
    } else {
        let probs = burn::tensor::activation::softmax(logits / cfg.temperature, 1);
        let (probs, order) = if cfg.top_p < 1.0 {
            let (sorted, idx) = probs.sort_descending_with_indices(1);
            // Keep a token when the mass before it is below top_p (the first is always kept).
            let before = sorted.clone().cumsum(1) - sorted.clone();
            let keep = before.lower_elem(cfg.top_p);
            (sorted.mask_fill(keep.bool_not(), 0.0), Some(idx))
        } else {
            (probs, None)
        };
        let cum = probs.cumsum(1); // [rows, vocab]; the last column is each row's kept mass
        let total = cum.clone().slice(s![.., vocab - 1..vocab]);
        let u: Vec<f32> = (0..rows).map(|_| rng.next_f64() as f32).collect();
        let threshold = total * Tensor::<2>::from_data(TensorData::new(u, [rows, 1]), &device);
        // The first position whose cumulative mass reaches the threshold: it has mass of its
        // own (the one before it is below the threshold), so a filtered-out token is never
        // drawn. The clamp guards the last column against rounding.
        let pick = cum
            .lower(threshold.expand([rows, vocab]))
            .int()
            .sum_dim(1)
            .clamp_max(vocab as i64 - 1); // [rows, 1]
        match order {
            Some(idx) => idx.gather(1, pick),
            None => pick,
        }
    };
    Ok(trainer::host::i64s(ids)?
        .into_iter()
        .map(|x| x as u32)
        .collect())
}

/// `n` continuations of `prompt` (token ids, batch 1 prefill), each ending at its first stop
/// token (included) or after `max_new_tokens`.
pub fn sample(
    model: &Llama,
    prompt: &[u32],
    n: usize,
    cfg: &SampleConfig,
    stop: &[u32],
    rng: &mut Rng,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    cfg.validate()?;
    if prompt.is_empty() || n == 0 {
        return Err(Error::InvalidConfig(
            "sampling needs a non-empty prompt and n >= 1".into(),
        ));
    }
    let hooks = AttentionHooks::fast();
    let mut cache = KvCache::new();
    let x = Tensor::<2, Int>::from_data(
        TensorData::new(
            prompt.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, prompt.len()],
        ),
        device,
    );
    let logits = model.forward_with(x, &hooks, Some(&mut cache)).logits;
    let [_, s, v] = logits.dims();
    let mut last = logits
        .slice(s![.., s - 1..s, ..])
        .reshape([1, v])
        .expand([n, v]);
    let mut cache = cache.repeat_batch(n)?;
    let mut out = vec![Vec::new(); n];
    // Rows of the batch still decoding, as indices into `out`.
    let mut live: Vec<usize> = (0..n).collect();
    for _ in 0..cfg.max_new_tokens {
        let next = draw(last, cfg, rng)?;
        let mut keep = Vec::with_capacity(live.len());
        let mut feed = Vec::with_capacity(live.len());
        for (row, (&r, &t)) in live.iter().zip(&next).enumerate() {
            out[r].push(t);
            if !stop.contains(&t) {
                keep.push(row);
                feed.push(t as i64);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < live.len() {
            cache = cache.select_batch(&keep);
            live = keep.iter().map(|&k| live[k]).collect();
        }
        let x = Tensor::<2, Int>::from_data(TensorData::new(feed, [live.len(), 1]), device);
        let l = model.forward_with(x, &hooks, Some(&mut cache)).logits;
        last = l.reshape([live.len(), v]);
    }
    Ok(out)
}

/// Something that continues a text prefix: the completer of annotation and the generator of
/// verification.
pub trait Policy {
    /// `n` continuations of `prefix` (the continuation text only).
    fn complete(&mut self, prefix: &str, n: usize) -> Result<Vec<String>>;
}

/// A policy given by a function: tests and scripted baselines.
pub struct ScriptedPolicy<F: FnMut(&str, usize) -> Vec<String>>(pub F);

impl<F: FnMut(&str, usize) -> Vec<String>> Policy for ScriptedPolicy<F> {
    fn complete(&mut self, prefix: &str, n: usize) -> Result<Vec<String>> {
        Ok((self.0)(prefix, n))
    }
}

/// A plm Llama-style LM with its tokenizer as a sampling policy.
pub struct LmPolicy<'a> {
    /// The model (inference device).
    pub model: &'a Llama,
    /// Its tokenizer.
    pub tok: &'a dyn Tokenizer,
    /// Decoding settings.
    pub cfg: SampleConfig,
    /// Tokens that end a continuation (dropped from the returned text).
    pub stop: Vec<u32>,
    /// Continuations decoded together at most.
    pub max_batch: usize,
    /// The seeded generator.
    pub rng: Rng,
    /// Where tensors live.
    pub device: Device,
}

impl Policy for LmPolicy<'_> {
    fn complete(&mut self, prefix: &str, n: usize) -> Result<Vec<String>> {
        let prompt = self.tok.encode(prefix)?;
        let mut out = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let b = left.min(self.max_batch.max(1));
            for mut ids in sample(
                self.model,
                &prompt,
                b,
                &self.cfg,
                &self.stop,
                &mut self.rng,
                &self.device,
            )? {
                if ids.last().is_some_and(|t| self.stop.contains(t)) {
                    ids.pop();
                }
                out.push(self.tok.decode(&ids)?);
            }
            left -= b;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plm::llama::LlamaConfig;

    fn model(device: &Device) -> Llama {
        device.seed(3);
        LlamaConfig::new(32, 16, 2, 2, 1, 32)
            .init(device)
            .expect("model")
    }

    #[test]
    fn draws_respect_top_p_and_greedy() {
        let device = Device::flex();
        // Row 0 puts 0.9 on token 2: top_p 0.5 must always pick it.
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 5.0, 0.0, 1.0, 1.0, 1.0, 1.0], [2, 4]),
            &device,
        );
        let mut rng = Rng::seed_from(1);
        let cfg = SampleConfig::new().with_temperature(1.0).with_top_p(0.5);
        let mut seen = [0usize; 4];
        for _ in 0..200 {
            let t = draw(logits.clone(), &cfg, &mut rng).expect("draw");
            assert_eq!(t[0], 2);
            seen[t[1] as usize] += 1;
        }
        // Row 1 is uniform: top_p 0.5 keeps the first two of the (stable) order only.
        assert_eq!(seen.iter().filter(|&&c| c > 0).count(), 2, "{seen:?}");
        let g = draw(logits, &SampleConfig::greedy(1), &mut rng).expect("greedy");
        assert_eq!(g[0], 2);
        assert!(
            draw(
                Tensor::<2>::zeros([1, 4], &device),
                &SampleConfig::new().with_top_p(0.0),
                &mut rng
            )
            .is_err()
        );
    }

    #[test]
    fn draws_follow_the_softmax_probabilities() {
        let device = Device::flex();
        // p = (0.25, 0.75) in each of 4 rows: 4 × 1000 draws, the share of token 1 within
        // 0.75 ± 0.03 (more than 4 standard deviations of 0.0068).
        let row = [0.0f32, 3f32.ln()];
        let logits = Tensor::<2>::from_data(TensorData::new(row.repeat(4), [4, 2]), &device);
        let mut rng = Rng::seed_from(5);
        let mut ones = 0usize;
        for _ in 0..1000 {
            let t = draw(
                logits.clone(),
                &SampleConfig::new().with_temperature(1.0).with_top_p(1.0),
                &mut rng,
            )
            .expect("draw");
            assert_eq!(t.len(), 4);
            ones += t.iter().filter(|&&x| x == 1).count();
        }
        let share = ones as f64 / 4000.0;
        assert!((share - 0.75).abs() < 0.03, "{share}");
    }

    #[test]
    fn batched_sampling_matches_unbatched_greedy_and_is_seeded() {
        let _rng = testkit::device_rng_lock();
        let device = Device::flex();
        let m = model(&device);
        let prompt = [1u32, 5, 7];
        let greedy = sample(
            &m,
            &prompt,
            3,
            &SampleConfig::greedy(6),
            &[],
            &mut Rng::seed_from(0),
            &device,
        )
        .expect("sample");
        let reference = m.generate_greedy(&[1, 5, 7], 6, &device).expect("greedy");
        for row in &greedy {
            assert_eq!(row.iter().map(|&t| t as i64).collect::<Vec<_>>(), reference);
        }
        let cfg = SampleConfig::new()
            .with_temperature(1.0)
            .with_max_new_tokens(8);
        let a = sample(
            &m,
            &prompt,
            4,
            &cfg,
            &[0, 1],
            &mut Rng::seed_from(9),
            &device,
        )
        .expect("a");
        let b = sample(
            &m,
            &prompt,
            4,
            &cfg,
            &[0, 1],
            &mut Rng::seed_from(9),
            &device,
        )
        .expect("b");
        assert_eq!(a, b);
        for row in &a {
            // A row stops at its first stop token.
            let stop_at = row.iter().position(|t| *t <= 1);
            assert!(stop_at.is_none_or(|p| p + 1 == row.len()));
            assert!(row.len() <= 8);
        }
    }

    #[test]
    fn greedy_rows_end_at_the_first_stop_token() {
        let _rng = testkit::device_rng_lock();
        let device = Device::flex();
        let m = model(&device);
        let reference = m.generate_greedy(&[3, 4], 10, &device).expect("greedy");
        let stop = reference[4] as u32;
        let rows = sample(
            &m,
            &[3, 4],
            2,
            &SampleConfig::greedy(10),
            &[stop],
            &mut Rng::seed_from(0),
            &device,
        )
        .expect("sample");
        let first = reference
            .iter()
            .position(|&t| t as u32 == stop)
            .expect("stop occurs");
        for r in rows {
            assert_eq!(r.len(), first + 1);
        }
    }
}
