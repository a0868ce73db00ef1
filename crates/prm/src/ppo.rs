//! Step-level PPO (Math-Shepherd §3.4) and its outcome-reward baseline.
//!
//! The paper gives the reward placement (the PRM score at the end of every reasoning step
//! instead of one ORM score at the end of the response), the KL coefficient (0.04) and the
//! learning rates; everything else is an implementer's choice, made here as follows and exposed
//! in [`PpoConfig`]:
//!
//! - **Score → reward** ([`ScoreShape`]): by default `score - 0.5` (`Centered`), so a step judged
//!   bad is penalised and a long solution does not collect reward just by having more steps;
//!   `Raw` uses the probability itself.
//! - **Where**: the reward of step `i` is added to the token that ends it (the separator, or the
//!   last token); the outcome reward to the last token.
//! - **KL**: a per-token penalty `-kl_coef * (log π(a) - log π_ref(a))` on the sampled token
//!   (the k1 estimator), the reference being the policy before RL, frozen. The coefficient is
//!   fixed by default (the paper's 0.04); with [`PpoConfig::kl_target`] it adapts after each
//!   batch of rollouts (whose rewards used the current coefficient) toward the target mean
//!   summed KL per response, by [`PpoConfig::kl_rule`] ([`adapt_kl_coef`]), and never below
//!   [`PpoConfig::kl_coef_min`]: [`KlRule::Proportional`] (default; Ziegler et al. 2019,
//!   §2.2) multiplies it by `1 + gain · clip(KL / target − 1, −0.2, 0.2)`, so it moves at most
//!   `gain · 20 %` per batch; [`KlRule::Doubling`] (Schulman et al. 2017, §4) doubles it above
//!   1.5 × the target and halves it below target / 1.5. Measured on the synthetic
//!   `math-shepherd` run (lr 3e-5, target 1 nat): the doubling rule halves the coefficient
//!   while the policy is still near the reference, to 3 × 10⁻⁴ within ten batches, so the
//!   policy drifts before it catches up (greedy accuracy after ORM-PPO 36.7 % against 31.3 %
//!   fixed, step-PPO 16.0 % against 8.7 %, 50.7 % without RL); the proportional rule and the
//!   floor bound how fast and how far the coefficient can fall.
//! - **Advantages**: GAE with `gamma = lambda = 1` by default over the response tokens, the value
//!   after the last token being 0; whitened over the batch.
//! - **Value head**: a linear head on the policy's final normed hidden state, squared error to
//!   the GAE returns with weight `value_coef`; no value clipping. By default
//!   ([`PpoConfig::detach_value`]) the head reads that state detached, so the value loss trains
//!   the head alone and never moves the policy (a separate critic's behaviour at the cost of a
//!   head). Measured on the synthetic `math-shepherd` run at lr 3e-5: ORM-PPO 31.3 % greedy
//!   accuracy either way, step-PPO 13.3 % shared vs 8.7 % detached (both collapse from 50.7 %
//!   for another reason: see the README).
//! - **Updates**: each iteration samples `rollouts` responses (one per prompt drawn) and takes
//!   `ppo_epochs` optimizer steps on them (prompts are drawn with replacement and each gives
//!   `samples_per_prompt` responses decoded together), all rollouts in one batch, with the clipped ratio
//!   objective. Optimizer, learning rate and schedule come from the `trainer` config that runs
//!   the task ([`PpoTask`] is a [`trainer::Task`]); rollouts are buffered inside the task, so
//!   `Trainer::resume` does not reproduce an uninterrupted PPO run exactly.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use plm::llama::Llama;
use serde::{Deserialize, Serialize};
use trainer::{BatchCtx, Metrics, Rng, StepLoss, Task};

use crate::sample::{SampleConfig, sample};
use crate::tags::Tokenizer;
use crate::{Error, Result};

/// Where the reward comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RewardKind {
    /// A PRM score at the end of every step (step-by-step PPO).
    Step,
    /// One ORM score at the end of the response.
    Outcome,
}

