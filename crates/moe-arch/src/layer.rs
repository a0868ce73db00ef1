//! The DeepSeekMoE layer: fine-grained routed experts plus always-active shared experts.
//!
//! `h = Σ_{shared} FFN(x) + Σ_{i ∈ TopK'} g_i FFN_i(x)` with `g = softmax(x Wᵀ)` over the routed
//! experts (DeepSeekMoE §3, eq. 9–11); the residual is added by the caller. Parameter names follow
//! HF's `DeepseekMoE` (`gate.weight` `[n_routed, d_model]`, `experts.{j}.{gate,up,down}_proj`,
//! `shared_experts.{gate,up,down}_proj` — the shared experts fused into one MLP).
//!
//! Two execution paths compute the same function:
//! - [`MoeLayer::forward`] (grouped dispatch): the `tokens × top_k` assignments are sorted by
//!   expert on the device, each expert runs once on its contiguous block of tokens, and the
//!   weighted results are scatter-added back. Only the per-expert counts (`n_routed` integers)
//!   are read back to the host, to cut the blocks.
//! - [`MoeLayer::forward_dense`] (reference): every expert on every token, weighted by a dense
//!   gate matrix that is zero outside each token's top-k. Used by the tests.

use burn::module::Module;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::{sigmoid, softmax};
use plm::layers::{Init, to_dtype};
use plm::llama::SwiGlu;

use crate::Error;
use trainer::host::{IntsToHost, ToHost};

/// How routed experts are chosen.
#[derive(Config, Debug, PartialEq)]
pub enum TopkMethod {
    /// Top-k over all routed experts.
    Greedy,
    /// DeepSeek-V2's device-limited routing: rank `n_group` equal groups of experts by their best
    /// score, keep the best `topk_group` groups, take the top-k inside them.
    GroupLimited {
        /// Number of expert groups.
        n_group: usize,
        /// Groups a token may use.
        topk_group: usize,
    },
    /// DeepSeek-V3's `noaux_tc`: experts are chosen by their score plus a per-expert bias
    /// (`e_score_correction_bias`, moved by auxiliary-loss-free balancing, see
    /// [`MoeLayer::update_score_bias`]); with `n_group > 1`, groups are ranked by the sum of their
    /// two best biased scores and the best `topk_group` kept. The weights come from the unbiased
    /// scores (renormalised when `norm_topk_prob`), always times `routed_scaling_factor`.
    NoAuxTc {
        /// Number of expert groups (1: no group limit).
        n_group: usize,
        /// Groups a token may use.
        topk_group: usize,
    },
}

/// How router logits become expert scores.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum Scoring {
    /// Softmax over the routed experts (DeepSeekMoE, DeepSeek-V2).
    Softmax,
    /// An independent sigmoid per expert (DeepSeek-V3).
    Sigmoid,
}

/// How [`MoeLayer::forward`] runs the routed experts on the tokens sent to them. Both give the
/// same result (a test checks it against the dense reference); they differ in speed.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum Dispatch {
    /// Sort the token-expert assignments by expert and run each expert once on its contiguous
    /// block (HF's `moe_infer`): exact work, but three matrix products per expert, so
    /// `3 · n_experts` small kernels. The faster choice on a CPU.
    PerExpert,
    /// Scatter the sorted assignments into a zero-padded `[n_experts, capacity, d_model]` buffer
    /// (capacity = the largest expert load of the batch, so no token is dropped) and run all
    /// experts at once with three batched matrix products over stacked expert weights. It
    /// computes `n_experts · capacity` rows instead of `tokens · top_k` (about 1.2–1.5× with a
    /// balanced router) but launches a constant number of kernels: the faster choice on a GPU.
    Padded,
}

