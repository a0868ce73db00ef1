//! Properties of the MoE layer: grouped dispatch equals the dense reference, routing invariants,
//! permutation equivariance and the balance losses' fixed points.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use moe_arch::{Dispatch, MoeConfig, MoeLayer, TopkMethod};
use proptest::prelude::*;

/// The device under test: `PAPERS_DEVICE` (`trainer::device::from_env`) or flex.
fn device() -> Device {
    trainer::device::from_env()
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

fn vecf<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn layer(cfg: &MoeConfig, seed: u64) -> (MoeLayer, Device) {
    let d = device();
    d.seed(seed);
    (cfg.init(&d).unwrap(), d)
}

fn input(b: usize, s: usize, dm: usize, d: &Device) -> Tensor<3> {
    Tensor::random([b, s, dm], Distribution::Normal(0.0, 1.0), d)
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    assert_eq!(a.len(), b.len(), "compared lists differ in length");
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

fn configs() -> impl Strategy<Value = MoeConfig> {
    (
        2usize..9,
        1usize..4,
        0usize..3,
        any::<bool>(),
        any::<bool>(),
        0usize..2,
    )
        .prop_map(|(half, k, shared, norm, seq_aux, grouped)| {
            let e = 2 * half;
            let k = k.min(e);
            let mut c = MoeConfig::new(16, e, k, 8)
                .with_n_shared(shared)
                .with_norm_topk_prob(norm)
                .with_seq_aux(seq_aux)
                .with_routed_scaling_factor(if norm { 1.0 } else { 1.5 })
                .with_device_alpha(0.05)
                .with_n_devices(2)
                .with_initializer_range(0.3);
            if grouped == 1 && k <= half {
                c = c.with_topk_method(TopkMethod::GroupLimited {
                    n_group: 2,
                    topk_group: 1,
                });
            }
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn grouped_dispatch_equals_the_dense_reference(cfg in configs(), seed in 0u64..1000, b in 1usize..3, s in 1usize..7) {
        let _g = testkit::device_rng_lock();
        let (m, d) = layer(&cfg, seed);
        let x = input(b, s, 16, &d);
        let mask = Tensor::<2, Int>::ones([b, s], &d);
        let g = m.forward(x.clone(), Some(mask.clone())).unwrap();
        let p = m.clone().with_dispatch(Dispatch::Padded).forward(x.clone(), Some(mask.clone())).unwrap();
        let r = m.forward_dense(x, Some(mask));
        let want = vecf(r.output);
        prop_assert!(close(&vecf(g.output), &want, 1e-5));
        prop_assert!(close(&vecf(p.output), &want, 1e-5));
        prop_assert!(close(&vecf(g.aux_loss), &vecf(r.aux_loss), 1e-6));
    }

    #[test]
    fn every_token_gets_k_distinct_experts_with_the_configured_weight_sum(cfg in configs(), seed in 0u64..1000) {
        let _g = testkit::device_rng_lock();
        let (m, d) = layer(&cfg, seed);
        let out = m.forward(input(2, 5, 16, &d), None).unwrap();
        let idx = out.topk_idx.into_data().try_to_vec_as::<i64>().unwrap();
        let w = vecf(out.topk_weight);
        let p = vecf(out.probs.clone());
        let e = cfg.n_experts;
        for t in 0..10 {
            let mut ids: Vec<i64> = idx[t * cfg.top_k..(t + 1) * cfg.top_k].to_vec();
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), cfg.top_k);
            prop_assert!(ids.iter().all(|&i| i >= 0 && (i as usize) < e));
            let row: f32 = p[t * e..(t + 1) * e].iter().sum();
            prop_assert!((row - 1.0).abs() < 1e-5);
            let ws: f32 = w[t * cfg.top_k..(t + 1) * cfg.top_k].iter().sum();
            if cfg.norm_topk_prob && cfg.top_k > 1 {
                prop_assert!((ws - 1.0).abs() < 1e-5);
            } else {
                // raw probabilities of the chosen experts, times the scaling factor
                let chosen: f32 = idx[t * cfg.top_k..(t + 1) * cfg.top_k].iter().map(|&i| p[t * e + i as usize]).sum();
                prop_assert!((ws - chosen * cfg.routed_scaling_factor as f32).abs() < 1e-5);
            }
            if let TopkMethod::GroupLimited { n_group, topk_group } = cfg.topk_method {
                let per = e / n_group;
                let mut groups: Vec<i64> = ids.iter().map(|&i| i / per as i64).collect();
                groups.dedup();
                prop_assert!(groups.len() <= topk_group);
            }
        }
    }

    #[test]
    fn permuting_tokens_permutes_the_outputs(seed in 0u64..1000, shift in 1usize..6) {
        let _g = testkit::device_rng_lock();
        let cfg = MoeConfig::new(16, 8, 2, 8).with_n_shared(1).with_initializer_range(0.3);
        let (m, d) = layer(&cfg, seed);
        let x = input(1, 6, 16, &d);
        let perm: Vec<i64> = (0..6).map(|i| ((i + shift) % 6) as i64).collect();
        let p = Tensor::<1, Int>::from_data(TensorData::new(perm, [6]), &d);
        let y = m.forward(x.clone(), None).unwrap().output.reshape([6, 16]).select(0, p.clone());
        let yp = m.forward(x.reshape([6, 16]).select(0, p).reshape([1, 6, 16]), None).unwrap().output;
        prop_assert!(close(&vecf(y), &vecf(yp.reshape([6, 16])), 1e-5));
    }
}

#[test]
fn uniform_routing_gives_an_expert_loss_of_exactly_alpha() {
    let _g = testkit::device_rng_lock();
    for seq_aux in [true, false] {
        let cfg = MoeConfig::new(16, 8, 3, 8)
            .with_aux_alpha(0.01)
            .with_seq_aux(seq_aux);
        let (mut m, d) = layer(&cfg, 1);
        // A zero router gives every expert probability 1/N'.
        m.gate.weight = Param::from_tensor(Tensor::zeros([16, 8], &d));
        let out = m.forward(input(2, 7, 16, &d), None).unwrap();
        let l = vecf(out.expert_loss)[0];
        assert!((l - 0.01).abs() < 1e-7, "seq_aux {seq_aux}: {l}");
    }
}

#[test]
fn padding_is_excluded_from_the_balance_losses_unless_asked() {
    let _g = testkit::device_rng_lock();
    let cfg = MoeConfig::new(16, 8, 2, 8).with_initializer_range(0.5);
    let (m, d) = layer(&cfg, 2);
    let x = input(1, 6, 16, &d);
    let mask = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 1, 1, 1, 0, 0], [1, 6]), &d);
    let other = Tensor::cat(
        vec![
            x.clone().slice(s![.., 0..4, ..]),
            input(1, 2, 16, &d).mul_scalar(5.0),
        ],
        1,
    );
    let a = vecf(m.forward(x.clone(), Some(mask.clone())).unwrap().aux_loss);
    let b = vecf(
        m.forward(other.clone(), Some(mask.clone()))
            .unwrap()
            .aux_loss,
    );
    assert!(close(&a, &b, 1e-6), "{a:?} vs {b:?}");
    let short = vecf(
        m.forward(x.clone().slice(s![.., 0..4, ..]), None)
            .unwrap()
            .aux_loss,
    );
    assert!(close(&a, &short, 1e-6), "{a:?} vs {short:?}");
    let incl = MoeConfig::new(16, 8, 2, 8)
        .with_initializer_range(0.5)
        .with_include_padding(true);
    let (mi, _) = layer(&incl, 2);
    let ai = vecf(mi.forward(x, Some(mask.clone())).unwrap().aux_loss);
    let bi = vecf(mi.forward(other, Some(mask)).unwrap().aux_loss);
    assert!(
        !close(&ai, &bi, 1e-6),
        "HF mode should see the padded tokens"
    );
    drop(m);
}

