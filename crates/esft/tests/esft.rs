//! ESFT library: scores, selection, expert configs, expert-only training, adapters, LoRA.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use burn::prelude::*;
use esft::adapter::{ADAPTER_FILE, EXPERT_CFG_FILE};
use esft::select::{ParamRole, param_role, select_layer};
use esft::{
    Adapter, Error, ExpertConfig, Lora, LoraConfig, MoeModel, ScoreAccumulator, ScoreFunction,
    SelectionConfig, save_adapter,
};
use moe_arch::deepseek::{DeepseekHfConfig, DeepseekLm, MoeHfFields};
use proptest::prelude::*;
use trainer::{BatchCtx, StepLoss, Task, Trainer, TrainerConfig};

fn hf(n_layers: usize) -> DeepseekHfConfig {
    DeepseekHfConfig {
        vocab_size: 32,
        hidden_size: 16,
        num_hidden_layers: n_layers,
        num_attention_heads: 2,
        num_key_value_heads: None,
        intermediate_size: 24,
        moe: MoeHfFields {
            first_k_dense_replace: 1,
            aux_loss_alpha: Some(0.01),
            seq_aux: Some(true),
            ..MoeHfFields::new(Some(8), 1, 2, 8)
        },
        rms_norm_eps: Some(1e-6),
        rope_theta: None,
        max_position_embeddings: Some(64),
    }
}

fn tokens(d: &Device, b: usize, s: usize, seed: u64) -> Tensor<2, Int> {
    let v: Vec<i64> = (0..b * s)
        .map(|i| ((i as u64 * 7 + seed * 13) % 31) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [b, s]), d)
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn official_expert_config_json_round_trips() {
    let text = r#"{"experts": {"1": [8, 26, 5], "12": [3], "2": []}, "shared_experts": false, "non_expert_modules": true}"#;
    let cfg: ExpertConfig = serde_json::from_str(text).unwrap();
    assert_eq!(cfg.experts[&1], vec![8, 26, 5]);
    assert_eq!(cfg.experts[&12], vec![3]);
    assert!(cfg.non_expert_modules && !cfg.shared_experts);
    let back: ExpertConfig = serde_json::from_str(&cfg.to_json().unwrap()).unwrap();
    assert_eq!(back, cfg);
    // Keys come out as strings, in numeric layer order.
    let json = cfg.to_json().unwrap();
    assert!(json.find("\"2\"").unwrap() < json.find("\"12\"").unwrap());
}

#[test]
fn parameter_roles_follow_the_module_paths() {
    assert_eq!(
        param_role("layers.3.mlp.Moe.experts.7.up_proj.weight"),
        ParamRole::Routed {
            layer: 3,
            expert: 7
        }
    );
    assert_eq!(
        param_role("layers.3.mlp.Moe.shared_experts.up_proj.weight"),
        ParamRole::Shared
    );
    assert_eq!(param_role("layers.3.mlp.Moe.gate.weight"), ParamRole::Other);
    assert_eq!(param_role("embed_tokens.weight"), ParamRole::Other);
}

#[test]
fn selection_includes_the_crossing_expert() {
    let s = [0.05, 0.3, 0.1, 0.4, 0.15];
    assert_eq!(select_layer(&s, 0.2), vec![3]);
    assert_eq!(select_layer(&s, 0.5), vec![3, 1]);
    assert_eq!(select_layer(&s, 0.7), vec![3, 1]);
    assert_eq!(select_layer(&s, 0.71), vec![3, 1, 4]);
    assert_eq!(select_layer(&s, 0.0), Vec::<usize>::new());
    assert_eq!(select_layer(&[0.0, 0.0], 0.5), Vec::<usize>::new());
}

