//! Prompts, flows, isolation, re-weighting and compression on tiny Llama and GPT-2 decoders.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use burn::prelude::*;
use icl_anchors::analysis::{
    class_auc, cumulative_r, flows, isolation_hooks, predict, roc_auc, saliency_flows,
};
use icl_anchors::compress::{compressed_cache, keep_only_hooks, predict_on_cache, random_anchors};
use icl_anchors::prompt::{build, label_word_ids};
use icl_anchors::reweight::Reweighting;
use icl_anchors::{CausalLm, LabelTokens, Template};
use plm::gpt2::Gpt2Config;
use plm::hooks::AttentionHooks;
use plm::llama::LlamaConfig;

/// Bytes as tokens.
fn tok(s: &str) -> icl_anchors::Result<Vec<u32>> {
    Ok(s.bytes().map(u32::from).collect())
}

fn demos() -> Vec<(String, usize)> {
    vec![("bad film".into(), 0), ("great fun".into(), 1)]
}

#[test]
fn prompts_know_where_everything_is() {
    let t = Template::sst2();
    let p = build(&tok, &t, &demos(), "so good").unwrap();
    let text = String::from_utf8(p.ids.iter().map(|&b| b as u8).collect()).unwrap();
    assert_eq!(
        text,
        "Review: bad film\nSentiment: Negative\nReview: great fun\nSentiment: Positive\nReview: so good\nSentiment:"
    );
    let word = |d: usize| {
        String::from_utf8(p.label_tokens[d].iter().map(|&i| p.ids[i] as u8).collect()).unwrap()
    };
    assert_eq!(word(0), " Negative");
    assert_eq!(word(1), " Positive");
    assert_eq!(p.query, p.ids.len() - 1);
    assert_eq!(p.label_positions(LabelTokens::First).len(), 2);
    assert!(
        p.label_tokens
            .iter()
            .flatten()
            .all(|x| p.anchor_positions.contains(x))
    );
    assert!(
        p.text_positions
            .iter()
            .all(|x| !p.anchor_positions.contains(x) && *x < p.demo_len)
    );
    assert_eq!(label_word_ids(&tok, &t).unwrap(), vec![32, 32]); // the first byte of both is a space
    assert!(build(&tok, &t, &[("x".into(), 5)], "y").is_err());
    // Text_anchor: empty texts leave only the formatting.
    let ta = build(&tok, &t, &[("".into(), 0)], "y").unwrap();
    assert!(ta.text_positions.is_empty() && ta.demo_text[0].is_empty());
}

#[test]
fn flows_follow_the_paper_normalisation() {
    // n = 4, label at 1, query 3; I = 1 everywhere below the diagonal.
    let n = 4;
    let mut i = vec![0f32; 16];
    for r in 0..n {
        for c in 0..r {
            i[r * n + c] = 1.0;
        }
    }
    let f = flows(&i, n, &[1], 3);
    assert!((f.wp - 1.0).abs() < 1e-9); // I(1,0) / p = 1 / 1
    assert!((f.pq - 1.0).abs() < 1e-9); // I(3,1) / C
    // 6 pairs below the diagonal, minus 1 (wp) and 1 (pq), over 3·4/2 − 1 − 1 = 4.
    assert!((f.ww - 1.0).abs() < 1e-9);
    let nf = f.normalised();
    assert!((nf.wp + nf.pq + nf.ww - 1.0).abs() < 1e-12);
}

#[test]
fn auc_and_r_curve() {
    assert_eq!(
        roc_auc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]),
        Some(1.0)
    );
    assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
    assert_eq!(roc_auc(&[0.5], &[true]), None);
    let s = vec![
        vec![0.8, 0.1, 0.1],
        vec![0.1, 0.8, 0.1],
        vec![0.1, 0.1, 0.8],
    ];
    assert_eq!(class_auc(&s, &[0, 1, 2], 3), Some(1.0));
    let r = cumulative_r(&[0.5, 0.7, 0.9]);
    assert!((r[2] - 1.0).abs() < 1e-12 && (r[1] - 1.0 / 3.0).abs() < 1e-12);
}