#[test]
fn invalid_configs_are_rejected() {
    assert!(MoeConfig::new(16, 4, 5, 8).validate().is_err());
    assert!(
        MoeConfig::new(16, 6, 2, 8)
            .with_n_devices(4)
            .validate()
            .is_err()
    );
    assert!(
        MoeConfig::new(16, 8, 4, 8)
            .with_topk_method(TopkMethod::GroupLimited {
                n_group: 4,
                topk_group: 1
            })
            .validate()
            .is_err()
    );
}

#[test]
fn masking_the_top_experts_never_picks_them_and_both_paths_agree() {
    let _g = testkit::device_rng_lock();
    let cfg = MoeConfig::new(16, 8, 2, 8)
        .with_n_shared(1)
        .with_initializer_range(0.5);
    let (m, d) = layer(&cfg, 3);
    let x = input(2, 5, 16, &d);
    let plain = m.forward(x.clone(), None).unwrap();
    let p = vecf(plain.probs.clone());
    let masked = m.clone().with_masked_top(2).unwrap();
    let out = masked.forward(x.clone(), None).unwrap();
    let dense = masked.forward_dense(x, None);
    assert!(close(&vecf(out.output.clone()), &vecf(dense.output), 1e-5));
    let idx = out.topk_idx.into_data().try_to_vec_as::<i64>().unwrap();
    let w = vecf(out.topk_weight);
    for t in 0..10 {
        let row = &p[t * 8..(t + 1) * 8];
        let mut order: Vec<usize> = (0..8).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        // chosen = 3rd and 4th best, weighted by their own probabilities
        let mut chosen: Vec<usize> = idx[t * 2..t * 2 + 2].iter().map(|&i| i as usize).collect();
        chosen.sort_unstable();
        let mut want = vec![order[2], order[3]];
        want.sort_unstable();
        assert_eq!(chosen, want, "token {t}");
        for s in 0..2 {
            assert!((w[t * 2 + s] - row[idx[t * 2 + s] as usize]).abs() < 1e-6);
        }
    }
    assert!(m.with_masked_top(7).is_err());
}