/// Configuration of a [`MoeLayer`] (HF names in comments).
#[derive(Config, Debug)]
pub struct MoeConfig {
    /// Hidden size (`hidden_size`).
    pub d_model: usize,
    /// Routed experts N' (`n_routed_experts`).
    pub n_experts: usize,
    /// Routed experts per token K' (`num_experts_per_tok`).
    pub top_k: usize,
    /// Width of one expert (`moe_intermediate_size`).
    pub d_ff: usize,
    /// Shared experts K_s (`n_shared_experts`), fused into one MLP of width `n_shared · d_ff`.
    #[config(default = 0)]
    pub n_shared: usize,
    /// Renormalise the top-k weights to sum to 1 (`norm_topk_prob`); otherwise they are the raw
    /// softmax probabilities times `routed_scaling_factor`. Default false (DeepSeekMoE).
    #[config(default = false)]
    pub norm_topk_prob: bool,
    /// Multiplier of the routed weights when they are not renormalised. Default 1.
    #[config(default = 1.0)]
    pub routed_scaling_factor: f64,
    /// Expert selection. Default greedy.
    #[config(default = "TopkMethod::Greedy")]
    pub topk_method: TopkMethod,
    /// Expert-level balance factor α1 (`aux_loss_alpha`). Default 0.001 (16B).
    #[config(default = 0.001)]
    pub aux_alpha: f64,
    /// Compute the expert-level loss per sequence and average (`seq_aux`). Default true.
    #[config(default = true)]
    pub seq_aux: bool,
    /// Device-level balance factor α2 (0 disables it).
    #[config(default = 0.0)]
    pub device_alpha: f64,
    /// Devices D the routed experts are split over for the device-level loss.
    #[config(default = 1)]
    pub n_devices: usize,
    /// Count padding positions in the balance losses, as HF's gate does (it sees no mask).
    /// Default false: padding is excluded.
    #[config(default = false)]
    pub include_padding: bool,
    /// Normal initialisation std. Default 0.02.
    #[config(default = 0.02)]
    pub initializer_range: f64,
    /// How the routed experts are run (same result, different speed). Default per expert.
    #[config(default = "Dispatch::PerExpert")]
    pub dispatch: Dispatch,
    /// Router scores from the logits. Default softmax.
    #[config(default = "Scoring::Softmax")]
    pub scoring: Scoring,
}

/// The MoE feed-forward layer.
#[derive(Module, Debug)]
pub struct MoeLayer {
    /// Router: `d_model → n_experts`, no bias (HF `gate.weight`).
    pub gate: burn::nn::Linear,
    /// Routed experts.
    pub experts: Vec<SwiGlu>,
    /// The shared experts as one fused MLP.
    pub shared_experts: Option<SwiGlu>,
    /// Per-expert bias added to the scores when choosing experts, never to the weights
    /// (DeepSeek-V3's `gate.e_score_correction_bias`; [`TopkMethod::NoAuxTc`] only). Not
    /// trained by gradients: [`MoeLayer::update_score_bias`] moves it.
    pub score_bias: Option<Param<Tensor<1>>>,
    top_k: usize,
    sigmoid: bool,
    norm_topk_prob: bool,
    routed_scaling_factor: f64,
    n_group: usize,
    topk_group: usize,
    aux_alpha: f64,
    seq_aux: bool,
    device_alpha: f64,
    n_devices: usize,
    include_padding: bool,
    mask_top: usize,
    /// [`Dispatch::Padded`] when true.
    padded: bool,
}

/// What the layer returns.
#[derive(Debug)]
pub struct MoeOutput {
    /// `[batch, seq, d_model]` (without the residual).
    pub output: Tensor<3>,
    /// Expert-level plus device-level balance loss (scalar), to add to the LM loss.
    pub aux_loss: Tensor<1>,
    /// The expert-level part.
    pub expert_loss: Tensor<1>,
    /// The device-level part.
    pub device_loss: Tensor<1>,
    /// Chosen routed experts `[tokens, top_k]` (tokens = batch · seq, row-major).
    pub topk_idx: Tensor<2, Int>,
    /// Their weights `[tokens, top_k]` (after normalisation or scaling).
    pub topk_weight: Tensor<2>,
    /// Router probabilities `[tokens, n_experts]`.
    pub probs: Tensor<2>,
}

/// `mlp(x)` computed in the dtype of the MLP's weights and returned in `x`'s: an expert made
/// trainable in f32 beside a base held in bf16 (ESFT on a frozen bf16 checkpoint) takes and
/// gives the base's activations. No cast when the dtypes agree.
fn run_mlp(mlp: &SwiGlu, x: Tensor<3>) -> Tensor<3> {
    let dtype = x.dtype();
    let wd = mlp.gate_proj.weight.val().dtype();
    to_dtype(mlp.forward(to_dtype(x, wd)), dtype)
}

fn swiglu(init: &Init<'_>, d: usize, d_ff: usize) -> SwiGlu {
    SwiGlu {
        gate_proj: init.linear(d, d_ff, false),
        up_proj: init.linear(d, d_ff, false),
        down_proj: init.linear(d_ff, d, false),
    }
}