/// How a score in `[0, 1]` becomes a reward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScoreShape {
    /// The score itself.
    Raw,
    /// `score - 0.5`.
    Centered,
}

impl ScoreShape {
    fn apply(self, s: f64) -> f64 {
        match self {
            Self::Raw => s,
            Self::Centered => s - 0.5,
        }
    }
}

/// How the KL coefficient follows its target ([`adapt_kl_coef`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum KlRule {
    /// Doubled above 1.5 × the target, halved below target / 1.5 (Schulman et al. 2017, §4).
    Doubling,
    /// Multiplied by `1 + gain · clip(KL / target − 1, −0.2, 0.2)` (Ziegler et al. 2019).
    Proportional {
        /// The controller's gain (Ziegler et al.: 0.1).
        gain: f64,
    },
}

/// PPO settings.
#[derive(Config, Debug)]
pub struct PpoConfig {
    /// Step rewards (PRM) or one outcome reward (ORM).
    #[config(default = "RewardKind::Step")]
    pub reward: RewardKind,
    /// Score to reward mapping.
    #[config(default = "ScoreShape::Centered")]
    pub shape: ScoreShape,
    /// Per-token KL penalty weight (the paper: 0.04); the starting value when `kl_target` is set.
    #[config(default = 0.04)]
    pub kl_coef: f64,
    /// Adapt `kl_coef` toward this mean summed KL per response (nats); `None` keeps it fixed.
    #[config(default = "None")]
    pub kl_target: Option<f64>,
    /// How `kl_coef` adapts when `kl_target` is set.
    #[config(default = "KlRule::Proportional { gain: 0.1 }")]
    pub kl_rule: KlRule,
    /// The adapted coefficient never falls below this.
    #[config(default = 0.0)]
    pub kl_coef_min: f64,
    /// Discount.
    #[config(default = 1.0)]
    pub gamma: f64,
    /// GAE λ.
    #[config(default = 1.0)]
    pub lambda: f64,
    /// Ratio clip ε.
    #[config(default = 0.2)]
    pub clip: f64,
    /// Weight of the value loss.
    #[config(default = 0.5)]
    pub value_coef: f64,
    /// Optimizer steps per batch of rollouts.
    #[config(default = 2)]
    pub ppo_epochs: usize,
    /// Responses sampled per iteration.
    #[config(default = 16)]
    pub rollouts: usize,
    /// Responses decoded together from each prompt drawn (one prefill, batched decoding).
    #[config(default = 4)]
    pub samples_per_prompt: usize,
    /// Whiten advantages over the batch.
    #[config(default = true)]
    pub whiten: bool,
    /// The value head reads the policy's hidden state detached (the value loss trains the head
    /// only); false shares the trunk, so the value loss also moves the policy.
    #[config(default = true)]
    pub detach_value: bool,
    /// Rollout decoding.
    #[config(default = "SampleConfig::new().with_temperature(1.0).with_top_p(1.0)")]
    pub sample: SampleConfig,
}

/// A policy LM with a value head.
#[derive(Module, Debug)]
pub struct ActorCritic {
    /// The policy.
    pub policy: Llama,
    /// The value head on the final normed hidden state.
    pub value: Linear,
}

impl ActorCritic {
    /// Wraps `policy` with a fresh value head.
    pub fn new(policy: Llama, device: &Device) -> Self {
        let d = policy.embed_tokens.weight.dims()[1];
        Self {
            policy,
            value: LinearConfig::new(d, 1).init(device),
        }
    }

    /// Log-probabilities of `targets` and values, both `[batch, seq]`: position `q` gives
    /// `log π(targets[q] | ids[..=q])` and `V(ids[..=q])`. With `detach_value` the values'
    /// gradient stops at the value head.
    pub fn logp_values(
        &self,
        ids: Tensor<2, Int>,
        targets: Tensor<2, Int>,
        detach_value: bool,
    ) -> (Tensor<2>, Tensor<2>) {
        let [b, s] = ids.dims();
        let out = self.policy.forward(ids);
        let h = out
            .hidden_states
            .last()
            .cloned()
            .unwrap_or_else(|| out.logits.clone());
        let mut h = self.policy.norm.forward(h);
        if detach_value {
            // After the final norm, whose weight is the policy's too.
            h = h.detach();
        }
        let v = self.value.forward(h).reshape([b, s]);
        (token_logp(out.logits, targets), v)
    }
}

