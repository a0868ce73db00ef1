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
}