fn check_model<M: CausalLm>(m: &M, d: &Device) {
    let t = Template::sst2();
    let p = build(&tok, &t, &demos(), "so good").unwrap();
    let ids = [b'N' as u32, b'P' as u32];
    let n = p.ids.len();
    let (nl, nh) = (m.n_layers(), m.n_heads());
    // Isolation: a label position attends only to itself in the isolated layers.
    let labels = p.label_positions(LabelTokens::First);
    let hooks = isolation_hooks(n, &labels, &[0], nh, d);
    let v: Vec<i64> = p.ids.iter().map(|&x| i64::from(x)).collect();
    let x = Tensor::<2, Int>::from_data(TensorData::new(v, [1, n]), d);
    let (_, atts) = m.forward_hooked(x.clone(), &hooks);
    let a0 = atts[0]
        .clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    for h in 0..nh {
        for &pk in &labels {
            let self_w = a0[(h * n + pk) * n + pk];
            assert!(
                (self_w - 1.0).abs() < 1e-5,
                "label row keeps {self_w} on itself"
            );
        }
    }
    // Re-weighting at β = 0 is the model itself.
    let base = predict(m, &p, &ids, &AttentionHooks::none(), 5, d).unwrap();
    let rw = Reweighting::new(nl, nh, 2, d);
    let with = predict(m, &p, &ids, &rw.hooks(&p).unwrap(), 5, d).unwrap();
    for (a, b) in base.probs.iter().zip(&with.probs) {
        assert!((a - b).abs() < 1e-6);
    }
    assert_eq!(base.attention_to_labels.len(), nl);
    // Keeping every demonstration position changes nothing; keeping none but anchors hides text.
    let all: Vec<usize> = (0..p.demo_len).collect();
    let same = predict(m, &p, &ids, &keep_only_hooks(&p, &all, nl, nh, d), 5, d).unwrap();
    for (a, b) in base.probs.iter().zip(&same.probs) {
        assert!((a - b).abs() < 1e-6);
    }
    let hooks = keep_only_hooks(&p, &p.anchor_positions, nl, nh, d);
    let (_, atts) = m.forward_hooked(x, &hooks);
    let last = atts[nl - 1]
        .clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    for &tp in &p.text_positions {
        assert!(last[p.query * n + tp] < 1e-6);
    }
    let mut rng = trainer::Rng::seed_from(1);
    assert_eq!(random_anchors(&p, &mut rng).len(), p.anchor_positions.len());
}

#[test]
fn hooks_work_on_llama_and_gpt2() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex();
    d.seed(3);
    let llama = LlamaConfig::new(256, 16, 2, 2, 1, 24)
        .with_max_seq_len(256)
        .init(&d)
        .unwrap();
    check_model(&llama, &d);
    // The two-pass KV compression equals the masked single pass.
    let p = build(&tok, &Template::sst2(), &demos(), "so good").unwrap();
    let ids = [b'N' as u32, b'P' as u32];
    let masked = predict(
        &llama,
        &p,
        &ids,
        &keep_only_hooks(&p, &p.anchor_positions, 2, 2, &d),
        5,
        &d,
    )
    .unwrap();
    let cache = compressed_cache(&llama, &p, &p.anchor_positions, &d);
    assert_eq!(cache.n_keys(), p.anchor_positions.len());
    let cached = predict_on_cache(&llama, &cache, &p, &ids, 5, &d).unwrap();
    for (a, b) in masked.probs.iter().zip(&cached.probs) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    assert_eq!(masked.top_words, cached.top_words);
    let gpt2 = Gpt2Config::new(256, 16, 2, 2, 32)
        .with_max_positions(256)
        .init(&d)
        .unwrap();
    check_model(&gpt2, &d);
}

