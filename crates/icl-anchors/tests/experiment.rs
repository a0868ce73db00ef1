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
    // the per-seed record with the majority rate every analysis is read against
    let rec = &m["seeds"][0];
    for k in ["majority_rate", "prediction_majority", "accuracy"] {
        let v = rec[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k}: {v}");
    }
    // the declared claims whose sides were measured (two classes: no error diagnosis), one
    // paired difference per seed
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("claims.json")).unwrap())
            .unwrap();
    let claims = claims.as_array().unwrap();
    assert_eq!(claims.len(), 9, "{claims:?}");
    for c in claims {
        assert!(c["id"].as_str().unwrap().starts_with("synthetic-"), "{c}");
        assert_eq!(c["differences"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn demonstrations_reweighting_examples_and_test_inputs_never_share_a_text() {
    use icl_anchors::experiment::split_pools;
    use proptest::prelude::*;
    let cfg = ProptestConfig::with_cases(64);
    proptest!(cfg, |(
        labels in prop::collection::vec(0usize..4, 1..80),
        dup in 1usize..4,
        demos_per_class in 1usize..4,
        per_class in 0usize..4,
        n_test in 0usize..50,
        seed in any::<u64>(),
    )| {
        // texts repeat every `dup` items (and with other labels), as real data sets can
        let items: Vec<(String, usize)> = labels
            .iter()
            .enumerate()
            .map(|(i, &c)| (format!("text {}", i / dup), c))
            .collect();
        let p = split_pools(
            &items,
            4,
            demos_per_class,
            per_class,
            n_test,
            &mut trainer::Rng::seed_from(seed),
        );
        let texts = |v: &[(String, usize)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        let (d, r, t) = (texts(&p.demos), texts(&p.train), texts(&p.test));
        let mut all = [d.clone(), r.clone(), t.clone()].concat();
        let n = all.len();
        all.sort();
        all.dedup();
        prop_assert_eq!(all.len(), n, "a text drawn twice");
        // at most `demos_per_class` demonstrations and `per_class` examples per class, each
        // from the pool
        for c in 0..4 {
            prop_assert!(p.demos.iter().filter(|x| x.1 == c).count() <= demos_per_class);
            prop_assert!(p.train.iter().filter(|x| x.1 == c).count() <= per_class);
        }
        prop_assert!(p.test.len() <= n_test);
        for x in p.demos.iter().chain(&p.train).chain(&p.test) {
            prop_assert!(items.contains(x));
        }
        // demonstrations come in rounds: the k-th of a class never before another's (k-1)-th
        let mut seen = [0usize; 4];
        let rounds: Vec<usize> = p
            .demos
            .iter()
            .map(|x| {
                seen[x.1] += 1;
                seen[x.1]
            })
            .collect();
        prop_assert!(rounds.windows(2).all(|w| w[0] <= w[1]), "{:?}", rounds);
        // every class present in the pool gets its demonstration
        for c in 0..4 {
            if labels.contains(&c) {
                prop_assert!(p.demos.iter().any(|x| x.1 == c) || items.iter().filter(|x| x.1 == c).all(|x| d.contains(&x.0)));
            }
        }
    });
}
