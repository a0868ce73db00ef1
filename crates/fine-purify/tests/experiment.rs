//! The `fine-purify` experiment at its quick size, offline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use fine_purify::experiment::{FinePurifyConfig, run};
use trainer::RunCtx;

#[test]
fn quick_offline_run_reports_every_defense() {
    let _rng = testkit::device_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = RunCtx::new(Device::flex(), dir.path(), "flex");
    let r = run(&FinePurifyConfig::quick(), &mut ctx).unwrap();
    assert!(dir.path().join("sst_rho_sweep.svg").exists());
    for d in [
        "poisoned (no defense)",
        "clean model (reference)",
        "fine-tuning",
        "fine-pruning + E-PUR",
        "fine-mixing",
        "fine-purifying + E-PUR",
        "ablation: 1/H only",
    ] {
        assert!(r.table_md.contains(d), "{d} missing");
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["results"].as_array().unwrap().len(), 11);
    // ρ chosen for the seed, by the rule, among the swept values or 1 (none passes)
    let chosen = m["chosen_rho"].as_array().unwrap();
    assert_eq!(chosen.len(), 1);
    for k in ["purifying", "mixing"] {
        let r = chosen[0][k].as_f64().unwrap();
        assert!(r == 0.5 || r == 1.0, "{k}: {r}");
    }
    // the ASR set is topped up to n_asr from held-out non-target inputs (the 32 test inputs
    // hold about 16 of them)
    assert!(m["asr_inputs"][0][1].as_u64().unwrap() >= 24);
    // the four claims of the task, one paired difference per seed
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("claims.json")).unwrap())
            .unwrap();
    let claims = claims.as_array().unwrap();
    assert_eq!(claims.len(), 4);
    for c in claims {
        assert!(
            c["id"].as_str().unwrap().starts_with("sst-purifying-"),
            "{c}"
        );
        assert_eq!(c["differences"].as_array().unwrap().len(), 1, "{c}");
    }
}
