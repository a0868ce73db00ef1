//! The `math-shepherd` experiment at its quick size, offline (synthetic problems): every
//! artefact is written, every seed trains every reward model, and the claims pair the seeds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use prm::experiment::{MathShepherdConfig, RmKind, claims, run};
use trainer::RunCtx;

#[test]
fn quick_run_trains_every_reward_model_per_seed_and_pairs_the_claims() {
    let _g = testkit::device_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = RunCtx::new(Device::flex(), dir.path(), "flex");
    let cfg = MathShepherdConfig::quick();
    let report = run(&cfg, &mut ctx).unwrap();
    for f in [
        "metrics.json",
        "report.md",
        "config.json",
        "claims.json",
        "candidates.jsonl",
        "annotations.jsonl",
        "accuracy_vs_n.svg",
        "ppo_reward.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    assert!(report.table_md.contains("PRM (true labels)"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap())
            .unwrap();
    let seeds = m["seeds"].as_array().unwrap();
    assert_eq!(seeds.len(), cfg.seeds.len());
    for s in seeds {
        // all five reward models (true labels: synthetic; pairwise: weight 1 by default)
        let losses = s["rm_final_loss"].as_object().unwrap();
        for k in RmKind::ALL {
            assert!(losses[k.key()].as_f64().unwrap().is_finite(), "{k:?}");
        }
        // SC, five reward models, SC+ORM, SC+PRM, pass@N; each at every N
        let rows = s["verification"].as_array().unwrap();
        assert_eq!(rows.len(), 9 * cfg.n_values.len());
        for r in rows {
            let a = r["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&a), "{r}");
        }
        assert!(s["ppo"].is_array(), "{s}");
    }
    // Self-consistency and pass@N use no reward model: the same for every seed.
    let row = |s: &serde_json::Value, method: &str| -> Vec<f64> {
        s["verification"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == method)
            .map(|r| r["accuracy"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(row(&seeds[0], "SC"), row(&seeds[1], "SC"));
    assert_eq!(row(&seeds[0], "pass@N"), row(&seeds[1], "pass@N"));
    // Every candidate carries every reward model's score.
    let first = std::fs::read_to_string(dir.path().join("candidates.jsonl")).unwrap();
    let c: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(c["scores"].as_object().unwrap().len(), RmKind::ALL.len());
    // The claims: declared before the run, each judged on one difference per seed (those
    // whose sides have values: the within-problem AUC needs a problem with right and wrong
    // candidates).
    let judged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("claims.json")).unwrap())
            .unwrap();
    let judged = judged.as_array().unwrap();
    assert!(judged.len() >= 5, "{judged:?}");
    let declared: Vec<String> = claims().into_iter().map(|c| c.id).collect();
    for c in judged {
        assert!(declared.contains(&c["id"].as_str().unwrap().to_string()));
        assert_eq!(c["differences"].as_array().unwrap().len(), 2, "{c}");
    }
}

#[test]
fn bad_seed_and_pair_settings_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in [
        MathShepherdConfig::quick().with_seeds(vec![]),
        MathShepherdConfig::quick().with_rm_pair_weight(-1.0),
        MathShepherdConfig::quick().with_rm_pair_weight(f64::NAN),
    ] {
        let mut ctx = RunCtx::new(Device::flex(), dir.path(), "flex");
        let err = run(&cfg, &mut ctx).unwrap_err();
        assert!(matches!(err, prm::Error::InvalidConfig(_)), "{err}");
    }
    assert!(!dir.path().join("metrics.json").exists());
}
