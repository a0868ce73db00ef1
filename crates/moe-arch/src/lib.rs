//! DeepSeekMoE: Towards Ultimate Expert Specialization in Mixture-of-Experts Language Models
//! (Dai et al., ACL 2024, arXiv 2401.06066). Official code: github.com/deepseek-ai/DeepSeek-MoE
//! (the modelling file lives with the checkpoints).
//!
//! [`MoeLayer`] is the paper's MoE feed-forward: `n_experts` fine-grained routed experts of width
//! `d_ff`, `n_shared` always-active shared experts (one fused MLP, as in the released
//! checkpoints), a softmax router with greedy or group-limited top-k, optional renormalisation or
//! scaling of the top-k weights, and the expert- and device-level balance losses (padding
//! excluded by default; `include_padding` reproduces HF). Its output carries the routing (top-k
//! ids and weights) for analysis and for ESFT. GShard (top-2 of N, no shared) and Switch (top-1)
//! are the same layer with other knobs.
//!
//! ```
//! use burn::prelude::*;
//! use moe_arch::MoeConfig;
//! let device = Device::flex();
//! // 1 shared + 15 routed experts of width 32, 3 active per token.
//! let moe = MoeConfig::new(64, 15, 3, 32).with_n_shared(1).init(&device)?;
//! let x = Tensor::<3>::ones([2, 5, 64], &device);
//! let out = moe.forward(x, None)?;
//! assert_eq!(out.output.dims(), [2, 5, 64]);
//! assert_eq!(out.topk_idx.dims(), [10, 3]);
//! # Ok::<(), moe_arch::Error>(())
//! ```
//!
//! Execution: [`MoeLayer::forward`] runs only the chosen experts, either once per expert on its
//! block of sorted tokens ([`Dispatch::PerExpert`], the default: fastest on a CPU) or all at
//! once through three batched products over a capacity-padded buffer ([`Dispatch::Padded`]:
//! fastest on a GPU, where it beat PyTorch eager by 2.6× forward and 5.3× forward + backward on
//! an H200 through libtorch, see README). [`MoeLayer::forward_dense`] is the dense masked
//! reference both are tested against.
//!
//! DeepSeek-V3's router is here too: sigmoid scores ([`Scoring::Sigmoid`]) and `noaux_tc`
//! ([`TopkMethod::NoAuxTc`]: experts chosen by score plus a per-expert bias, groups ranked by
//! their two best biased scores, weights from the unbiased scores), with auxiliary-loss-free
//! balancing as a training option ([`MoeLayer::update_score_bias`],
//! [`deepseek::DeepseekLm::update_score_biases`]) beside the paper's balance losses.
//!
//! Also here: the DeepSeekMoE v1 and DeepSeek-V2 / V3 causal LMs with HF loading (one file or
//! sharded, F32/F16/BF16, held in f32 or bf16 — see `plm::checkpoint`) and saving
//! ([`deepseek`], [`deepseek_v2`]), Hash routing, routing statistics ([`stats`]) and the
//! `moe-compare` experiment (`experiment` (feature `experiment`)).
//!
//! Dtypes: with weights held in bf16 the residual stream, norms, projections and experts compute
//! in bf16 (burn-flex's bf16 kernels); attention softmax and the whole router (logits, scores,
//! top-k, weights) run in f32, as in HF. An expert held in another dtype than the activations
//! (f32 experts trained beside a frozen bf16 base) takes and returns the activations' dtype.
//!
//! Features: the default is the library alone (what you import into your own Burn model; it
//! pulls no tokenizers, plotters, hashing or compression crates). `experiment` adds the
//! experiment runner that `cargo xtask run` drives, with its data, reports and plots;
//! `examples/` shows the library on its own (`cargo run --release -p moe-arch --example …`).

pub mod deepseek;
pub mod deepseek_v2;
mod error;
#[cfg(feature = "experiment")]
pub mod experiment;
mod layer;
pub mod model;
pub mod stats;

pub use error::{Error, Result};
pub use layer::{Dispatch, HashRouter, MoeConfig, MoeLayer, MoeOutput, Scoring, TopkMethod};
pub use model::{MoeLayerInfo, MoeModel};