impl MoeConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.n_experts == 0 || self.top_k == 0 || self.top_k > self.n_experts {
            return bad(format!(
                "top_k {} must be in 1..={} (n_experts)",
                self.top_k, self.n_experts
            ));
        }
        if self.n_devices == 0 || !self.n_experts.is_multiple_of(self.n_devices) {
            return bad(format!(
                "n_experts {} must split evenly over n_devices {}",
                self.n_experts, self.n_devices
            ));
        }
        if let TopkMethod::GroupLimited {
            n_group,
            topk_group,
        }
        | TopkMethod::NoAuxTc {
            n_group,
            topk_group,
        } = self.topk_method
        {
            if n_group == 0 || !self.n_experts.is_multiple_of(n_group) {
                return bad(format!(
                    "n_group {n_group} must divide n_experts {}",
                    self.n_experts
                ));
            }
            if topk_group == 0 || topk_group > n_group {
                return bad(format!("topk_group {topk_group} must be in 1..={n_group}"));
            }
            if matches!(self.topk_method, TopkMethod::NoAuxTc { .. })
                && n_group > 1
                && self.n_experts / n_group < 2
            {
                return bad(format!(
                    "noaux_tc ranks groups by their two best experts: {} per group is too few",
                    self.n_experts / n_group
                ));
            }
            if topk_group * (self.n_experts / n_group) < self.top_k {
                return bad(format!(
                    "{topk_group} groups of {} experts cannot hold top_k {}",
                    self.n_experts / n_group,
                    self.top_k
                ));
            }
        }
        Ok(())
    }

    /// Builds the layer with random weights.
    pub fn init(&self, device: &Device) -> crate::Result<MoeLayer> {
        self.validate()?;
        let init = Init {
            std: self.initializer_range,
            device,
        };
        let (n_group, topk_group) = match self.topk_method {
            TopkMethod::Greedy => (1, 1),
            TopkMethod::GroupLimited {
                n_group,
                topk_group,
            }
            | TopkMethod::NoAuxTc {
                n_group,
                topk_group,
            } => (n_group, topk_group),
        };
        let noaux = matches!(self.topk_method, TopkMethod::NoAuxTc { .. });
        Ok(MoeLayer {
            gate: init.linear(self.d_model, self.n_experts, false),
            experts: (0..self.n_experts)
                .map(|_| swiglu(&init, self.d_model, self.d_ff))
                .collect(),
            shared_experts: (self.n_shared > 0)
                .then(|| swiglu(&init, self.d_model, self.d_ff * self.n_shared)),
            score_bias: noaux.then(|| {
                Param::from_tensor(Tensor::zeros([self.n_experts], device)).set_require_grad(false)
            }),
            top_k: self.top_k,
            sigmoid: self.scoring == Scoring::Sigmoid,
            norm_topk_prob: self.norm_topk_prob,
            routed_scaling_factor: self.routed_scaling_factor,
            n_group,
            topk_group,
            aux_alpha: self.aux_alpha,
            seq_aux: self.seq_aux,
            device_alpha: self.device_alpha,
            n_devices: self.n_devices,
            include_padding: self.include_padding,
            mask_top: 0,
            padded: self.dispatch == Dispatch::Padded,
        })
    }
}

/// A fixed random map from token id to expert, for [`MoeLayer::forward_hash`].
#[derive(Clone, Debug, PartialEq)]
pub struct HashRouter {
    table: Vec<i64>,
    n_experts: usize,
}

impl HashRouter {
    /// Maps each of `vocab` ids to one of `n_experts`, balanced (every expert gets ⌊vocab/N⌋ or
    /// ⌈vocab/N⌉ ids) and shuffled by `seed`.
    pub fn new(vocab: usize, n_experts: usize, seed: u64) -> Self {
        let mut table: Vec<i64> = (0..vocab).map(|i| (i % n_experts.max(1)) as i64).collect();
        trainer::Rng::seed_from(seed).shuffle(&mut table);
        Self { table, n_experts }
    }

    /// The expert of token `id`.
    pub fn expert(&self, id: usize) -> Option<usize> {
        self.table.get(id).map(|&e| e as usize)
    }

    /// Experts mapped to.
    pub fn n_experts(&self) -> usize {
        self.n_experts
    }
}

/// The routing decision for a flat batch of tokens.
struct Routing {
    probs: Tensor<2>,    // [n, E]
    idx: Tensor<2, Int>, // [n, k]
    weight: Tensor<2>,   // [n, k]
    selected: Tensor<2>, // [n, E], 1 where chosen
}