proptest! {
    #[test]
    fn selection_is_the_shortest_prefix_reaching_p(v in proptest::collection::vec(0.0f64..1.0, 1..40), p in 0.0f64..1.0) {
        let total: f64 = v.iter().sum();
        let sel = select_layer(&v, p);
        let sum: f64 = sel.iter().map(|&i| v[i]).sum();
        // Sorted by descending score, no duplicates.
        for w in sel.windows(2) { prop_assert!(v[w[0]] >= v[w[1]]); }
        let mut ids = sel.clone(); ids.sort(); ids.dedup();
        prop_assert_eq!(ids.len(), sel.len());
        if total >= p {
            prop_assert!(sum >= p);
            if let Some(&last) = sel.last() { prop_assert!(sum - v[last] < p); }
        }
        // Nothing left out scores above the weakest selected expert.
        if let Some(&last) = sel.last() {
            for (i, &x) in v.iter().enumerate() {
                if !sel.contains(&i) { prop_assert!(x <= v[last]); }
            }
        }
    }
}

#[test]
fn scores_are_normalised_per_sequence_and_layer_and_skip_padding() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex();
    d.seed(3);
    let model = hf(3).init(&d).unwrap();
    let (b, s) = (3, 10);
    let x = tokens(&d, b, s, 1);
    let mask_v: Vec<i64> = (0..b * s)
        .map(|i| i64::from(!(i / s == 1 && i % s >= 4)))
        .collect();
    let mask = Tensor::<2, Int>::from_data(TensorData::new(mask_v.clone(), [b, s]), &d);
    let out = model.forward_moe(x, Some(mask.clone())).unwrap();
    let mut acc = ScoreAccumulator::new();
    acc.add(&out.routing, Some(mask), b, s, 8).unwrap();
    let sc = acc.finish();
    assert_eq!(sc.n_sequences, 3);
    assert_eq!(sc.n_tokens, 24);
    assert_eq!(
        sc.layers.iter().map(|l| l.layer).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for (l, (_, idx, w)) in sc.layers.iter().zip(&out.routing) {
        let tok: f64 = l.token.iter().sum();
        assert!((tok - 1.0).abs() < 1e-6, "token scores sum to {tok}");
        // Gate score by hand: per sequence mean over its real tokens of the routed gates.
        let idx = idx
            .clone()
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        let w = floats(w.clone());
        let mut want = [0.0f64; 8];
        for seq in 0..b {
            let real: Vec<usize> = (0..s).filter(|t| mask_v[seq * s + t] == 1).collect();
            for &t in &real {
                for k in 0..2 {
                    let r = (seq * s + t) * 2 + k;
                    want[idx[r] as usize] += w[r] as f64 / real.len() as f64 / b as f64;
                }
            }
        }
        for i in 0..8 {
            assert!(
                (l.gate[i] - want[i]).abs() < 1e-5,
                "expert {i}: {} vs {}",
                l.gate[i],
                want[i]
            );
        }
    }
    // summary.json round trip (4 decimals).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("summary.json");
    std::fs::write(&p, sc.to_summary_json()).unwrap();
    let back = esft::RelevanceScores::read_summary_json(&p).unwrap();
    assert!((back.layers[0].token[3] - sc.layers[0].token[3]).abs() < 1e-4);
    // Selection over real scores.
    let cfg = ExpertConfig::select(&sc, &SelectionConfig::token()).unwrap();
    for ids in cfg.experts.values() {
        assert!(!ids.is_empty());
    }
    cfg.validate(&model.moe_layers()).unwrap();
    assert!(sc.experts_to_cover(ScoreFunction::Token, 0.5) <= 4.0 + 1e-9);
}