/// `log softmax(logits)[targets]`, `[batch, seq]`.
pub fn token_logp(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, s, _] = logits.dims();
    log_softmax(logits, 2)
        .gather(2, targets.reshape([b, s, 1]))
        .reshape([b, s])
}

/// One sampled response with what the update needs.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// Prompt and response ids.
    pub ids: Vec<u32>,
    /// Prompt length.
    pub prompt_len: usize,
    /// Log-probability of each response token under the sampling policy.
    pub old_logp: Vec<f32>,
    /// Advantage per response token.
    pub adv: Vec<f32>,
    /// Return per response token.
    pub ret: Vec<f32>,
    /// Sum of the scores' rewards (no KL).
    pub score_reward: f64,
    /// Sum of the per-token KL estimates.
    pub kl: f64,
}

/// The steps of a response: `(text, index of the token that ends it)`; a step ends at a token
/// whose text holds `sep`, the last at the last token; blank steps are skipped.
pub fn split_steps(
    tok: &dyn Tokenizer,
    response: &[u32],
    sep: &str,
) -> Result<Vec<(String, usize)>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &t) in response.iter().enumerate() {
        let piece = tok.decode(&[t])?;
        if let Some(k) = piece.find(sep) {
            cur.push_str(&piece[..k]);
            if !cur.trim().is_empty() {
                out.push((cur.trim().to_string(), i));
            }
            cur = piece[k + sep.len()..].to_string();
        } else {
            cur.push_str(&piece);
        }
    }
    if !cur.trim().is_empty() && !response.is_empty() {
        out.push((cur.trim().to_string(), response.len() - 1));
    }
    Ok(out)
}

/// GAE over one response: `(advantages, returns)`; the value after the last token is 0.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut next_adv = 0.0;
    for t in (0..n).rev() {
        let next_v = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_v - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Scores a response's steps: `(prompt, steps) -> one score per step` for [`RewardKind::Step`],
/// one score for [`RewardKind::Outcome`].
pub type Scorer<'a> = Box<dyn FnMut(&str, &[String]) -> Result<Vec<f64>> + 'a>;

/// PPO as a trainer task over `ActorCritic`.
pub struct PpoTask<'a> {
    /// Settings.
    pub cfg: PpoConfig,
    /// Prompt texts (problems formatted for the policy).
    pub prompts: Vec<String>,
    /// The policy's tokenizer.
    pub tok: &'a dyn Tokenizer,
    /// The frozen reference policy (inference device).
    pub reference: Llama,
    /// The reward model as a scoring function.
    pub scorer: Scorer<'a>,
    /// Tokens that end a response.
    pub stop: Vec<u32>,
    /// Step separator in the policy's text.
    pub sep: String,
    /// The autodiff device the actor trains on.
    pub device: Device,
    buffer: Vec<Rollout>,
    uses: usize,
    stats: Metrics,
    kl_coef: f64,
}

/// The KL coefficient after a batch whose mean summed KL per response was `kl`, by `rule`
/// toward `target`, floored at `min`.
pub fn adapt_kl_coef(rule: KlRule, coef: f64, kl: f64, target: f64, min: f64) -> f64 {
    let next = match rule {
        KlRule::Doubling if kl > 1.5 * target => coef * 2.0,
        KlRule::Doubling if kl < target / 1.5 => coef / 2.0,
        KlRule::Doubling => coef,
        KlRule::Proportional { gain } => coef * (1.0 + gain * (kl / target - 1.0).clamp(-0.2, 0.2)),
    };
    next.max(min)
}