impl MoeLayer {
    /// Number of routed experts.
    pub fn n_experts(&self) -> usize {
        self.experts.len()
    }

    /// Routed experts per token.
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// Chooses how the routed experts are run (for a layer loaded from a checkpoint, whose
    /// config came from the checkpoint's own file).
    pub fn with_dispatch(mut self, dispatch: Dispatch) -> Self {
        self.set_dispatch(dispatch);
        self
    }

    /// [`MoeLayer::with_dispatch`] in place.
    pub fn set_dispatch(&mut self, dispatch: Dispatch) {
        self.padded = dispatch == Dispatch::Padded;
    }

    /// The same layer choosing `k` routed experts per token (DeepSeekMoE §4.5 activates one
    /// more when it switches the shared expert off). Errors when `k` is 0 or leaves fewer than
    /// `k` experts after [`MoeLayer::with_masked_top`]'s masking.
    pub fn with_top_k(mut self, k: usize) -> crate::Result<Self> {
        let e = self.n_experts();
        let in_groups = if self.n_group > 1 {
            self.topk_group * (e / self.n_group)
        } else {
            e
        };
        if k == 0 || k + self.mask_top > e || k > in_groups {
            return Err(Error::InvalidConfig(format!(
                "top_k {k} with {} masked needs 1..={} routed experts ({in_groups} in the groups a token may use)",
                self.mask_top, e
            )));
        }
        self.top_k = k;
        Ok(self)
    }

    /// The same layer without its shared experts (DeepSeekMoE §4.5's test of what they hold).
    pub fn without_shared_experts(mut self) -> Self {
        self.shared_experts = None;
        self
    }

    /// The redundancy test of DeepSeekMoE §4.5: for every token, disable its `r` highest-scoring
    /// routed experts and take the top-k from the rest (0 restores normal routing). The weights
    /// stay the raw router probabilities of the experts chosen.
    pub fn with_masked_top(mut self, r: usize) -> crate::Result<Self> {
        if r + self.top_k > self.n_experts() {
            return Err(Error::InvalidConfig(format!(
                "masking {r} of {} experts leaves fewer than top_k {}",
                self.n_experts(),
                self.top_k
            )));
        }
        self.mask_top = r;
        Ok(self)
    }

    fn route(&self, x: Tensor<2>) -> Routing {
        let [n, _] = x.dims();
        let e = self.n_experts();
        let device = x.device();
        // Routing runs in f32 whatever the weights' dtype (as HF's routers do).
        let logits = to_dtype(self.gate.forward(x), DType::F32); // [n, E]
        let probs = if self.sigmoid {
            sigmoid(logits)
        } else {
            softmax(logits, 1)
        }; // [n, E]
        if let Some(bias) = &self.score_bias {
            return self.route_noaux(probs, bias.val());
        }
        let candidates = if self.n_group > 1 {
            let per = e / self.n_group;
            let group_best = probs
                .clone()
                .reshape([n, self.n_group, per])
                .max_dim(2)
                .reshape([n, self.n_group]); // [n, G]
            probs.clone() * self.group_keep(group_best, &device)
        } else {
            probs.clone()
        };
        let candidates = if self.mask_top > 0 {
            // Probabilities are ≥ 0, so −1 ranks the disabled experts last.
            let (_, top) = probs.clone().topk_with_indices(self.mask_top, 1); // [n, r]
            candidates.scatter(
                1,
                top,
                Tensor::<2>::full([n, self.mask_top], -2.0, &device),
                IndexingUpdateOp::Add,
            )
        } else {
            candidates
        };
        let (w, idx) = candidates.topk_with_indices(self.top_k, 1); // [n, k]
        // With masking the values above were shifted; take the true probabilities back.
        let w = if self.mask_top > 0 {
            probs.clone().gather(1, idx.clone())
        } else {
            w
        };
        let weight = if self.top_k > 1 && self.norm_topk_prob {
            w.clone() / (w.sum_dim(1) + 1e-20)
        } else {
            w.mul_scalar(self.routed_scaling_factor)
        };
        self.routing(probs, idx, weight)
    }

