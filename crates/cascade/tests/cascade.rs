//! Dynamic inference agrees with running every member (or layer) on every example.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use burn::prelude::*;
use burn::tensor::activation::softmax;
use cascade::early_exit::{EarlyExit, ExitRule};
use cascade::{Cascade, Member, Pooling};
use plm::bert::BertConfig;
use proptest::prelude::*;

fn bert(layers: usize, d: &Device) -> plm::bert::Bert {
    BertConfig::new(50, 16, layers, 2, 32)
        .with_max_position_embeddings(32)
        .with_with_pooler(true)
        .init(d)
        .unwrap()
}

/// A right-padded batch with the given lengths.
fn batch(lens: &[usize], d: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let s = *lens.iter().max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for (r, &l) in lens.iter().enumerate() {
        for t in 0..s {
            ids.push(if t < l {
                ((r * 7 + t * 3) % 49 + 1) as i64
            } else {
                0
            });
            mask.push(i64::from(t < l));
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [lens.len(), s]), d),
        Tensor::from_data(TensorData::new(mask, [lens.len(), s]), d),
    )
}

fn probs(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let [b, c] = logits.dims();
    let v = softmax(logits, 1).into_data().try_to_vec::<f32>().unwrap();
    (0..b).map(|i| v[i * c..(i + 1) * c].to_vec()).collect()
}

fn top(p: &[f32]) -> (usize, f32) {
    p.iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn compacting_cascade_equals_the_run_everything_reference(
        seed in 0u64..500,
        lens in proptest::collection::vec(1usize..12, 1..9),
        tau in 0.3f64..0.7,
        pooling in prop_oneof![Just(Pooling::Mean), Just(Pooling::Cls)],
    ) {
        let _g = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(seed);
        let c = Cascade::new(vec![
            Member::new(bert(1, &d), 3, pooling, 0.0, &d),
            Member::new(bert(2, &d), 3, pooling, 0.0, &d),
            Member::new(bert(3, &d), 3, pooling, 0.0, &d),
        ]).unwrap();
        let (ids, mask) = batch(&lens, &d);
        let th = [tau, tau + 0.1];
        let out = c.infer(ids.clone(), mask.clone(), &th).unwrap();
        let all: Vec<_> = c.forward_all(ids, mask).into_iter().map(probs).collect();
        for r in 0..lens.len() {
            // The reference decision, skipping rows too close to a threshold to call.
            let mut exit = 2;
            let mut close = false;
            for (i, &t) in th.iter().enumerate() {
                let (_, conf) = top(&all[i][r]);
                close |= (f64::from(conf) - t).abs() < 1e-4;
                if f64::from(conf) > t { exit = i; break; }
            }
            if close { continue; }
            prop_assert_eq!(out.exit_at[r], exit);
            let (pred, conf) = top(&all[exit][r]);
            prop_assert_eq!(out.predictions[r], pred);
            prop_assert!((out.confidence[r] - conf).abs() < 1e-4);
            prop_assert_eq!(out.layers[r], [1, 3, 6][exit]);
        }
    }
}

#[test]
fn early_exits_follow_entropy_and_patience() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex();
    d.seed(4);
    let ee = EarlyExit::new(bert(4, &d), 2, Pooling::Mean, 0.0, &d);
    let lens = [3, 9, 5, 7, 1];
    let (ids, mask) = batch(&lens, &d);
    // A huge entropy threshold: every example leaves after layer 1; zero: all run to the end.
    let o = ee
        .infer(ids.clone(), mask.clone(), ExitRule::Entropy(10.0))
        .unwrap();
    assert!(o.layers.iter().all(|&l| l == 1));
    // exactly ln C, the largest entropy there is: every example too, even a uniform one
    let o = ee
        .infer(ids.clone(), mask.clone(), ExitRule::Entropy(2f64.ln()))
        .unwrap();
    assert!(o.layers.iter().all(|&l| l == 1));
    let o = ee
        .infer(ids.clone(), mask.clone(), ExitRule::Entropy(0.0))
        .unwrap();
    assert!(o.layers.iter().all(|&l| l == 4));
    // Patience 1: leave at the first layer whose prediction repeats the previous one.
    let all: Vec<_> = ee
        .forward_all(ids.clone(), mask.clone())
        .into_iter()
        .map(probs)
        .collect();
    let o = ee.infer(ids, mask, ExitRule::Patience(1)).unwrap();
    for r in 0..lens.len() {
        let preds: Vec<usize> = all.iter().map(|p| top(&p[r]).0).collect();
        let want = (1..4).find(|&l| preds[l] == preds[l - 1]).unwrap_or(3);
        assert_eq!(o.exit_at[r], want, "row {r}: {preds:?}");
        assert_eq!(o.predictions[r], preds[want]);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex();
    assert!(Cascade::new(vec![]).is_err());
    let c = Cascade::new(vec![
        Member::new(bert(1, &d), 2, Pooling::Mean, 0.0, &d),
        Member::new(bert(2, &d), 2, Pooling::Mean, 0.0, &d),
    ])
    .unwrap();
    let (ids, mask) = batch(&[2, 3], &d);
    assert!(c.infer(ids, mask, &[]).is_err());
    // Two members cut from one encoder by clone() would be tied; fresh copies train apart.
    let shared = bert(2, &d);
    let tied = Cascade::new(vec![
        Member::new(shared.clone().truncated(1), 2, Pooling::Mean, 0.0, &d),
        Member::new(shared.clone(), 2, Pooling::Mean, 0.0, &d),
    ]);
    assert!(tied.is_err());
    let apart = Cascade::new(vec![
        Member::new(
            trainer::params::fresh_copy(shared.clone().truncated(1)),
            2,
            Pooling::Mean,
            0.0,
            &d,
        ),
        Member::new(shared, 2, Pooling::Mean, 0.0, &d),
    ]);
    assert!(apart.is_ok());
}
