//! The `esft` experiment at its quick size, offline (embedded data): every artefact is written
//! and the adapters it saves apply to the base it saved.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use esft::experiment::{EsftConfig, run};
use esft::{Adapter, ExpertConfig};
use moe_arch::deepseek::DeepseekLm;
use trainer::RunCtx;

#[test]
fn quick_run_writes_its_results_and_loadable_adapters() {
    let _g = testkit::device_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = Device::flex();
    let mut ctx = RunCtx::new(d.clone(), dir.path(), "flex");
    let report = run(&EsftConfig::quick(), &mut ctx).unwrap();
    for f in [
        "metrics.json",
        "report.md",
        "config.json",
        "claims.json",
        "concentration.svg",
        "p_sweep.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    assert!(report.table_md.contains("esft-token"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap())
            .unwrap();
    // 3 tasks × (vanilla + 2 seeds × (fft, lora, gate, token, random, shared-only)).
    let results = m["results"].as_array().unwrap();
    assert_eq!(results.len(), 39);
    assert_eq!(m["overlap"].as_array().unwrap().len(), 3);
    // Every method's rate chosen on the development split, one of two per task and method.
    let search = m["lr_search"].as_array().unwrap();
    assert_eq!(search.len(), 36);
    assert_eq!(search.iter().filter(|t| t["chosen"] == true).count(), 18);
    for r in results.iter().filter(|r| r["method"] != "vanilla") {
        let chosen = search
            .iter()
            .find(|t| t["task"] == r["task"] && t["method"] == r["method"] && t["chosen"] == true)
            .unwrap();
        assert_eq!(r["lr"], chosen["lr"], "{r}");
    }
    // Tasks with answers report how often the most common one was given (a binary choice: at
    // least half; four shuffled candidates: at least a quarter); next-byte text has no answer
    // to count.
    for r in results {
        let share = r["majority_answer_share"].as_f64();
        match r["task"].as_str().unwrap() {
            "sentiment" => assert!(share.is_some_and(|s| (0.5..=1.0).contains(&s)), "{r}"),
            "arithmetic" => assert!(share.is_some_and(|s| (0.25..=1.0).contains(&s)), "{r}"),
            _ => assert!(share.is_none(), "{r}"),
        }
    }
    // The declared claims with paired evidence over the two seeds.
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("claims.json")).unwrap())
            .unwrap();
    let claims = claims.as_array().unwrap();
    assert_eq!(claims.len(), 7);
    for c in claims {
        assert_eq!(c["differences"].as_array().unwrap().len(), 2, "{c}");
    }
    for t in ["sentiment", "arithmetic", "chinese"] {
        let tdir = dir.path().join("tasks").join(t);
        ExpertConfig::read(&tdir.join("expert_config_token.json")).unwrap();
        ExpertConfig::read(&tdir.join("expert_config_random.json")).unwrap();
        assert!(tdir.join("summary.json").exists());
        // the second seed's adapters beside the first's; no scratch left from the search
        assert!(tdir.join("seed-2/esft-token").is_dir());
        assert!(!tdir.join("lr-search").exists());
    }
    let base = DeepseekLm::load_hf(&dir.path().join("base"), &d).unwrap();
    let adapter = Adapter::read(&dir.path().join("tasks/arithmetic/esft-token")).unwrap();
    let (tuned, _) = adapter.apply(&base).unwrap();
    let x = Tensor::<2, Int>::from_data(TensorData::new(vec![72i64, 105, 33], [1, 3]), &d);
    let a = tuned.forward(x.clone(), None).unwrap().logits.into_data();
    let b = base.forward(x, None).unwrap().logits.into_data();
    assert_ne!(a, b, "the adapter changed nothing");
    // Merging into the saved base checkpoint gives a full checkpoint with the same weights.
    let merged_dir = dir.path().join("merged");
    esft::adapter::merge_into_checkpoint(
        &dir.path().join("base"),
        &dir.path().join("tasks/arithmetic/esft-token"),
        &merged_dir,
        &d,
    )
    .unwrap();
    let merged = DeepseekLm::load_hf(&merged_dir, &d).unwrap();
    let x = Tensor::<2, Int>::from_data(TensorData::new(vec![72i64, 105, 33], [1, 3]), &d);
    assert_eq!(merged.forward(x, None).unwrap().logits.into_data(), a);
}

