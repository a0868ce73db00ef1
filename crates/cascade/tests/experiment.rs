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
    // threshold 1.0: no member's top probability exceeds it, so every example reaches the last
    let cfg = CascadeConfig::quick().with_thresholds(vec![0.6, 1.0]);
    let r = run(&cfg, &mut ctx).unwrap();
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
    // one result per seed; difficulty labels for each non-last member
    let tasks = m["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), cfg.seeds.len());
    assert_eq!(
        tasks[0]["hard_share"].as_array().unwrap().len(),
        cfg.members.len() - 1
    );
    // the entropy sweep ends at ln C, where every example leaves at the first layer
    let entropy = curves
        .iter()
        .find(|c| c[0].as_str().unwrap().contains("DeeBERT"))
        .unwrap()[1]
        .as_array()
        .unwrap();
    let last = entropy.last().unwrap();
    assert!((last["setting"].as_f64().unwrap() - 2f64.ln()).abs() < 1e-9);
    assert!(
        (last["layer_speedup"].as_f64().unwrap() - 6.0).abs() < 1e-9,
        "{last}"
    );
    // both cascades end in the one shared large member: measured once, and at threshold 1.0 both
    // cascades answer exactly as it does alone
    let models = tasks[0]["models"].as_array().unwrap();
    assert_eq!(models.len(), 2 * cfg.members.len() - 1);
    let large = models[cfg.members.len() - 1]["accuracy"].as_f64().unwrap();
    for name in ["cascade (3 members)", "cascade+DAR (3 members)"] {
        let pts = curves.iter().find(|c| c[0] == name).unwrap()[1]
            .as_array()
            .unwrap();
        let at_one = pts.last().unwrap();
        assert_eq!(at_one["setting"].as_f64().unwrap(), 1.0);
        assert_eq!(at_one["accuracy"].as_f64().unwrap(), large, "{name}");
    }
    // every curve has an entry per compared speed-up; claims.json holds those with values
    assert_eq!(
        tasks[0]["at_speedups"].as_array().unwrap().len(),
        6 * cfg.compare_speedups.len()
    );
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("claims.json")).unwrap())
            .unwrap();
    for c in claims.as_array().unwrap() {
        assert_eq!(c["differences"].as_array().unwrap().len(), cfg.seeds.len());
    }
}

#[test]
fn accuracy_at_a_speedup_interpolates_inside_the_sweep_only() {
    use cascade::experiment::{CurvePoint, accuracy_at};
    use proptest::prelude::*;
    let pt = |x: f64, y: f64| CurvePoint {
        setting: 0.0,
        accuracy: y,
        layer_speedup: x,
        wall_speedup: x,
        exit_shares: vec![],
    };
    let pts = [pt(3.0, 0.7), pt(1.0, 0.9), pt(2.0, 0.8)];
    assert!((accuracy_at(&pts, 2.5).unwrap() - 0.75).abs() < 1e-12);
    assert_eq!(accuracy_at(&pts, 2.0), Some(0.8));
    assert_eq!(accuracy_at(&pts, 0.5), None);
    assert_eq!(accuracy_at(&pts, 3.5), None);
    proptest!(|(xs in prop::collection::vec((1.0f64..6.0, 0.0f64..1.0), 2..8), s in 1.0f64..6.0)| {
        let pts: Vec<CurvePoint> = xs.iter().map(|&(x, y)| pt(x, y)).collect();
        let lo = xs.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let hi = xs.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        match accuracy_at(&pts, s) {
            // inside the range: between the smallest and largest accuracy
            Some(a) => {
                let amin = xs.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                let amax = xs.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
                prop_assert!(s >= lo - 1e-12 && s <= hi + 1e-12);
                prop_assert!(a >= amin - 1e-9 && a <= amax + 1e-9);
            }
            None => prop_assert!(s < lo || s > hi),
        }
    });
}

#[test]
fn unknown_or_empty_task_lists_are_typed_errors() {
    let _rng = testkit::device_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = RunCtx::new(Device::flex(), dir.path(), "flex");
    for tasks in [
        vec!["sst".to_string(), "mnli".into()],
        vec!["bbc".into()],
        vec![],
    ] {
        let cfg = CascadeConfig::quick().with_tasks(tasks.clone());
        let e = run(&cfg, &mut ctx).unwrap_err();
        assert!(
            matches!(e, cascade::Error::InvalidConfig(_)),
            "{tasks:?}: {e}"
        );
    }
}

/// A small BBC-shaped folder: topic folders of `title\nbody` text files.
fn tiny_bbc(dir: &std::path::Path) {
    for (t, words) in [
        ("business", "profits shares market bank"),
        ("sport", "match goal team season"),
        ("tech", "phone software internet chips"),
    ] {
        std::fs::create_dir_all(dir.join(t)).unwrap();
        for i in 0..12 {
            std::fs::write(
                dir.join(t).join(format!("{i:03}.txt")),
                format!("{t} story {i}\nthe {words} report number {i} says the {words} rose"),
            )
            .unwrap();
        }
    }
}

#[test]
fn leaving_sst_out_keeps_bbc_split_and_results() {
    let _rng = testkit::device_rng_lock();
    let data = tempfile::tempdir().unwrap();
    tiny_bbc(data.path());
    let base = CascadeConfig::quick()
        .with_seeds(vec![1])
        .with_bbc_dir(Some(data.path().to_string_lossy().into_owned()));
    let bbc_of = |cfg: &CascadeConfig| -> serde_json::Value {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = RunCtx::new(Device::flex(), dir.path(), "flex");
        run(cfg, &mut ctx).unwrap();
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("metrics.json")).unwrap(),
        )
        .unwrap();
        let tasks = m["tasks"].as_array().unwrap().clone();
        let bbc: Vec<_> = tasks.into_iter().filter(|t| t["task"] == "bbc").collect();
        assert_eq!(bbc.len(), 1);
        bbc[0].clone()
    };
    let both = bbc_of(&base);
    let alone = bbc_of(&base.clone().with_tasks(vec!["bbc".into()]));
    assert_eq!(both["sizes"], alone["sizes"]);
    assert_eq!(both["hard_share"], alone["hard_share"]);
    // accuracy and ECE of every model alone (ECE reads every test confidence, so a different
    // split or different weights show), and every curve's accuracy and exits; wall clock differs
    let models = |t: &serde_json::Value| -> Vec<(f64, f64)> {
        t["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["accuracy"].as_f64().unwrap(), m["ece"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(models(&both), models(&alone));
    let curves = |t: &serde_json::Value| -> Vec<(f64, f64, String)> {
        t["curves"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c[1].as_array().unwrap().clone())
            .map(|p| {
                (
                    p["accuracy"].as_f64().unwrap(),
                    p["layer_speedup"].as_f64().unwrap(),
                    p["exit_shares"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(curves(&both), curves(&alone));
}