#[test]
fn bad_expert_configs_are_typed_errors_naming_the_culprit() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex();
    let model = hf(3).init(&d).unwrap();
    let layers = model.moe_layers();
    let bad_layer: ExpertConfig = serde_json::from_str(r#"{"experts": {"0": [1]}}"#).unwrap();
    assert!(matches!(
        bad_layer.validate(&layers),
        Err(Error::UnknownLayer { layer: 0, .. })
    ));
    let bad_expert: ExpertConfig = serde_json::from_str(r#"{"experts": {"2": [1, 8]}}"#).unwrap();
    let e = bad_expert.validate(&layers).unwrap_err();
    assert!(matches!(
        e,
        Error::UnknownExpert {
            layer: 2,
            expert: 8,
            n_experts: 8
        }
    ));
    assert!(e.to_string().contains("expert 8 of layer 2"));
    let dup: ExpertConfig = serde_json::from_str(r#"{"experts": {"1": [1, 1]}}"#).unwrap();
    assert!(matches!(
        dup.validate(&layers),
        Err(Error::DuplicateExpert { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(save_adapter(&model, &bad_expert, dir.path()).is_err());
    assert!(!dir.path().join(ADAPTER_FILE).exists());
}

struct RandomLm {
    device: Device,
}

impl<M: MoeModel> Task<M> for RandomLm
where
    M: MoeModel,
{
    fn loss(&mut self, model: &M, ctx: &mut BatchCtx<'_>) -> trainer::Result<StepLoss> {
        let x = tokens(&self.device, 2, 9, ctx.step as u64);
        let out = model
            .forward_moe(x.clone(), None)
            .map_err(trainer::Error::task)?;
        let logits = out.logits.slice(s![.., 0..8, ..]);
        let y = x.slice(s![.., 1..9]);
        Ok((plm::llama::cross_entropy(logits, y) + out.aux_loss).into())
    }
}

#[test]
fn only_the_selected_experts_train_and_adapters_undo_bit_for_bit() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex().autodiff();
    d.seed(5);
    let base = hf(3).init(&d).unwrap();
    let cfg: ExpertConfig =
        serde_json::from_str(r#"{"experts": {"1": [2, 5], "2": [0]}, "shared_experts": false, "non_expert_modules": false}"#).unwrap();
    let before = trainer::inventory(&base);
    let snap = |m: &DeepseekLm| -> Vec<Vec<f32>> {
        let mut v = Vec::new();
        m.visit(&mut Collect(&mut v));
        v
    };
    let w0 = snap(&base);
    let tcfg = TrainerConfig::new(3).with_lr(1e-2);
    let out = Trainer::new(tcfg, &d)
        .with_trainable(|p| cfg.is_trainable(p))
        .fit(base.clone(), &mut RandomLm { device: d.clone() })
        .unwrap();
    let w1 = snap(&out.model);
    let mut moved = 0;
    for ((info, a), b) in before.iter().zip(&w0).zip(&w1) {
        if cfg.is_trainable(&info.path) {
            assert_ne!(a, b, "{} did not move", info.path);
            moved += 1;
        } else {
            assert_eq!(a, b, "{} moved", info.path);
        }
    }
    assert_eq!(moved, 9); // 3 experts × gate/up/down
    // The trained model's parameters track gradients again (a later full fine-tune works).
    let again = Trainer::new(TrainerConfig::new(1).with_lr(1e-2), &d)
        .fit(out.model.clone(), &mut RandomLm { device: d.clone() })
        .unwrap();
    assert_ne!(snap(&again.model)[0], w1[0]);

    // Adapter: exactly the trained tensors, HF names.
    let dir = tempfile::tempdir().unwrap();
    let stats = save_adapter(&out.model, &cfg, dir.path()).unwrap();
    assert_eq!(stats.tensors, 9);
    assert_eq!(stats.params, 3 * 3 * 16 * 8);
    let adapter = Adapter::read(dir.path()).unwrap();
    let names = adapter.tensor_names().unwrap();
    assert!(
        names.contains(&"model.layers.1.mlp.experts.5.down_proj.weight".to_string()),
        "{names:?}"
    );
    let hdr = plm::safetensors::read_header(&dir.path().join(ADAPTER_FILE)).unwrap();
    assert_eq!(
        hdr["model.layers.1.mlp.experts.5.down_proj.weight"].shape,
        vec![16, 8]
    );
    // Apply to the base: equals the trained model; undo: equals the base, bit for bit.
    let (applied, undo) = adapter.apply(&base).unwrap();
    assert_eq!(snap(&applied), w1);
    let (restored, _) = undo.apply(&applied).unwrap();
    assert_eq!(snap(&restored), w0);

    // A shape mismatch and an unknown tensor are typed errors naming the tensor.
    let other = {
        let mut h = hf(3);
        h.moe.moe_intermediate_size = 4;
        h.init(&d).unwrap()
    };
    let e = adapter.apply(&other).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert!(e.to_string().contains("experts"), "{e}");
    let mut cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(EXPERT_CFG_FILE)).unwrap())
            .unwrap();
    cfg_json["experts"]["1"] = serde_json::json!([2]);
    std::fs::write(dir.path().join(EXPERT_CFG_FILE), cfg_json.to_string()).unwrap();
    let e = Adapter::read(dir.path()).unwrap().apply(&base).unwrap_err();
    assert!(matches!(e, Error::NotInExpertConfig { .. }), "{e}");
    let two_layers = hf(2).init(&d).unwrap();
    let e = adapter.apply(&two_layers).unwrap_err();
    assert!(matches!(e, Error::UnknownLayer { layer: 2, .. }), "{e}");
}

struct Collect<'a>(&'a mut Vec<Vec<f32>>);
impl burn::module::ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
        self.0.push(
            p.val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap(),
        );
    }
}

#[test]
fn lora_starts_at_the_base_model_and_trains_only_its_pairs() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex().autodiff();
    d.seed(9);
    let base = hf(2).init(&d).unwrap();
    let lora = Lora::new(base.clone(), &LoraConfig::default(), &d).unwrap();
    // q,k,v,o ×2 layers + dense gate/up/down + router + 8×3 experts + shared 3 = 8+3+1+24+3.
    assert_eq!(lora.targets().len(), 39);
    assert!(
        lora.targets()
            .iter()
            .all(|t| !t.starts_with("embed") && !t.starts_with("lm_head"))
    );
    let x = tokens(&d, 1, 6, 2);
    let a = floats(base.forward(x.clone(), None).unwrap().logits);
    let b = floats(lora.merged().forward(x.clone(), None).unwrap().logits);
    assert_eq!(a, b);
    let mut w0 = Vec::new();
    base.visit(&mut Collect(&mut w0));
    let out = Trainer::new(TrainerConfig::new(3).with_lr(1e-2), &d)
        .with_trainable(Lora::<DeepseekLm>::is_lora)
        .fit(lora, &mut LoraLm { device: d.clone() })
        .unwrap();
    let mut w1 = Vec::new();
    out.model.base.visit(&mut Collect(&mut w1));
    assert_eq!(w0, w1, "the base moved");
    let c = floats(out.model.merged().forward(x, None).unwrap().logits);
    assert_ne!(a, c);
    let bytes = out.model.adapter_bytes().unwrap();
    let h = plm::safetensors::parse_header(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(
        h["model.layers.0.self_attn.q_proj.lora_A.weight"].shape,
        vec![8, 16]
    );
    assert_eq!(h.len(), 78);
}

struct LoraLm {
    device: Device,
}

impl Task<Lora<DeepseekLm>> for LoraLm {
    fn loss(
        &mut self,
        model: &Lora<DeepseekLm>,
        ctx: &mut BatchCtx<'_>,
    ) -> trainer::Result<StepLoss> {
        RandomLm {
            device: self.device.clone(),
        }
        .loss(&model.merged(), ctx)
    }
}

struct V2Task {
    device: Device,
}

impl Task<Lora<moe_arch::deepseek_v2::DeepseekV2Lm>> for V2Task {
    fn loss(
        &mut self,
        model: &Lora<moe_arch::deepseek_v2::DeepseekV2Lm>,
        ctx: &mut BatchCtx<'_>,
    ) -> trainer::Result<StepLoss> {
        <Self as Task<moe_arch::deepseek_v2::DeepseekV2Lm>>::loss(self, &model.merged(), ctx)
    }
}

impl Task<moe_arch::deepseek_v2::DeepseekV2Lm> for V2Task {
    fn loss(
        &mut self,
        model: &moe_arch::deepseek_v2::DeepseekV2Lm,
        ctx: &mut BatchCtx<'_>,
    ) -> trainer::Result<StepLoss> {
        let ids: Vec<i64> = (0..2 * 17).map(|_| 3 + ctx.rng.below(90) as i64).collect();
        let x = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 17]), &self.device);
        let out = model
            .forward(x.clone().slice(s![.., 0..16]), None)
            .map_err(trainer::Error::task)?;
        let loss = plm::llama::cross_entropy(
            out.logits.cast(burn::tensor::DType::F32),
            x.slice(s![.., 1..17]),
        );
        Ok(loss.into())
    }
}