#[test]
fn quick_run_fine_tunes_a_user_deepseek_v3_checkpoint_stored_in_bf16() {
    let _g = testkit::device_rng_lock();
    use moe_arch::deepseek_v2::{DeepseekV2HfConfig, DeepseekV2Lm};
    let d = Device::flex();
    // The tiny V3 fixture's config with a byte vocabulary; random weights stored as bf16.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/deepseek_bf16/v3/config.json");
    let text = std::fs::read_to_string(fixture)
        .unwrap()
        .replace("\"vocab_size\": 97", "\"vocab_size\": 256");
    let hf: DeepseekV2HfConfig = serde_json::from_str(&text).unwrap();
    d.seed(5);
    let model =
        trainer::params::cast_where(hf.init(&d).unwrap(), burn::tensor::DType::BF16, |_| true);
    let base = tempfile::tempdir().unwrap();
    model.save_hf(&text, base.path()).unwrap();

    let out = tempfile::tempdir().unwrap();
    let mut ctx = RunCtx::new(d.clone(), out.path(), "flex");
    let cfg = EsftConfig::quick()
        .with_model_dir(Some(base.path().to_string_lossy().into_owned()))
        .with_p_sweep(vec![]);
    let report = run(&cfg, &mut ctx).unwrap();
    assert!(report.table_md.contains("esft-token"));
    // FFT wrote a full deepseek_v3 folder that loads back; the ESFT adapter applies to the base.
    let fft = out.path().join("tasks/arithmetic/fft");
    assert_eq!(
        plm::checkpoint::Architecture::detect(&fft).unwrap(),
        plm::checkpoint::Architecture::DeepseekV3
    );
    DeepseekV2Lm::load_hf(&fft, &d).unwrap();
    let base_model = DeepseekV2Lm::load_hf(base.path(), &d).unwrap();
    let adapter = Adapter::read(&out.path().join("tasks/arithmetic/esft-token")).unwrap();
    let (tuned, _) = adapter.apply(&base_model).unwrap();
    let x = Tensor::<2, Int>::from_data(TensorData::new(vec![72i64, 105, 33], [1, 3]), &d);
    let a = tuned.forward(x.clone(), None).unwrap().logits.into_data();
    let b = base_model.forward(x, None).unwrap().logits.into_data();
    assert_ne!(a, b, "the adapter changed nothing");
}

#[test]
fn a_run_trains_only_the_methods_asked_for_and_rejects_unknown_ones() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex();
    let out = tempfile::tempdir().unwrap();
    let mut ctx = RunCtx::new(d.clone(), out.path(), "flex");
    let cfg = EsftConfig::quick()
        .with_tasks(Some(vec!["sentiment".into()]))
        .with_methods(vec!["fft".into(), "esft-token".into()])
        .with_lr_multipliers(vec![1.0])
        .with_seeds(vec![1]);
    run(&cfg, &mut ctx).unwrap();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    let mut methods: Vec<&str> = metrics["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    methods.sort();
    assert_eq!(methods, ["esft-token", "fft", "vanilla"]);
    // the default readout keeps the plain likelihood readout beside it
    assert!(
        metrics["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["likelihood_readout"].is_array())
    );
    for bad in [
        cfg.clone().with_methods(vec!["fft".into(), "ia3".into()]),
        cfg.clone().with_methods(vec![]),
        cfg.clone().with_tasks(Some(vec!["topic".into()])),
        cfg.clone().with_tasks(Some(vec![])),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut ctx = RunCtx::new(d.clone(), out.path(), "flex");
        assert!(matches!(
            run(&bad, &mut ctx),
            Err(esft::Error::InvalidConfig(_))
        ));
    }
}