    /// `[n, E]` 0/1: the experts of each token's best `topk_group` groups by `group_score`
    /// `[n, G]`.
    fn group_keep(&self, group_score: Tensor<2>, device: &Device) -> Tensor<2> {
        let [n, _] = group_score.dims();
        let per = self.n_experts() / self.n_group;
        let (_, gidx) = group_score.topk_with_indices(self.topk_group, 1); // [n, tg]
        Tensor::<2>::zeros([n, self.n_group], device)
            .scatter(
                1,
                gidx,
                Tensor::ones([n, self.topk_group], device),
                IndexingUpdateOp::Add,
            )
            .reshape([n, self.n_group, 1])
            .expand([n, self.n_group, per])
            .reshape([n, self.n_experts()]) // [n, E]
    }

    /// DeepSeek-V3's `noaux_tc` (HF `DeepseekV3TopkRouter`): `bias` `[E]` is added to the
    /// scores for the choice only.
    fn route_noaux(&self, scores: Tensor<2>, bias: Tensor<1>) -> Routing {
        let [n, e] = scores.dims();
        let device = scores.device();
        let choice = scores.clone() + to_dtype(bias, scores.dtype()).reshape([1, e]); // [n, E]
        let choice = if self.n_group > 1 {
            let per = e / self.n_group;
            let (top2, _) = choice
                .clone()
                .reshape([n * self.n_group, per])
                .topk_with_indices(2, 1); // [n G, 2]
            let group_score = top2.sum_dim(1).reshape([n, self.n_group]); // [n, G]
            let keep = self.group_keep(group_score, &device);
            choice.mask_fill(keep.equal_elem(0.0), f32::NEG_INFINITY)
        } else {
            choice
        };
        let choice = if self.mask_top > 0 {
            let (_, top) = scores.clone().topk_with_indices(self.mask_top, 1); // [n, r]
            let hide = Tensor::<2>::zeros([n, e], &device)
                .scatter(
                    1,
                    top,
                    Tensor::ones([n, self.mask_top], &device),
                    IndexingUpdateOp::Add,
                )
                .greater_elem(0.5);
            choice.mask_fill(hide, f32::NEG_INFINITY)
        } else {
            choice
        };
        let (_, idx) = choice.topk_with_indices(self.top_k, 1); // [n, k]
        let w = scores.clone().gather(1, idx.clone());
        let w = if self.norm_topk_prob {
            w.clone() / (w.sum_dim(1) + 1e-20)
        } else {
            w
        };
        let weight = w.mul_scalar(self.routed_scaling_factor);
        self.routing(scores, idx, weight)
    }

    /// Auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2): after a training step, move each
    /// expert's score bias by `gamma` towards balance, `b_i += γ · sign(mean load − load_i)`, from
    /// the number of tokens each expert received (`load` `[n_experts]`, e.g. the column sums of
    /// [`MoeOutput::topk_idx`] counted per expert, see [`crate::stats`]). Only for
    /// [`TopkMethod::NoAuxTc`] layers.
    pub fn update_score_bias(&mut self, load: Tensor<1>, gamma: f64) -> crate::Result<()> {
        let e = self.n_experts();
        if load.dims() != [e] {
            return Err(Error::InvalidConfig(format!(
                "load has {} entries, the layer {e} experts",
                load.dims()[0]
            )));
        }
        let Some(bias) = self.score_bias.take() else {
            return Err(Error::InvalidConfig(
                "auxiliary-loss-free balancing needs topk_method NoAuxTc".into(),
            ));
        };
        let load = to_dtype(load, DType::F32);
        let mean = load.clone().mean().reshape([1]).expand([e]);
        let step = (mean - load).sign().mul_scalar(gamma);
        let value = bias.val();
        let updated = (value.clone() + to_dtype(step, value.dtype())).detach();
        self.score_bias = Some(bias.map(|_| updated));
        Ok(())
    }

    /// Tokens routed to each expert `[n_experts]` by a routing `topk_idx` `[tokens, top_k]`.
    pub fn expert_load(&self, topk_idx: Tensor<2, Int>) -> Tensor<1> {
        let [n, k] = topk_idx.dims();
        let e = self.n_experts();
        let device = topk_idx.device();
        Tensor::<1>::zeros([e], &device).scatter(
            0,
            topk_idx.reshape([n * k]),
            Tensor::ones([n * k], &device),
            IndexingUpdateOp::Add,
        )
    }