/// The tiny V2-Lite-style fixture (sharded bf16) with its weights held in bf16.
fn bf16_v2_lite(device: &Device) -> moe_arch::deepseek_v2::DeepseekV2Lm {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/deepseek_bf16/v2_lite");
    moe_arch::deepseek_v2::DeepseekV2Lm::load_hf_dtype(
        &dir,
        plm::checkpoint::LoadDtype::Bf16,
        device,
    )
    .unwrap()
}

#[test]
fn experts_train_in_f32_beside_a_base_frozen_in_bf16() {
    use burn::tensor::DType;
    let _g = testkit::device_rng_lock();
    let device = Device::flex().autodiff();
    let base = bf16_v2_lite(&device);
    let cfg: ExpertConfig = serde_json::from_str(
        r#"{"experts": {"1": [0, 3], "2": [5]}, "shared_experts": false, "non_expert_modules": false}"#,
    )
    .unwrap();
    let trainable = |p: &str| cfg.is_trainable(p);
    let model = trainer::params::cast_where(base, DType::F32, trainable);
    let before = trainer::params::inventory(&model);
    let snapshot = |m: &moe_arch::deepseek_v2::DeepseekV2Lm| -> Vec<(String, DType, Vec<f32>)> {
        let mut out = Vec::new();
        struct V<'a>(Vec<String>, &'a mut Vec<(String, DType, Vec<f32>)>);
        impl burn::module::ModuleVisitor for V<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.0.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.0.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                let t = p.val();
                let v = t
                    .clone()
                    .cast(DType::F32)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                self.1.push((self.0.join("."), t.dtype(), v));
            }
        }
        m.visit(&mut V(Vec::new(), &mut out));
        out
    };
    let start = snapshot(&model);
    assert_eq!(before.len(), start.len());
    let out = Trainer::new(TrainerConfig::new(3).with_lr(1e-2), &device)
        .with_trainable(trainable)
        .fit(
            model,
            &mut V2Task {
                device: device.clone(),
            },
        )
        .unwrap();
    let end = snapshot(&out.model);
    let mut moved = 0;
    for ((path, dt0, v0), (_, dt1, v1)) in start.iter().zip(&end) {
        assert_eq!(dt0, dt1, "{path}");
        if trainable(path) {
            assert_eq!(*dt0, DType::F32, "{path}");
            moved += usize::from(v0 != v1);
        } else {
            assert_eq!(*dt0, DType::BF16, "{path}");
            assert!(v0 == v1, "{path} moved");
        }
    }
    // 3 experts × 3 matrices, every one updated.
    assert_eq!(moved, 9);
}

#[test]
fn lora_pairs_train_in_f32_beside_a_base_held_in_bf16() {
    use burn::tensor::DType;
    let _g = testkit::device_rng_lock();
    let device = Device::flex().autodiff();
    let base = bf16_v2_lite(&device);
    let lora = Lora::new(base, &LoraConfig::default(), &device).unwrap();
    let b0: Vec<f32> = lora.pairs[0]
        .b
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let out = Trainer::new(TrainerConfig::new(2).with_lr(1e-2), &device)
        .with_trainable(Lora::<moe_arch::deepseek_v2::DeepseekV2Lm>::is_lora)
        .fit(
            lora,
            &mut V2Task {
                device: device.clone(),
            },
        )
        .unwrap();
    let pair = &out.model.pairs[0];
    assert_eq!(pair.b.val().dtype(), DType::F32);
    let b1: Vec<f32> = pair.b.val().into_data().try_to_vec::<f32>().unwrap();
    assert_ne!(b0, b1, "the LoRA pair did not train");
    assert_eq!(
        out.model.merged().embed_tokens.weight.val().dtype(),
        DType::BF16
    );
}