impl<'a> PpoTask<'a> {
    /// A task; rollouts are drawn from `prompts`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: PpoConfig,
        prompts: Vec<String>,
        tok: &'a dyn Tokenizer,
        reference: Llama,
        scorer: Scorer<'a>,
        stop: Vec<u32>,
        sep: &str,
        device: Device,
    ) -> Result<Self> {
        if prompts.is_empty() || cfg.rollouts == 0 || cfg.ppo_epochs == 0 {
            return Err(Error::InvalidConfig(
                "PPO needs prompts, rollouts >= 1 and ppo_epochs >= 1".into(),
            ));
        }
        // NaN fails both comparisons
        let gain_ok = match cfg.kl_rule {
            KlRule::Doubling => true,
            KlRule::Proportional { gain } => (0.0..=5.0).contains(&gain),
        };
        let kl_ok = cfg.kl_coef >= 0.0
            && cfg.kl_coef_min >= 0.0
            && gain_ok
            && cfg.kl_target.is_none_or(|t| t > 0.0);
        if !kl_ok {
            return Err(Error::InvalidConfig(
                "PPO needs kl_coef >= 0, kl_coef_min >= 0, a proportional gain in [0, 5] and a \
                 kl_target > 0 when one is set"
                    .into(),
            ));
        }
        Ok(Self {
            kl_coef: cfg.kl_coef,
            cfg,
            prompts,
            tok,
            reference,
            scorer,
            stop,
            sep: sep.to_string(),
            device,
            buffer: Vec::new(),
            uses: 0,
            stats: Metrics::new(),
        })
    }

    fn collect(&mut self, actor: &ActorCritic, rng: &mut Rng) -> Result<()> {
        let infer = actor.valid();
        let dev = self.device.clone().without_autodiff();
        let mut raw: Vec<(Vec<u32>, usize, Vec<f64>)> = Vec::with_capacity(self.cfg.rollouts);
        while raw.len() < self.cfg.rollouts {
            let p = self.prompts[rng.below(self.prompts.len())].clone();
            let prompt = self.tok.encode(&p)?;
            let n = self
                .cfg
                .samples_per_prompt
                .clamp(1, self.cfg.rollouts - raw.len());
            for resp in sample(
                &infer.policy,
                &prompt,
                n,
                &self.cfg.sample,
                &self.stop,
                rng,
                &dev,
            )? {
                let rewards = self.rewards(&p, &resp)?;
                let mut ids = prompt.clone();
                ids.extend_from_slice(&resp);
                raw.push((ids, prompt.len(), rewards));
            }
        }
        // One batched forward of the sampling policy and the reference.
        let keep: Vec<usize> = (0..raw.len())
            .filter(|&i| raw[i].0.len() > raw[i].1)
            .collect();
        if keep.is_empty() {
            return Err(Error::InvalidConfig("every rollout was empty".into()));
        }
        let seqs: Vec<(&[u32], usize)> = keep.iter().map(|&i| (&raw[i].0[..], raw[i].1)).collect();
        let (ids, tgt, _, l) = pack(&seqs, &dev);
        let (lp, values) = infer.logp_values(ids.clone(), tgt.clone(), true);
        let lp_ref = token_logp(self.reference.forward(ids).logits, tgt);
        let (lp, values, lp_ref) = (
            trainer::host::f32s(lp)?,
            trainer::host::f32s(values)?,
            trainer::host::f32s(lp_ref)?,
        );
        let mut rollouts = Vec::with_capacity(keep.len());
        for (row, &i) in keep.iter().enumerate() {
            let (ids, plen, score_rewards) = &raw[i];
            let t = ids.len() - plen;
            let at = |v: &[f32], k: usize| f64::from(v[row * l + plen - 1 + k]);
            let old: Vec<f64> = (0..t).map(|k| at(&lp, k)).collect();
            let refp: Vec<f64> = (0..t).map(|k| at(&lp_ref, k)).collect();
            let vals: Vec<f64> = (0..t).map(|k| at(&values, k)).collect();
            let kl: Vec<f64> = old.iter().zip(&refp).map(|(a, b)| a - b).collect();
            let rewards: Vec<f64> = score_rewards
                .iter()
                .zip(&kl)
                .map(|(r, k)| r - self.kl_coef * k)
                .collect();
            let (adv, ret) = gae(&rewards, &vals, self.cfg.gamma, self.cfg.lambda);
            rollouts.push(Rollout {
                ids: ids.clone(),
                prompt_len: *plen,
                old_logp: old.iter().map(|&x| x as f32).collect(),
                adv: adv.iter().map(|&x| x as f32).collect(),
                ret: ret.iter().map(|&x| x as f32).collect(),
                score_reward: score_rewards.iter().sum(),
                kl: kl.iter().sum(),
            });
        }
        if self.cfg.whiten {
            let all: Vec<f32> = rollouts
                .iter()
                .flat_map(|r| r.adv.iter().copied())
                .collect();
            let n = all.len().max(1) as f32;
            let mean = all.iter().sum::<f32>() / n;
            let std = (all.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / n).sqrt();
            for r in &mut rollouts {
                for a in &mut r.adv {
                    *a = (*a - mean) / (std + 1e-6);
                }
            }
        }
        let n = rollouts.len() as f64;
        let mean_kl = rollouts.iter().map(|r| r.kl).sum::<f64>() / n;
        self.stats = Metrics::from([
            (
                "score_reward".to_string(),
                rollouts.iter().map(|r| r.score_reward).sum::<f64>() / n,
            ),
            ("kl".to_string(), mean_kl),
            // the coefficient these rollouts' rewards used
            ("kl_coef".to_string(), self.kl_coef),
            (
                "response_tokens".to_string(),
                rollouts
                    .iter()
                    .map(|r| (r.ids.len() - r.prompt_len) as f64)
                    .sum::<f64>()
                    / n,
            ),
        ]);
        if let Some(target) = self.cfg.kl_target {
            self.kl_coef = adapt_kl_coef(
                self.cfg.kl_rule,
                self.kl_coef,
                mean_kl,
                target,
                self.cfg.kl_coef_min,
            );
        }
        self.buffer = rollouts;
        self.uses = 0;
        Ok(())
    }

    /// The score rewards of one response, per response token.
    fn rewards(&mut self, prompt: &str, resp: &[u32]) -> Result<Vec<f64>> {
        let body = match resp.last() {
            Some(t) if self.stop.contains(t) => &resp[..resp.len() - 1],
            _ => resp,
        };
        let mut rewards = vec![0.0; resp.len()];
        let steps = split_steps(self.tok, body, &self.sep)?;
        if steps.is_empty() || resp.is_empty() {
            return Ok(rewards);
        }
        let texts: Vec<String> = steps.iter().map(|(s, _)| s.clone()).collect();
        let scores = (self.scorer)(prompt, &texts)?;
        match self.cfg.reward {
            RewardKind::Step => {
                for ((_, end), s) in steps.iter().zip(&scores) {
                    rewards[*end] += self.cfg.shape.apply(*s);
                }
            }
            RewardKind::Outcome => {
                if let Some(s) = scores.last() {
                    rewards[resp.len() - 1] += self.cfg.shape.apply(*s);
                }
            }
        }
        Ok(rewards)
    }

    /// The clipped PPO loss of the buffered rollouts under `actor`.
    fn ppo_loss(&self, actor: &ActorCritic) -> Result<Tensor<1>> {
        let seqs: Vec<(&[u32], usize)> = self
            .buffer
            .iter()
            .map(|r| (&r.ids[..], r.prompt_len))
            .collect();
        let (ids, tgt, mask, l) = pack(&seqs, &self.device);
        let b = seqs.len();
        let mut old = vec![0f32; b * l];
        let mut adv = vec![0f32; b * l];
        let mut ret = vec![0f32; b * l];
        for (row, r) in self.buffer.iter().enumerate() {
            for k in 0..r.old_logp.len() {
                let q = row * l + r.prompt_len - 1 + k;
                old[q] = r.old_logp[k];
                adv[q] = r.adv[k];
                ret[q] = r.ret[k];
            }
        }
        let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [b, l]), &self.device);
        let (old, adv, ret) = (t(old), t(adv), t(ret));
        let (lp, values) = actor.logp_values(ids, tgt, self.cfg.detach_value);
        let ratio = (lp - old).exp();
        let clipped = ratio
            .clone()
            .clamp(1.0 - self.cfg.clip, 1.0 + self.cfg.clip);
        let pg = (ratio * adv.clone()).min_pair(clipped * adv).neg();
        let vloss = (values - ret).powf_scalar(2.0);
        let n = mask.clone().sum().clamp_min(1.0);
        let loss = (pg + vloss * self.cfg.value_coef) * mask;
        Ok(loss.sum() / n)
    }
}

