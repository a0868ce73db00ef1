//! Snapshots, the Fisher, the ranking and the purification.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use burn::module::{Module, Param};
use burn::prelude::*;
use fine_purify::attack::{Attack, attack_success_rate, poison};
use fine_purify::epur::epur_words;
use fine_purify::fisher::fisher_diagonal;
use fine_purify::purify::top_k;
use fine_purify::{Entry, Error, PurifyConfig, Scope, Score, Snapshot, purify};
use proptest::prelude::*;

#[derive(Module, Debug)]
struct Tiny {
    w: Param<Tensor<1>>,
    inner: Vec<burn::nn::Linear>,
}

fn tiny(d: &Device) -> Tiny {
    Tiny {
        w: Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.5f32, -1.0, 2.0], [3]),
            d,
        )),
        inner: vec![burn::nn::LinearConfig::new(2, 2).init(d)],
    }
}

fn snap(path: &str, data: Vec<f32>) -> Snapshot {
    Snapshot {
        entries: vec![Entry {
            path: path.into(),
            shape: vec![data.len()],
            data,
        }],
    }
}

#[test]
fn snapshots_round_trip_and_mismatches_name_the_parameter() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex();
    let m = tiny(&d);
    let s = Snapshot::of(&m).unwrap();
    assert_eq!(
        s.entries
            .iter()
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        vec!["w", "inner.0.weight", "inner.0.bias"]
    );
    let mut s2 = s.clone();
    s2.entries[0].data = vec![9.0, 8.0, 7.0];
    let m2 = s2.write_into(m.clone()).unwrap();
    assert_eq!(Snapshot::of(&m2).unwrap(), s2);
    let bad = snap("nope", vec![1.0]);
    let e = bad.write_into(m.clone()).unwrap_err();
    assert!(matches!(e, Error::Mismatch { ref path, .. } if path == "nope"));
    let bad = snap("w", vec![1.0, 2.0]);
    assert!(bad.write_into(m).unwrap_err().to_string().contains("'w'"));
    assert!(s.minus(&snap("w", vec![0.0; 3])).is_err());
}

#[test]
fn the_fisher_is_the_mean_squared_gradient() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex().autodiff();
    let m = tiny(&d);
    // L_i = (w · x_i)², dL/dw = 2 (w · x_i) x_i.
    let xs = [[1.0f32, 0.0, 1.0], [0.0, 2.0, 1.0]];
    let f = fisher_diagonal(&m, 2, |m: &Tiny, i| {
        let x = Tensor::<1>::from_data(TensorData::new(xs[i].to_vec(), [3]), &d);
        Ok((m.w.val() * x).sum().powi_scalar(2).reshape([1]))
    })
    .unwrap();
    let w = [0.5f32, -1.0, 2.0];
    let mut want = [0.0f32; 3];
    for x in xs {
        let dot: f32 = w.iter().zip(x).map(|(a, b)| a * b).sum();
        for j in 0..3 {
            want[j] += (2.0 * dot * x[j]).powi(2) / 2.0;
        }
    }
    for j in 0..3 {
        assert!(
            (f.entries[0].data[j] - want[j]).abs() < 1e-4,
            "{:?} vs {want:?}",
            f.entries[0].data
        );
    }
    // Parameters outside the loss have a zero Fisher.
    assert!(f.entries[1].data.iter().all(|&v| v == 0.0));
}

proptest! {
    #[test]
    fn top_k_is_the_k_largest(v in proptest::collection::vec(-5.0f32..5.0, 0..200), k in 0usize..220) {
        let got = top_k(&v, k);
        let k = k.min(v.len());
        prop_assert_eq!(got.len(), k);
        let mut sorted = v.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut vals: Vec<f32> = got.iter().map(|&i| v[i]).collect();
        vals.sort_by(|a, b| b.total_cmp(a));
        prop_assert_eq!(vals, sorted[..k].to_vec());
        let mut ids = got.clone(); ids.sort(); ids.dedup();
        prop_assert_eq!(ids.len(), k);
    }

    #[test]
    fn purification_resets_exactly_the_top_fraction(
        pre in proptest::collection::vec(-1.0f32..1.0, 10..60),
        seed in 0u64..100,
        rho in 0.0f64..1.0,
        per_tensor in any::<bool>(),
    ) {
        let mut rng = trainer::Rng::seed_from(seed);
        let n = pre.len();
        let ft: Vec<f32> = pre.iter().map(|x| x + (rng.below(100) as f32 - 50.0) / 50.0).collect();
        let h: Vec<f32> = (0..n).map(|_| 0.01 + rng.below(100) as f32 / 100.0).collect();
        let (p, f, h) = (snap("a", pre.clone()), snap("a", ft.clone()), snap("a", h.clone()));
        let cfg = PurifyConfig { scope: if per_tensor { Scope::PerTensor } else { Scope::Global }, ..PurifyConfig::diffusion(rho) };
        let (out, stats) = purify(&p, &f, Some(&h), &cfg, |_| false, &mut rng).unwrap();
        let k = ((1.0 - rho) * n as f64).round() as usize;
        prop_assert_eq!(stats.reset, k);
        let reset: Vec<usize> = (0..n).filter(|&i| out.entries[0].data[i] == pre[i] && ft[i] != pre[i]).collect();
        let kept: Vec<usize> = (0..n).filter(|&i| out.entries[0].data[i] == ft[i] && ft[i] != pre[i]).collect();
        let r = |i: usize| (ft[i] - pre[i]).powi(2) / (h.entries[0].data[i] + 1e-30);
        // Every reset dimension scores at least as high as every kept one.
        for &i in &reset { for &j in &kept { prop_assert!(r(i) >= r(j) * (1.0 - 1e-6)); } }
    }
}

