//! Inputs of `plm::kernels::LINEAR_MIN_ROWS` (1,024) rows or more take the packed product on
//! flex; the golden inputs of the tiny GPT-2 and Llama are shorter (burn's product). Here the
//! same weights give the same logits on a 16 × 64-token input whether the packed product runs
//! (flex) or burn's layer does (the autodiff device, which never takes the host path); the same
//! for a tiny BERT on 32 × 32 tokens, whose FFN takes the GELU epilogue. (These fixtures'
//! biases are zero; the bias path is checked against burn's layer in `plm::kernels`' tests.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use burn::prelude::*;
use plm::bert::Bert;
use plm::gpt2::Gpt2;
use plm::llama::Llama;

fn ids(vocab: i64, seq: usize, d: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = (0..1024).map(|i| (i * 37 + 11) % vocab).collect();
    Tensor::from_data(TensorData::new(v, [1024 / seq, seq]), d)
}

fn close(a: Tensor<3>, b: Tensor<3>, what: &str) {
    let a = a.into_data().try_to_vec::<f32>().unwrap();
    let b = b.into_data().try_to_vec::<f32>().unwrap();
    testkit::assert_allclose(&a, &b, 1e-5, 1e-4, what);
}

#[test]
fn packed_products_give_the_layer_path_s_logits() {
    let d = crate::device();
    if !plm::kernels::is_flex(&d) {
        return; // the packed product exists on flex only
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    // the same model and input on flex (packed) and on the autodiff device (layer path)
    let same = |what: &str, run: &dyn Fn(&Device) -> Tensor<3>| {
        let ad = d.clone().autodiff();
        close(run(&d), run(&ad).inner(), what);
    };
    let gpt2 = root.join("gpt2_tiny/model");
    same("gpt2", &|dev| {
        let m = Gpt2::load_hf(&gpt2, dev).unwrap();
        m.forward(ids(101, 64, dev)).logits
    });
    let llama = root.join("llama_tiny/plain");
    same("llama", &|dev| {
        let m = Llama::load_hf(&llama, dev).unwrap();
        m.forward(ids(97, 64, dev)).logits
    });
    // BERT: the packed product, with the GELU epilogue in the FFN (32 × 32 tokens)
    let bert = root.join("bert_cls_tiny/model");
    same("bert", &|dev| {
        let m = Bert::load_hf(&bert, dev).unwrap();
        m.forward(ids(50, 32, dev), None, None).last_hidden_state
    });
}