#[test]
fn saliency_flows_and_reweighting_gradients() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex().autodiff();
    d.seed(5);
    let m = LlamaConfig::new(256, 16, 3, 2, 2, 24)
        .with_max_seq_len(256)
        .init(&d)
        .unwrap();
    let p = build(&tok, &Template::sst2(), &demos(), "so good").unwrap();
    let ids = [b'N' as u32, b'P' as u32];
    let f = saliency_flows(&m, &p, &ids, 1, LabelTokens::First, &d).unwrap();
    assert_eq!(f.len(), 3);
    assert!(
        f.iter()
            .all(|x| x.wp.is_finite() && x.pq > 0.0 && x.ww > 0.0)
    );
    let rw = Reweighting::new(3, 2, 2, &d);
    let loss = rw.loss(&m, &p, &ids, 1).unwrap();
    let g = rw.beta.val().grad(&loss.backward()).unwrap();
    let gv = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert!(gv.iter().any(|v| v.abs() > 0.0), "β gets no gradient");
}

#[test]
fn contextual_calibration_divides_out_the_content_free_prior_in_predictions_and_loss() {
    use icl_anchors::Calibration;
    use icl_anchors::calibrate::CONTENT_FREE;
    let _g = testkit::device_rng_lock();
    let d = Device::flex().autodiff();
    d.seed(11);
    let m = LlamaConfig::new(256, 16, 2, 2, 2, 24)
        .with_max_seq_len(256)
        .init(&d)
        .unwrap();
    let ids = [b'N' as u32, b'P' as u32];
    let none = AttentionHooks::none();
    let cf: Vec<_> = CONTENT_FREE
        .iter()
        .map(|q| build(&tok, &Template::sst2(), &demos(), q).unwrap())
        .collect();
    let cal = Calibration::estimate(&m, &cf, &ids, &d).unwrap();
    // the prior by hand: mean of the content-free label distributions
    let mut prior = [0f64; 2];
    for p in &cf {
        let x = predict(&m, p, &ids, &none, 0, &d).unwrap();
        for c in 0..2 {
            prior[c] += f64::from(x.probs[c]) / 3.0;
        }
    }
    let got = cal.prior().unwrap();
    for c in 0..2 {
        assert!(
            (f64::from(got[c]) - prior[c]).abs() < 1e-5,
            "{got:?} vs {prior:?}"
        );
    }
    let p = build(&tok, &Template::sst2(), &demos(), "so good").unwrap();
    let raw = predict(&m, &p, &ids, &none, 3, &d).unwrap();
    let calibrated = cal.apply(raw.clone()).unwrap();
    let r: Vec<f64> = (0..2).map(|c| f64::from(raw.probs[c]) / prior[c]).collect();
    let want1 = r[1] / (r[0] + r[1]);
    assert!((f64::from(calibrated.probs[1]) - want1).abs() < 1e-5);
    assert_eq!(calibrated.class, usize::from(r[1] > r[0]));
    assert_eq!(calibrated.top_words, raw.top_words);
    // the re-weighting loss at β = 0 is the calibrated cross-entropy, and differs from the raw one
    let rw = Reweighting::new(2, 2, 2, &d);
    let scalar = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0];
    let l_cal = scalar(rw.loss_calibrated(&m, &p, &ids, 1, &cal).unwrap());
    let l_raw = scalar(rw.loss(&m, &p, &ids, 1).unwrap());
    assert!(
        (f64::from(l_cal) + want1.ln()).abs() < 1e-4,
        "{l_cal} vs {}",
        -want1.ln()
    );
    assert!((f64::from(l_raw) + f64::from(raw.probs[1]).ln()).abs() < 1e-4);
    assert!(
        (l_cal - l_raw).abs() > 1e-6,
        "calibration did not reach the loss"
    );
}