    fn routing(&self, probs: Tensor<2>, idx: Tensor<2, Int>, weight: Tensor<2>) -> Routing {
        let [n, e] = probs.dims();
        let device = probs.device();
        let arange = Tensor::<1, Int>::arange(0..e as i64, &device).reshape([1, 1, e]);
        let selected = idx
            .clone()
            .reshape([n, self.top_k, 1])
            .equal(arange.expand([n, self.top_k, e]))
            .float()
            .sum_dim(1)
            .reshape([n, e]); // [n, E]
        Routing {
            probs,
            idx,
            weight,
            selected,
        }
    }

    /// Expert-level and device-level balance losses (DeepSeekMoE §3.3; HF `MoEGate` for seq_aux).
    fn balance_losses(
        &self,
        r: &Routing,
        batch: usize,
        seq: usize,
        token_mask: Option<Tensor<2, Int>>,
    ) -> (Tensor<1>, Tensor<1>) {
        let e = self.n_experts();
        let k = self.top_k as f64;
        let device = r.probs.device();
        let mask = match (token_mask, self.include_padding) {
            (Some(m), false) => m.float().reshape([batch, seq, 1]),
            _ => Tensor::<3>::ones([batch, seq, 1], &device),
        }; // [b, s, 1]
        let sel = r.selected.clone().reshape([batch, seq, e]) * mask.clone();
        let probs = r.probs.clone().reshape([batch, seq, e]) * mask.clone();
        // f_i = N'/(K' T) Σ_t 1(t selects i);  P_i = (1/T) Σ_t s_{i,t}
        let (f, p) = if self.seq_aux {
            let t = mask.sum_dim(1).clamp_min(1.0); // [b, 1, 1]
            let f = sel.sum_dim(1).mul_scalar(e as f64 / k) / t.clone(); // [b, 1, E]
            let p = probs.sum_dim(1) / t; // [b, 1, E]
            (f.reshape([batch, e]), p.reshape([batch, e]))
        } else {
            let t = mask.sum().clamp_min(1.0).reshape([1, 1]); // [1, 1]
            let f = sel
                .sum_dim(1)
                .sum_dim(0)
                .reshape([1, e])
                .mul_scalar(e as f64 / k)
                / t.clone();
            let p = probs.sum_dim(1).sum_dim(0).reshape([1, e]) / t;
            (f, p)
        };
        let rows = f.dims()[0];
        let expert = (f.clone() * p.clone())
            .sum_dim(1)
            .mean()
            .mul_scalar(self.aux_alpha);
        let device_loss = if self.device_alpha > 0.0 && self.n_devices > 1 {
            let per = e / self.n_devices;
            let fd = f.reshape([rows, self.n_devices, per]).mean_dim(2); // [rows, D, 1]
            let pd = p.reshape([rows, self.n_devices, per]).sum_dim(2);
            (fd * pd).sum_dim(1).mean().mul_scalar(self.device_alpha)
        } else {
            Tensor::<1>::zeros([1], &device)
        };
        (expert.reshape([1]), device_loss.reshape([1]))
    }

    fn output(
        &self,
        y: Tensor<2>,
        x: Tensor<2>,
        r: Routing,
        dims: [usize; 3],
        token_mask: Option<Tensor<2, Int>>,
    ) -> MoeOutput {
        let [b, s, d] = dims;
        let y = match &self.shared_experts {
            Some(shared) => y + run_mlp(shared, x.reshape([1, b * s, d])).reshape([b * s, d]),
            None => y,
        };
        let (expert_loss, device_loss) = self.balance_losses(&r, b, s, token_mask);
        MoeOutput {
            output: y.reshape([b, s, d]),
            aux_loss: expert_loss.clone() + device_loss.clone(),
            expert_loss,
            device_loss,
            topk_idx: r.idx,
            topk_weight: r.weight,
            probs: r.probs,
        }
    }

    /// Grouped dispatch.
    ///
    /// # Shapes
    /// `x` `[batch, seq, d_model]`, `token_mask` `[batch, seq]` (1 = real token) → [`MoeOutput`].
    pub fn forward(
        &self,
        x: Tensor<3>,
        token_mask: Option<Tensor<2, Int>>,
    ) -> crate::Result<MoeOutput> {
        let [b, s, d] = x.dims();
        let flat = x.reshape([b * s, d]);
        let r = self.route(flat.clone());
        let y = self.dispatch(flat.clone(), &r)?;
        Ok(self.output(y, flat, r, [b, s, d], token_mask))
    }

