//! The `wsd-formbert` experiment at its quick size, offline: outputs, and a reused encoder
//! giving the same run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use trainer::RunCtx;
use wsd_formbert::experiment::{WsdConfig, run};

fn results(dir: &std::path::Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    m["results"].clone()
}

#[test]
fn quick_run_writes_its_outputs_and_a_reused_encoder_reproduces_it() {
    let _rng = testkit::device_rng_lock();
    let first = tempfile::tempdir().unwrap();
    let cfg = WsdConfig::quick();
    run(&cfg, &mut RunCtx::new(Device::flex(), first.path(), "flex")).unwrap();
    for f in [
        "metrics.json",
        "report.md",
        "train.tsv",
        "dev.tsv",
        "test.tsv",
        "vocab.txt",
        "encoder.bpk",
        "pretraining.json",
        "pretraining_loss.svg",
        "finetuning_loss.svg",
    ] {
        assert!(first.path().join(f).exists(), "{f}");
    }
    // The declared claims, judged on per-seed differences paired by seed.
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(first.path().join("claims.json")).unwrap())
            .unwrap();
    let claims = claims.as_array().unwrap();
    assert_eq!(claims.len(), wsd_formbert::experiment::claims().len());
    for c in claims {
        let n = c["differences"].as_array().unwrap().len();
        assert_eq!(n, cfg.seeds.len(), "{c}");
        assert!(
            ["holds", "contradicted", "not_shown"].contains(&c["verdict"].as_str().unwrap()),
            "{c}"
        );
    }
    let rows = wsd_formbert::data::read_tsv(&first.path().join("test.tsv")).unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.label <= 1));

    let second = tempfile::tempdir().unwrap();
    let reuse = WsdConfig::quick()
        .with_encoder_dir(Some(first.path().to_string_lossy().into_owned()))
        .with_mlm_steps(0);
    run(
        &reuse,
        &mut RunCtx::new(Device::flex(), second.path(), "flex"),
    )
    .unwrap();
    assert!(!second.path().join("encoder.bpk").exists());
    assert_eq!(results(first.path()), results(second.path()));

    // An encoder pretrained for another split, or before the dev and test sentences were left
    // out of its pretraining, has read this run's held-out sentences: refused.
    let other_split = WsdConfig::quick()
        .with_encoder_dir(Some(first.path().to_string_lossy().into_owned()))
        .with_mlm_steps(0)
        .with_data_seed(WsdConfig::quick().data_seed + 1);
    let out = tempfile::tempdir().unwrap();
    let e = run(
        &other_split,
        &mut RunCtx::new(Device::flex(), out.path(), "flex"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("pretrain again"), "{e}");
    let stale = tempfile::tempdir().unwrap();
    for f in ["encoder.bpk", "vocab.txt"] {
        std::fs::copy(first.path().join(f), stale.path().join(f)).unwrap();
    }
    let mut stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(first.path().join("pretraining.json")).unwrap(),
    )
    .unwrap();
    assert!(stats["held_out"].is_string());
    stats.as_object_mut().unwrap().remove("held_out");
    std::fs::write(stale.path().join("pretraining.json"), stats.to_string()).unwrap();
    let old = WsdConfig::quick()
        .with_encoder_dir(Some(stale.path().to_string_lossy().into_owned()))
        .with_mlm_steps(0);
    let out = tempfile::tempdir().unwrap();
    assert!(run(&old, &mut RunCtx::new(Device::flex(), out.path(), "flex")).is_err());

    // An encoder folder without an encoder is a typed error, not a panic.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(
        first.path().join("vocab.txt"),
        empty.path().join("vocab.txt"),
    )
    .unwrap();
    let bad =
        WsdConfig::quick().with_encoder_dir(Some(empty.path().to_string_lossy().into_owned()));
    let out = tempfile::tempdir().unwrap();
    assert!(run(&bad, &mut RunCtx::new(Device::flex(), out.path(), "flex")).is_err());
}
