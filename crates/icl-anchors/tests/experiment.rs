//! The `icl-anchors` experiment at its quick size, offline (synthetic task, model trained here).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use icl_anchors::experiment::{IclAnchorsConfig, run};
use trainer::RunCtx;

#[test]
fn quick_offline_run_writes_flows_auc_and_tables() {
    let _rng = testkit::device_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = RunCtx::new(Device::flex(), dir.path(), "flex");
    let r = run(&IclAnchorsConfig::quick(), &mut ctx).unwrap();
    for f in [
        "metrics.json",
        "report.md",
        "synthetic_flows.svg",
        "synthetic_auc.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    assert!(r.table_md.contains("Hidden_anchor"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["tasks"][0]["flows"].as_array().unwrap().len(), 2);
}