#[test]
fn a_calibration_is_kept_only_where_it_reads_held_out_inputs_at_least_as_well() {
    use icl_anchors::Calibration;
    use icl_anchors::analysis::Prediction;
    let pred = |p1: f32| Prediction {
        class: usize::from(p1 > 0.5),
        probs: vec![1.0 - p1, p1],
        top_words: vec![],
        attention_to_labels: vec![],
    };
    // raw: always class 1 (p1 0.6..0.9); the prior 0.2/0.8 moves the two weakest to class 0
    let raw: Vec<_> = [0.6, 0.7, 0.85, 0.9].into_iter().map(pred).collect();
    let cal = Calibration::from_probs(&[vec![0.2, 0.8]]).unwrap();
    // gold agrees with the calibrated reading: kept
    let (kept, accs) = cal.clone().checked_on(&raw, &[0, 0, 1, 1]).unwrap();
    assert_eq!(accs, (0.5, 1.0));
    assert_eq!(kept, cal);
    // gold agrees with the raw reading: dropped
    let (kept, accs) = cal.clone().checked_on(&raw, &[1, 1, 1, 1]).unwrap();
    assert_eq!(accs, (1.0, 0.5));
    assert_eq!(kept, Calibration::identity());
    // a tie keeps it; bad input is an error
    let (kept, accs) = cal.clone().checked_on(&raw, &[0, 1, 1, 0]).unwrap();
    assert_eq!((kept.prior().is_some(), accs), (true, (0.5, 0.5)));
    assert!(cal.clone().checked_on(&raw, &[0, 1]).is_err());
    assert!(cal.checked_on(&[], &[]).is_err());
}

#[test]
fn pca_finds_the_dominant_direction_and_diagnosis_reads_pairs() {
    use icl_anchors::diagnose::{diagnose, pca, pearson};
    // Points along (1, 1, 0) with small noise along (0, 0, 1).
    let x: Vec<Vec<f64>> = (0..20)
        .map(|i| {
            let t = i as f64 - 10.0;
            vec![t, t, 0.1 * ((i % 3) as f64 - 1.0)]
        })
        .collect();
    let (v, s) = pca(&x, 2, 200);
    let r = 1.0 / 2f64.sqrt();
    assert!(
        (v[0][0].abs() - r).abs() < 1e-6 && (v[0][1].abs() - r).abs() < 1e-6,
        "{:?}",
        v[0]
    );
    assert!(s[0] > 10.0 * s[1]);
    assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
    let keys = vec![
        vec![10.0, 10.0, 0.0],
        vec![-10.0, -10.0, 0.0],
        vec![0.0, 0.0, 5.0],
    ];
    let probs = vec![
        vec![0.8, 0.1, 0.1],
        vec![0.1, 0.8, 0.1],
        vec![0.3, 0.3, 0.4],
    ];
    let d = diagnose(&keys, &x, &probs, &[0, 1, 2], 2);
    assert_eq!(d.predicted.len(), 3);
    assert!((d.predicted[0][1] - 1.0).abs() < 1e-9); // the farthest pair
    assert_eq!(d.actual[0][1], 1.0);
}

#[test]
fn query_and_key_vectors_have_the_query_width() {
    let _g = testkit::device_rng_lock();
    let d = Device::flex();
    let llama = LlamaConfig::new(256, 16, 2, 4, 2, 24)
        .with_max_seq_len(64)
        .init(&d)
        .unwrap();
    let x = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &d);
    let (q, k) = llama.query_key_vectors(x.clone(), 1);
    assert_eq!(q.dims(), [3, 16]);
    assert_eq!(k.dims(), [3, 16]);
    let gpt2 = Gpt2Config::new(256, 16, 2, 2, 32).init(&d).unwrap();
    let (q, k) = gpt2.query_key_vectors(x, 0);
    assert_eq!(q.dims(), [3, 16]);
    assert_eq!(k.dims(), [3, 16]);
}