#[test]
fn padded_dispatch_has_the_gradients_of_per_expert_dispatch() {
    let _g = testkit::device_rng_lock();
    let cfg = MoeConfig::new(16, 8, 3, 8)
        .with_n_shared(1)
        .with_initializer_range(0.3);
    let d = device().autodiff();
    d.seed(5);
    let m = cfg.init(&d).unwrap();
    let x = input(2, 7, 16, &d).require_grad();
    let grads = |m: MoeLayer| {
        let out = m.forward(x.clone(), None).unwrap();
        let g = (out.output.powi_scalar(2).sum() + out.aux_loss).backward();
        let gx = vecf(x.grad(&g).unwrap());
        let experts: Vec<Vec<f32>> = m
            .experts
            .iter()
            .flat_map(|e| [&e.gate_proj, &e.up_proj, &e.down_proj])
            .map(|l| {
                // an expert no token reached has no gradient in the per-expert path
                let n = l.weight.val().dims().iter().product::<usize>();
                l.weight.grad(&g).map(vecf).unwrap_or_else(|| vec![0.0; n])
            })
            .collect();
        let router = vecf(m.gate.weight.grad(&g).unwrap());
        (gx, experts, router)
    };
    let (ax, ae, ar) = grads(m.clone());
    let (bx, be, br) = grads(m.with_dispatch(Dispatch::Padded));
    assert!(close(&ax, &bx, 1e-5));
    assert!(close(&ar, &br, 1e-5));
    for (a, b) in ae.iter().zip(&be) {
        assert!(close(a, b, 1e-5));
    }
}