/// Right-padded ids, next-token targets and the mask of response-predicting positions
/// (`[batch, seq]` each) and the padded length.
fn pack(
    seqs: &[(&[u32], usize)],
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>, usize) {
    let l = seqs.iter().map(|(s, _)| s.len()).max().unwrap_or(1);
    let b = seqs.len();
    let mut ids = vec![0i64; b * l];
    let mut tgt = vec![0i64; b * l];
    let mut mask = vec![0f32; b * l];
    for (row, (s, plen)) in seqs.iter().enumerate() {
        for (j, &t) in s.iter().enumerate() {
            ids[row * l + j] = i64::from(t);
            if j > 0 {
                tgt[row * l + j - 1] = i64::from(t);
            }
            if j >= *plen {
                mask[row * l + j - 1] = 1.0;
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [b, l]), device),
        Tensor::from_data(TensorData::new(tgt, [b, l]), device),
        Tensor::from_data(TensorData::new(mask, [b, l]), device),
        l,
    )
}

impl Task<ActorCritic> for PpoTask<'_> {
    fn loss(&mut self, m: &ActorCritic, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        if self.buffer.is_empty() || self.uses >= self.cfg.ppo_epochs {
            self.collect(m, ctx.rng)?;
        }
        self.uses += 1;
        Ok(StepLoss {
            loss: self.ppo_loss(m)?,
            extra: self.stats.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plm::llama::LlamaConfig;
    use textdata::ByteTokenizer;

    #[test]
    fn gae_with_unit_gamma_lambda_is_reward_to_go_minus_value() {
        let r = [0.0, 1.0, -0.5, 2.0];
        let v = [0.3, -0.2, 0.1, 0.5];
        let (adv, ret) = gae(&r, &v, 1.0, 1.0);
        for t in 0..4 {
            let togo: f64 = r[t..].iter().sum();
            assert!((adv[t] - (togo - v[t])).abs() < 1e-12);
            assert!((ret[t] - togo).abs() < 1e-12);
        }
        // λ = 0: one-step TD errors.
        let (adv0, _) = gae(&r, &v, 0.9, 0.0);
        assert!((adv0[0] - (0.0 + 0.9 * -0.2 - 0.3)).abs() < 1e-12);
        assert!((adv0[3] - (2.0 - 0.5)).abs() < 1e-12);
    }

    #[test]
    fn the_doubling_rule_adapts_outside_the_band_only() {
        let d = KlRule::Doubling;
        assert_eq!(adapt_kl_coef(d, 0.04, 3.1, 2.0, 0.0), 0.08);
        assert_eq!(adapt_kl_coef(d, 0.04, 1.3, 2.0, 0.0), 0.02);
        for kl in [1.34, 2.0, 2.99] {
            assert_eq!(adapt_kl_coef(d, 0.04, kl, 2.0, 0.0), 0.04);
        }
        // the floor
        assert_eq!(adapt_kl_coef(d, 0.04, 0.1, 2.0, 0.03), 0.03);
    }

    #[test]
    fn the_proportional_rule_moves_by_the_clipped_relative_error() {
        let p = KlRule::Proportional { gain: 0.1 };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // 10 % above the target: × (1 + 0.1 · 0.1)
        assert!(close(adapt_kl_coef(p, 0.04, 2.2, 2.0, 0.0), 0.04 * 1.01));
        // far above or far below: the error is clipped at ±0.2
        assert!(close(adapt_kl_coef(p, 0.04, 50.0, 2.0, 0.0), 0.04 * 1.02));
        assert!(close(adapt_kl_coef(p, 0.04, 0.0, 2.0, 0.0), 0.04 * 0.98));
        assert!(close(adapt_kl_coef(p, 0.04, 2.0, 2.0, 0.0), 0.04));
        assert_eq!(adapt_kl_coef(p, 0.04, 0.0, 2.0, 0.0395), 0.0395);
        // a hundred batches at zero KL: 0.98^100 ≈ 0.13 of the start, not 2^-100
        let mut c = 0.04;
        for _ in 0..100 {
            c = adapt_kl_coef(p, c, 0.0, 1.0, 0.0);
        }
        assert!(c > 0.04 * 0.13 && c < 0.04 * 0.14, "{c}");
    }

    #[test]
    fn a_kl_target_changes_the_coefficient_between_rollout_batches() {
        let _rng = testkit::device_rng_lock();
        // A target far above any KL reached: every batch halves the coefficient, and the
        // rewards of each batch used the value before its own update.
        let ad = Device::flex().autodiff();
        let infer = ad.clone().without_autodiff();
        let cfg = PpoConfig::new()
            .with_kl_target(Some(1e9))
            .with_kl_rule(KlRule::Doubling)
            .with_ppo_epochs(1)
            .with_rollouts(2)
            .with_sample(SampleConfig::new().with_max_new_tokens(3));
        let scorer: Scorer<'_> = Box::new(|_: &str, steps: &[String]| Ok(vec![0.5; steps.len()]));
        let mut task = byte_task(cfg, scorer, vec![], &infer, &ad).expect("task");
        let out = trainer::Trainer::new(
            trainer::TrainerConfig::new(3).with_lr(1e-3).with_seed(1),
            &ad,
        )
        .fit(ActorCritic::new(setup(&ad), &ad), &mut task)
        .expect("ppo");
        let coefs: Vec<f64> = out
            .records
            .iter()
            .filter_map(|r| match r {
                trainer::Record::Train { extra, .. } => extra.get("kl_coef").copied(),
                _ => None,
            })
            .collect();
        assert_eq!(coefs, vec![0.04, 0.02, 0.01]);
    }

    #[test]
    fn bad_kl_settings_are_refused() {
        let infer = Device::flex();
        for cfg in [
            PpoConfig::new().with_kl_coef(-0.1),
            PpoConfig::new().with_kl_coef(f64::NAN),
            PpoConfig::new().with_kl_target(Some(0.0)),
            PpoConfig::new().with_kl_coef_min(-1.0),
            PpoConfig::new().with_kl_rule(KlRule::Proportional { gain: f64::NAN }),
        ] {
            let scorer: Scorer<'_> = Box::new(|_: &str, _: &[String]| Ok(vec![]));
            let r = byte_task(cfg, scorer, vec![], &infer, &infer);
            assert!(matches!(r, Err(Error::InvalidConfig(_))));
        }
    }

    #[test]
    fn steps_end_at_their_separator_token() {
        let resp = ByteTokenizer.encode("Step 1: 2+3=5\n\nThe answer is: 5");
        let s = split_steps(&ByteTokenizer, &resp, "\n").expect("split");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "Step 1: 2+3=5");
        assert_eq!(resp[s[0].1], u32::from(b'\n'));
        assert_eq!(s[1], ("The answer is: 5".to_string(), resp.len() - 1));
        assert!(
            split_steps(&ByteTokenizer, &[], "\n")
                .expect("empty")
                .is_empty()
        );
    }

    fn setup(device: &Device) -> Llama {
        device.seed(11);
        LlamaConfig::new(256, 16, 1, 2, 1, 32)
            .with_max_seq_len(128)
            .init(device)
            .expect("lm")
    }

    /// A task on the prompt "Q:" with the byte tokenizer, `\n` as the step separator and the
    /// reference policy on `reference_on`.
    fn byte_task<'a>(
        cfg: PpoConfig,
        scorer: Scorer<'a>,
        stop: Vec<u32>,
        reference_on: &Device,
        device: &Device,
    ) -> Result<PpoTask<'a>> {
        PpoTask::new(
            cfg,
            vec!["Q:".into()],
            &ByteTokenizer,
            setup(reference_on),
            scorer,
            stop,
            "\n",
            device.clone(),
        )
    }

    #[test]
    fn a_detached_value_loss_leaves_the_policy_alone() {
        let _rng = testkit::device_rng_lock();
        let ad = Device::flex().autodiff();
        let actor = ActorCritic::new(setup(&ad), &ad);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![81i64, 58, 50], [1, 3]), &ad);
        let tgt = Tensor::<2, Int>::from_data(TensorData::new(vec![58i64, 50, 10], [1, 3]), &ad);
        let grad_norm = |detach: bool| -> (f32, f32, f32) {
            let (_, v) = actor.logp_values(ids.clone(), tgt.clone(), detach);
            let grads = v.powf_scalar(2.0).sum().backward();
            let norm = |g: Option<Tensor<2>>| g.map_or(0.0, |g| g.abs().sum().into_scalar());
            (
                norm(actor.policy.embed_tokens.weight.grad(&grads)),
                actor
                    .policy
                    .norm
                    .gamma
                    .grad(&grads)
                    .map_or(0.0, |g| g.abs().sum().into_scalar()),
                norm(actor.value.weight.grad(&grads)),
            )
        };
        let (embed, norm, head) = grad_norm(true);
        assert_eq!((embed, norm), (0.0, 0.0));
        assert!(head > 0.0);
        let (embed, norm, head) = grad_norm(false);
        assert!(embed > 0.0 && norm > 0.0 && head > 0.0);
    }

    #[test]
    fn ppo_moves_the_policy_toward_rewarded_steps() {
        let _rng = testkit::device_rng_lock();
        // Reward 1 for a step that starts with a lowercase letter (about 1 draw in 10 at
        // first). With the KL term off, PPO must raise the probability of such a first token.
        let ad = Device::flex().autodiff();
        let infer = ad.clone().without_autodiff();
        let actor = ActorCritic::new(setup(&ad), &ad);
        let cfg = PpoConfig::new()
            .with_shape(ScoreShape::Raw)
            .with_kl_coef(0.0)
            .with_rollouts(24)
            .with_sample(
                SampleConfig::new()
                    .with_temperature(1.0)
                    .with_top_p(1.0)
                    .with_max_new_tokens(3),
            );
        let scorer: Scorer<'_> = Box::new(|_: &str, steps: &[String]| {
            Ok(steps
                .iter()
                .map(|s| f64::from(u8::from(s.starts_with(|c: char| c.is_ascii_lowercase()))))
                .collect())
        });
        let mut task = byte_task(cfg, scorer, vec![u32::from(b'\n')], &infer, &ad).expect("task");
        let p_lower = |m: &ActorCritic| -> f32 {
            let x = Tensor::<2, Int>::from_data(TensorData::new(vec![81i64, 58], [1, 2]), &infer);
            let lp = log_softmax(m.valid().policy.forward(x).logits, 2);
            lp.slice(s![0..1, 1..2, 97..123]).exp().sum().into_scalar()
        };
        let before = p_lower(&actor);
        let out = trainer::Trainer::new(
            trainer::TrainerConfig::new(40).with_lr(1e-2).with_seed(1),
            &ad,
        )
        .fit(actor, &mut task)
        .expect("ppo");
        let after = p_lower(&out.model);
        assert!(after > before * 2.0, "p(lowercase) {before} -> {after}");
    }
}
