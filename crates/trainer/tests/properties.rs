//! Properties of the schedule, the RNG and the metrics records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use trainer::{LrSchedule, Record, Rng};

fn schedule() -> impl Strategy<Value = LrSchedule> {
    prop_oneof![
        (0usize..50).prop_map(|w| LrSchedule::Constant { warmup_steps: w }),
        (0usize..50, 0.0f64..=1.0).prop_map(|(w, m)| LrSchedule::WarmupCosine {
            warmup_steps: w,
            min_ratio: m
        }),
        (
            0usize..50,
            proptest::collection::vec(0.0f64..=1.0, 0..4),
            0.01f64..1.0
        )
            .prop_map(|(w, mut ms, f)| {
                ms.sort_by(f64::total_cmp);
                LrSchedule::WarmupStepDecay {
                    warmup_steps: w,
                    milestones: ms,
                    factor: f,
                }
            }),
    ]
}

proptest! {
    #[test]
    fn learning_rate_stays_between_zero_and_the_peak(s in schedule(), total in 1usize..500, peak in 1e-6f64..1.0) {
        for step in 0..total {
            let lr = s.lr_at(step, total, peak);
            prop_assert!(lr > 0.0 && lr <= peak * (1.0 + 1e-12), "step {step}: {lr}");
        }
    }

    #[test]
    fn after_warmup_the_rate_never_rises(s in schedule(), total in 1usize..500) {
        let warm = match &s {
            LrSchedule::Constant { warmup_steps }
            | LrSchedule::WarmupCosine { warmup_steps, .. }
            | LrSchedule::WarmupStepDecay { warmup_steps, .. } => *warmup_steps,
        };
        let lrs: Vec<f64> = (warm..total.max(warm)).map(|i| s.lr_at(i, total, 1.0)).collect();
        for w in lrs.windows(2) {
            prop_assert!(w[1] <= w[0] * (1.0 + 1e-12), "{w:?}");
        }
    }

    #[test]
    fn below_is_always_in_range(seed in any::<u64>(), n in 1usize..10_000) {
        let mut r = Rng::seed_from(seed);
        for _ in 0..64 {
            prop_assert!(r.below(n) < n);
        }
    }

    #[test]
    fn uniform_floats_are_in_the_unit_interval(seed in any::<u64>()) {
        let mut r = Rng::seed_from(seed);
        for _ in 0..64 {
            let x = r.next_f64();
            prop_assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn records_round_trip_through_json(step in 0usize..1_000_000, loss in -1e6f64..1e6, lr in 0.0f64..1.0, g in 0.0f64..1e6) {
        let r = Record::Train { step, loss, lr, grad_norm: g, extra: Default::default() };
        let back: Record = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        prop_assert_eq!(back, r);
    }
}