#[test]
fn routing_statistics_count_assignments_and_mean_gates() {
    let d = device();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, 0, 2, 3, 0], [3, 2]), &d);
    let w = Tensor::<2>::from_data(
        TensorData::new(vec![0.5f32, 0.25, 0.75, 0.1, 0.2, 0.3], [3, 2]),
        &d,
    );
    let s = moe_arch::stats::RoutingStats::from_routing(idx.clone(), w.clone(), 4, None).unwrap();
    assert_eq!(s.assignments, 6);
    assert!(close(
        &s.token_share.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &[0.5, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0],
        1e-6
    ));
    assert!((s.mean_gate[0] - (0.5 + 0.75 + 0.3) / 3.0).abs() < 1e-6);
    // The third token masked out.
    let mask = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 1, 0], [3]), &d);
    let s = moe_arch::stats::RoutingStats::from_routing(idx, w, 4, Some(mask)).unwrap();
    assert_eq!(s.assignments, 4);
    assert!((s.token_share[3]).abs() < 1e-9);
    let svg = moe_arch::stats::load_heatmap_svg("load", &[(1, s)]);
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>") && svg.contains("expert 3"));
}

#[test]
fn hash_routing_sends_equal_ids_to_their_expert_and_matches_a_manual_dispatch() {
    let _g = testkit::device_rng_lock();
    let cfg = MoeConfig::new(16, 4, 1, 8).with_initializer_range(0.5);
    let (m, d) = layer(&cfg, 4);
    let router = moe_arch::HashRouter::new(10, 4, 7);
    // Balanced: each expert owns 2 or 3 of the 10 ids.
    let mut per = [0usize; 4];
    for id in 0..10 {
        per[router.expert(id).unwrap()] += 1;
    }
    assert!(per.iter().all(|&c| c == 2 || c == 3), "{per:?}");
    let ids_v = vec![3i64, 7, 3, 0, 9, 7];
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids_v.clone(), [1, 6]), &d);
    let x = input(1, 6, 16, &d);
    let out = m.forward_hash(x.clone(), ids, &router).unwrap();
    let got = out.topk_idx.into_data().try_to_vec_as::<i64>().unwrap();
    let want: Vec<i64> = ids_v
        .iter()
        .map(|&i| router.expert(i as usize).unwrap() as i64)
        .collect();
    assert_eq!(got, want);
    assert_eq!(vecf(out.aux_loss), vec![0.0]);
    // Each token's output is exactly its expert applied to it.
    let y = vecf(out.output);
    for (t, &e) in want.iter().enumerate() {
        let xt = x.clone().slice(s![.., t..t + 1, ..]);
        let yt = vecf(m.experts[e as usize].forward(xt));
        assert!(close(&y[t * 16..(t + 1) * 16], &yt, 1e-5), "token {t}");
    }
    assert!(
        m.forward_hash(
            input(1, 2, 16, &d),
            Tensor::zeros([1, 2], &d),
            &moe_arch::HashRouter::new(10, 3, 0)
        )
        .is_err()
    );
}

fn noaux(e: usize, k: usize, n_group: usize, sigmoid: bool, norm: bool) -> MoeConfig {
    MoeConfig::new(16, e, k, 8)
        .with_n_shared(1)
        .with_norm_topk_prob(norm)
        .with_routed_scaling_factor(2.5)
        .with_topk_method(TopkMethod::NoAuxTc {
            n_group,
            topk_group: 1.max(n_group / 2),
        })
        .with_scoring(if sigmoid {
            moe_arch::Scoring::Sigmoid
        } else {
            moe_arch::Scoring::Softmax
        })
        .with_initializer_range(0.3)
}

