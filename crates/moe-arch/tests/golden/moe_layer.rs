//! The MoE layer equals HF's `DeepseekMoE` / `MoEGate` equations (fixture `fixtures/moe_layer`,
//! a PyTorch port of the remote modelling code): output, top-k routing and both aux losses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use moe_arch::MoeConfig;
use plm::safetensors::{read_f32, read_i64};

#[test]
fn layer_matches_the_reference_equations() {
    let d = crate::device();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/moe_layer");
    let exp = root.join("expected.safetensors");
    let xs = read_f32(&exp, "x").unwrap();
    let x = Tensor::<3>::from_data(TensorData::new(xs.data, [2, 5, 16]), &d);
    for (seq_aux, key) in [(true, "aux_seq"), (false, "aux_flat")] {
        let cfg = MoeConfig::new(16, 8, 3, 8)
            .with_n_shared(1)
            .with_aux_alpha(0.01)
            .with_seq_aux(seq_aux)
            .with_include_padding(true);
        let mut m = cfg.init(&d).unwrap();
        let weights = root.join("weights.safetensors");
        let mut store =
            SafetensorsStore::from_file(&weights).with_from_adapter(PyTorchToBurnAdapter);
        let res = m.load_from(&mut store).unwrap();
        plm::safetensors::check_apply(&weights, &res).unwrap();
        assert!(res.unused.is_empty(), "{:?}", res.unused);

        let out = m.forward(x.clone(), None).unwrap();
        let got = out.output.into_data().try_to_vec::<f32>().unwrap();
        let want = read_f32(&exp, "output").unwrap().data;
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "output differs by {diff}");
        let idx = out.topk_idx.into_data().try_to_vec_as::<i64>().unwrap();
        assert_eq!(idx, read_i64(&exp, "topk_idx").unwrap().data);
        let w = out.topk_weight.into_data().try_to_vec::<f32>().unwrap();
        let ww = read_f32(&exp, "topk_weight").unwrap().data;
        assert!(w.iter().zip(&ww).all(|(a, b)| (a - b).abs() < 1e-6));
        let aux = out.expert_loss.into_data().try_to_vec::<f32>().unwrap()[0];
        let want = read_f32(&exp, key).unwrap().data[0];
        assert!((aux - want).abs() < 1e-7, "{key}: {aux} vs {want}");
    }
}