#[test]
fn extremes_kept_tensors_and_random_masks() {
    let mut rng = trainer::Rng::seed_from(3);
    let pre = Snapshot {
        entries: vec![
            Entry {
                path: "enc".into(),
                shape: vec![1000],
                data: vec![0.0; 1000],
            },
            Entry {
                path: "head".into(),
                shape: vec![2],
                data: vec![0.0; 2],
            },
        ],
    };
    let mut ft = pre.clone();
    for e in &mut ft.entries {
        for x in &mut e.data {
            *x = 1.0;
        }
    }
    let h = ft.clone();
    let keep = |p: &str| p == "head";
    let (o, _) = purify(
        &pre,
        &ft,
        Some(&h),
        &PurifyConfig::diffusion(1.0),
        keep,
        &mut rng,
    )
    .unwrap();
    assert_eq!(o, ft);
    let (o, s) = purify(
        &pre,
        &ft,
        Some(&h),
        &PurifyConfig::diffusion(0.0),
        keep,
        &mut rng,
    )
    .unwrap();
    assert_eq!(s.reset, 1000);
    assert!(o.entries[0].data.iter().all(|&x| x == 0.0));
    assert_eq!(o.entries[1].data, vec![1.0, 1.0]);
    let cfg = PurifyConfig {
        score: Score::Random,
        ..PurifyConfig::diffusion(0.7)
    };
    let (_, s) = purify(&pre, &ft, None, &cfg, keep, &mut rng).unwrap();
    assert!((s.reset as f64 / 1000.0 - 0.3).abs() < 0.06, "{}", s.reset);
    assert!(
        purify(
            &pre,
            &ft,
            None,
            &PurifyConfig::diffusion(0.5),
            keep,
            &mut rng
        )
        .is_err()
    );
    assert!(
        purify(
            &pre,
            &ft,
            Some(&h),
            &PurifyConfig::diffusion(1.5),
            keep,
            &mut rng
        )
        .is_err()
    );
}

#[test]
fn epur_finds_a_drifted_rare_word() {
    let v = 6;
    let pre = Entry {
        path: "emb".into(),
        shape: vec![v, 2],
        data: vec![0.0; 2 * v],
    };
    let mut ft = pre.clone();
    for k in 0..v {
        ft.data[2 * k] = 0.1;
    }
    ft.data[2 * 4] = 1.0; // word 4 drifted
    ft.data[2 * 2] = 1.0; // word 2 drifted but frequent
    let freq = [100, 100, 5000, 100, 1, 100];
    assert_eq!(epur_words(&pre, &ft, &freq, 3.0, 1).unwrap(), vec![4]);
    assert!(epur_words(&pre, &ft, &freq[..3], 3.0, 1).is_err());
}

#[test]
fn poisoning_relabels_the_requested_share_with_triggers() {
    let mut rng = trainer::Rng::seed_from(1);
    let items: Vec<(String, usize)> = (0..100)
        .map(|i| (format!("sentence number {i} here"), i % 2))
        .collect();
    let (p, flag) = poison(&items, 0.1, 1, &Attack::rare_words(), usize::MAX, &mut rng);
    assert_eq!(flag.iter().filter(|&&f| f).count(), 10);
    for (i, f) in flag.iter().enumerate() {
        if *f {
            assert_eq!(items[i].1, 0);
            assert_eq!(p[i].1, 1);
            assert!(
                ["cf", "mn", "bb", "tq", "mb"]
                    .iter()
                    .any(|w| p[i].0.split(' ').any(|x| x == *w))
            );
        } else {
            assert_eq!(p[i], items[i]);
        }
    }
    assert_eq!(attack_success_rate(&[1, 1, 0, 1], 1), 0.75);
}

#[test]
fn triggers_stay_inside_the_window_that_truncation_keeps() {
    let attack = Attack::rare_words();
    let long: String = (0..400).map(|i| format!("w{i} ")).collect();
    let short = "a short sentence of six words";
    for seed in 0..50 {
        let mut rng = trainer::Rng::seed_from(seed);
        let t = attack.apply_within(&long, 10, &mut rng);
        let at = t
            .split(' ')
            .position(|w| ["cf", "mn", "bb", "tq", "mb"].contains(&w))
            .unwrap();
        assert!(at <= 10, "trigger at word {at}");
        // a text shorter than the window: the same draws as `apply`
        let a = attack.apply_within(short, 10, &mut trainer::Rng::seed_from(seed));
        let b = attack.apply(short, &mut trainer::Rng::seed_from(seed));
        assert_eq!(a, b);
    }
}
