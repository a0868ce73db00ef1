//! The `cascade` experiment at its quick size, offline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use cascade::experiment::{CascadeConfig, run};
use trainer::RunCtx;

#[test]
fn quick_offline_run_writes_curves_and_plots() {
    let _rng = testkit::device_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = RunCtx::new(Device::flex(), dir.path(), "flex");
    let r = run(&CascadeConfig::quick(), &mut ctx).unwrap();
    for f in [
        "metrics.json",
        "report.md",
        "sst_layer_speedup.svg",
        "sst_wall_speedup.svg",
        "sst_reliability.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    assert!(r.table_md.contains("small-L1"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap())
            .unwrap();
    let curves = m["tasks"][0]["curves"].as_array().unwrap();
    // cascade, its pair, cascade+DAR, its pair, entropy, patience.
    assert_eq!(curves.len(), 6);
}