    /// Runs every expert once on the tokens routed to it and scatter-adds the weighted results.
    fn dispatch(&self, flat: Tensor<2>, r: &Routing) -> crate::Result<Tensor<2>> {
        let [n, d] = flat.dims();
        let [_, k] = r.idx.dims();
        let device = flat.device();
        // Sort the n·k assignments by expert; token of assignment j is j / k.
        let (sorted_experts, order) = r.idx.clone().reshape([n * k]).sort_with_indices(0); // [n k]
        let tokens = order.clone().div_scalar(k as i64); // [n k]
        let weights = to_dtype(r.weight.clone(), flat.dtype())
            .reshape([n * k, 1])
            .select(0, order.clone()); // [n k, 1]
        let counts: Vec<f32> = r.selected.clone().sum_dim(0).to_f32s()?;
        let counts_rows: Vec<usize> = counts.iter().map(|c| c.round() as usize).collect();
        // flex, f32, no autodiff: every expert on the host in one pass (each gathering its own
        // tokens' rows), scaled by its weights, then each token sums its k rows
        if !self.padded && plm::kernels::is_flex(&device) && !device.is_autodiff() {
            let order: Vec<usize> = order.to_i64s()?.into_iter().map(|v| v as usize).collect();
            let token_rows: Vec<usize> = order.iter().map(|a| a / k).collect();
            if let Some(ys) = plm::kernels::swiglu_experts(
                &self.experts,
                &flat,
                Some(&token_rows),
                &counts_rows,
                Some(&weights.clone().reshape([n * k])),
            ) {
                if let Some(y) = plm::kernels::sum_assignment_rows(&ys, &order, k) {
                    return Ok(y);
                }
                return Ok(
                    Tensor::<2>::zeros([n, d], (&device, ys.dtype())).select_assign(
                        0,
                        tokens,
                        ys,
                        IndexingUpdateOp::Add,
                    ),
                );
            }
        }
        let xs = flat.select(0, tokens.clone()); // [n k, d]
        if self.padded {
            let ys = self.run_padded(xs, sorted_experts, &counts_rows) * weights;
            return Ok(
                Tensor::<2>::zeros([n, d], (&device, ys.dtype())).select_assign(
                    0,
                    tokens,
                    ys,
                    IndexingUpdateOp::Add,
                ),
            );
        }
        let mut outs = Vec::with_capacity(self.n_experts());
        let mut start = 0usize;
        for (expert, &c) in self.experts.iter().zip(&counts_rows) {
            if c > 0 {
                let block = xs.clone().slice(s![start..start + c, ..]); // [c, d]
                outs.push(run_mlp(expert, block.reshape([1, c, d])).reshape([c, d]));
            }
            start += c;
        }
        let ys = Tensor::cat(outs, 0) * weights; // [n k, d]
        Ok(
            Tensor::<2>::zeros([n, d], (&device, ys.dtype())).select_assign(
                0,
                tokens,
                ys,
                IndexingUpdateOp::Add,
            ),
        )
    }

    /// [`Dispatch::Padded`]: the rows of `xs` (`[n·k, d]`, sorted by expert; `experts` `[n·k]`
    /// their expert ids, `counts` the rows per expert) through their experts with three batched
    /// products. Returns the expert outputs in the row order of `xs`.
    fn run_padded(&self, xs: Tensor<2>, experts: Tensor<1, Int>, counts: &[usize]) -> Tensor<2> {
        let [nk, d] = xs.dims();
        let e = self.n_experts();
        let device = xs.device();
        let cap = counts.iter().copied().max().unwrap_or(0).max(1);
        // slot of sorted row j: expert(j) · cap + (j − start(expert(j)))
        let mut starts = Vec::with_capacity(e);
        let mut acc = 0i64;
        for &c in counts {
            starts.push(acc);
            acc += c as i64;
        }
        let starts = Tensor::<1, Int>::from_data(TensorData::new(starts, [e]), &device);
        let rank = Tensor::<1, Int>::arange(0..nk as i64, &device);
        let slot = experts.clone().mul_scalar(cap as i64) + rank - starts.select(0, experts);
        let dtype = xs.dtype();
        let buf = Tensor::<2>::zeros([e * cap, d], (&device, dtype))
            .select_assign(0, slot.clone(), xs, IndexingUpdateOp::Add)
            .reshape([e, cap, d]);
        let stack = |f: &dyn Fn(&SwiGlu) -> &burn::nn::Linear| -> (Tensor<3>, Option<Tensor<3>>) {
            // Experts of mixed dtypes (some made trainable in f32) stack in the activations'.
            let w = Tensor::stack::<3>(
                self.experts
                    .iter()
                    .map(|x| to_dtype(f(x).weight.val(), dtype))
                    .collect(),
                0,
            );
            let b = f(&self.experts[0]).bias.as_ref().map(|_| {
                Tensor::stack::<2>(
                    self.experts
                        .iter()
                        .filter_map(|x| f(x).bias.as_ref().map(|b| to_dtype(b.val(), dtype)))
                        .collect(),
                    0,
                )
                .unsqueeze_dim::<3>(1)
            });
            (w, b)
        };
        let proj = |x: Tensor<3>, (w, b): (Tensor<3>, Option<Tensor<3>>)| -> Tensor<3> {
            let y = x.matmul(w);
            match b {
                Some(b) => y + b,
                None => y,
            }
        };
        let g = proj(buf.clone(), stack(&|x| &x.gate_proj));
        let u = proj(buf, stack(&|x| &x.up_proj));
        let y = proj(plm::kernels::silu_mul(g, u), stack(&|x| &x.down_proj)); // [e, cap, d]
        y.reshape([e * cap, d]).select(0, slot)
    }