fn with_bias(mut m: MoeLayer, bias: &[f32], d: &Device) -> MoeLayer {
    let b = Tensor::<1>::from_data(TensorData::new(bias.to_vec(), [bias.len()]), d);
    m.score_bias = Some(Param::from_tensor(b).set_require_grad(false));
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn noaux_routing_chooses_by_biased_scores_and_weighs_by_unbiased_ones(
        seed in 0u64..1000,
        sigmoid in any::<bool>(),
        norm in any::<bool>(),
        grouped in any::<bool>(),
        bias in proptest::collection::vec(-0.5f32..0.5, 8),
    ) {
        let _g = testkit::device_rng_lock();
        let n_group = if grouped { 4 } else { 1 };
        let (m, d) = layer(&noaux(8, 2, n_group, sigmoid, norm), seed);
        let m = with_bias(m, &bias, &d);
        let x = input(2, 5, 16, &d);
        let out = m.forward(x.clone(), None).unwrap();
        let reference = m.forward_dense(x, None);
        prop_assert!(close(&vecf(out.output), &vecf(reference.output), 1e-5));
        let idx = out.topk_idx.into_data().try_to_vec_as::<i64>().unwrap();
        let w = vecf(out.topk_weight);
        let p = vecf(out.probs);
        for t in 0..10 {
            let ids: Vec<usize> = idx[t * 2..t * 2 + 2].iter().map(|&i| i as usize).collect();
            prop_assert!(ids[0] != ids[1]);
            let choice = |i: usize| p[t * 8 + i] + bias[i];
            // Allowed experts: all, or those of the best 2 of 4 groups by their top-2 sum.
            let allowed: Vec<bool> = if grouped {
                let gs: Vec<f32> = (0..4).map(|g| choice(2 * g) + choice(2 * g + 1)).collect();
                let mut order: Vec<usize> = (0..4).collect();
                order.sort_by(|&a, &b| gs[b].total_cmp(&gs[a]));
                (0..8).map(|i| order[..2].contains(&(i / 2))).collect()
            } else {
                vec![true; 8]
            };
            for &c in &ids {
                prop_assert!(allowed[c]);
                for o in (0..8).filter(|o| allowed[*o] && !ids.contains(o)) {
                    prop_assert!(choice(c) >= choice(o) - 1e-6);
                }
            }
            let raw: Vec<f32> = ids.iter().map(|&i| p[t * 8 + i]).collect();
            let sum: f32 = raw.iter().sum();
            for (j, r) in raw.iter().enumerate() {
                let want = if norm { r / (sum + 1e-20) } else { *r } * 2.5;
                prop_assert!((w[t * 2 + j] - want).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn auxiliary_loss_free_bias_updates_balance_a_skewed_router() {
    let _g = testkit::device_rng_lock();
    let (m, d) = layer(&noaux(8, 2, 1, false, false), 3);
    // Experts 0 and 1 start far ahead: every token picks them.
    let mut m = with_bias(m, &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &d);
    let x = input(4, 16, 16, &d);
    let max_vio = |m: &MoeLayer| {
        let out = m.forward(x.clone(), None).unwrap();
        let load = vecf(m.expert_load(out.topk_idx));
        assert_eq!(load.iter().sum::<f32>(), 4.0 * 16.0 * 2.0);
        let mean = load.iter().sum::<f32>() / 8.0;
        (load.iter().fold(0.0f32, |a, &b| a.max(b)) - mean) / mean
    };
    let start = max_vio(&m);
    assert!((start - 3.0).abs() < 1e-6, "{start}");
    for _ in 0..60 {
        let out = m.forward(x.clone(), None).unwrap();
        let load = m.expert_load(out.topk_idx);
        m.update_score_bias(load, 0.05).unwrap();
    }
    let end = max_vio(&m);
    assert!(end < 1.0, "MaxVio {start} → {end}");
    // A layer without a score bias refuses the update.
    let (plain, _) = layer(&MoeConfig::new(16, 8, 2, 8), 3);
    let mut plain = plain;
    assert!(
        plain
            .update_score_bias(Tensor::zeros([8], &d), 0.05)
            .is_err()
    );
}

fn tiny_lm(n_shared: usize) -> moe_arch::deepseek::DeepseekHfConfig {
    use moe_arch::deepseek::{DeepseekHfConfig, MoeHfFields};
    DeepseekHfConfig {
        vocab_size: 32,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: None,
        intermediate_size: 24,
        moe: MoeHfFields {
            first_k_dense_replace: 1,
            aux_loss_alpha: Some(0.01),
            seq_aux: Some(false),
            ..MoeHfFields::new(Some(4), n_shared, 2, 8)
        },
        rms_norm_eps: Some(1e-6),
        rope_theta: None,
        max_position_embeddings: Some(64),
    }
}

fn ids(v: &[i64], d: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), d)
}

#[test]
fn a_hash_routed_lm_sends_each_token_to_its_mapped_expert_and_keeps_the_map_through_training() {
    use trainer::{BatchCtx, StepLoss, Task, Trainer, TrainerConfig};
    let _g = testkit::device_rng_lock();
    let d = device();
    d.seed(3);
    let lm = tiny_lm(0).init(&d).unwrap();
    let router = moe_arch::HashRouter::new(32, 4, 11);
    assert!(
        lm.clone()
            .with_hash_routing(moe_arch::HashRouter::new(32, 3, 11))
            .is_err()
    );
    let lm = lm.with_hash_routing(router.clone()).unwrap();
    let v = [5i64, 9, 31, 0, 5, 17];
    let out = lm.forward(ids(&v, &d), None).unwrap();
    // one MoE layer (the first is dense), top-1, weight 1, no balance loss
    assert_eq!(out.routing.len(), 1);
    let (_, idx, w) = &out.routing[0];
    let got = idx.clone().into_data().try_to_vec_as::<i64>().unwrap();
    let want: Vec<i64> = v
        .iter()
        .map(|&i| router.expert(i as usize).unwrap() as i64)
        .collect();
    assert_eq!(got, want);
    assert!(vecf(w.clone()).iter().all(|&x| x == 1.0));
    assert_eq!(vecf(out.aux_loss), vec![0.0]);

    // The map survives the trainer's optimizer steps and the move off autodiff.
    struct Lm(Vec<i64>, Device);
    impl Task<moe_arch::deepseek::DeepseekLm> for Lm {
        fn loss(
            &mut self,
            model: &moe_arch::deepseek::DeepseekLm,
            _ctx: &mut BatchCtx<'_>,
        ) -> trainer::Result<StepLoss> {
            let t = ids(&self.0, &self.1);
            let logits = model.forward(t, None).map_err(trainer::Error::task)?.logits;
            Ok(logits.powi_scalar(2).mean().reshape([1]).into())
        }
    }
    let ad = d.clone().autodiff();
    ad.seed(3);
    let on_ad = tiny_lm(0)
        .init(&ad)
        .unwrap()
        .with_hash_routing(router.clone())
        .unwrap();
    let trained = Trainer::new(TrainerConfig::new(2).with_lr(1e-2), &ad)
        .fit(on_ad, &mut Lm(v.to_vec(), ad.clone()))
        .unwrap()
        .model
        .valid();
    assert_eq!(trained.hash_routing(), Some(&router));
}

#[test]
fn switching_the_shared_expert_off_activates_more_routed_experts() {
    let _g = testkit::device_rng_lock();
    let d = device();
    d.seed(5);
    let lm = tiny_lm(1).init(&d).unwrap();
    let x = ids(&[1, 2, 3, 4, 5, 6, 7, 8], &d);
    let base = lm.forward(x.clone(), None).unwrap();
    let off = lm.clone().with_shared_replaced_by_routed(1).unwrap();
    let out = off.forward(x.clone(), None).unwrap();
    // top-2 became top-3 in the MoE layer, and the output changed
    assert_eq!(base.routing[0].1.dims(), [8, 2]);
    assert_eq!(out.routing[0].1.dims(), [8, 3]);
    let (a, b) = (vecf(base.logits), vecf(out.logits));
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4));
    // with no extra expert and no shared expert the layer is the routed part alone:
    // dropping an absent shared expert changes nothing
    let no_shared = tiny_lm(0).init(&d).unwrap();
    let same = no_shared.clone().with_shared_replaced_by_routed(0).unwrap();
    assert!(close(
        &vecf(same.forward(x.clone(), None).unwrap().logits),
        &vecf(no_shared.forward(x, None).unwrap().logits),
        1e-6
    ));
    // more routed experts than there are is a typed error
    assert!(lm.with_shared_replaced_by_routed(3).is_err());
}