    /// Hash-layer routing (Roller et al., 2021; the DeepSeekMoE paper's "Hash" baseline): every
    /// token goes to the one expert its id hashes to, with weight 1; the router is unused and the
    /// balance losses are zero (balance comes from the hash).
    ///
    /// # Shapes
    /// `x` `[batch, seq, d_model]`, `token_ids` `[batch, seq]` → [`MoeOutput`] with top-1 routing.
    pub fn forward_hash(
        &self,
        x: Tensor<3>,
        token_ids: Tensor<2, Int>,
        router: &HashRouter,
    ) -> crate::Result<MoeOutput> {
        let [b, s, d] = x.dims();
        let n = b * s;
        let e = self.n_experts();
        if router.n_experts != e {
            return Err(Error::InvalidConfig(format!(
                "hash router maps to {} experts, the layer has {e}",
                router.n_experts
            )));
        }
        let device = x.device();
        let flat = x.reshape([n, d]);
        let table = Tensor::<1, Int>::from_data(
            TensorData::new(router.table.clone(), [router.table.len()]),
            &device,
        );
        let idx = table.select(0, token_ids.reshape([n])).reshape([n, 1]); // [n, 1]
        let arange = Tensor::<1, Int>::arange(0..e as i64, &device).reshape([1, e]);
        let selected = idx
            .clone()
            .expand([n, e])
            .equal(arange.expand([n, e]))
            .float(); // [n, E]
        let r = Routing {
            probs: selected.clone(),
            idx,
            weight: Tensor::ones([n, 1], &device),
            selected,
        };
        let y = self.dispatch(flat.clone(), &r)?;
        let y = match &self.shared_experts {
            Some(shared) => y + run_mlp(shared, flat.reshape([1, n, d])).reshape([n, d]),
            None => y,
        };
        let zero = Tensor::<1>::zeros([1], &device);
        Ok(MoeOutput {
            output: y.reshape([b, s, d]),
            aux_loss: zero.clone(),
            expert_loss: zero.clone(),
            device_loss: zero,
            topk_idx: r.idx,
            topk_weight: r.weight,
            probs: r.probs,
        })
    }

    /// Dense masked reference: every expert on every token.
    ///
    /// # Shapes
    /// As [`MoeLayer::forward`].
    pub fn forward_dense(&self, x: Tensor<3>, token_mask: Option<Tensor<2, Int>>) -> MoeOutput {
        let [b, s, d] = x.dims();
        let n = b * s;
        let e = self.n_experts();
        let device = x.device();
        let flat = x.reshape([n, d]);
        let r = self.route(flat.clone());
        let dense = Tensor::<2>::zeros([n, e], &device).scatter(
            1,
            r.idx.clone(),
            r.weight.clone(),
            IndexingUpdateOp::Add,
        ); // [n, E]
        let dense = to_dtype(dense, flat.dtype());
        let mut y = Tensor::<2>::zeros([n, d], (&device, flat.dtype()));
        for (i, expert) in self.experts.iter().enumerate() {
            let yi = run_mlp(expert, flat.clone().reshape([1, n, d])).reshape([n, d]);
            y = y + yi * dense.clone().slice(s![.., i..i + 1]);
        }
        self.output(y, flat, r, [b, s, d], token_mask)
    }
}
