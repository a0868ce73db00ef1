//! ggml block formats dequantise as the `gguf` package's quants.py does (fixture:
//! `fixtures/gguf_quants`: random blocks with finite scales).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use plm::gguf::{GgmlType, dequantize};
use plm::safetensors::{read_f32, read_u8};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf_quants/expected.safetensors")
}

#[test]
fn q4_0_q4_1_q8_0_and_q6_k_match_the_reference() {
    for (name, ty) in [
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q6_K", GgmlType::Q6K),
    ] {
        let raw = read_u8(&fixture(), &format!("{name}_raw")).unwrap().data;
        let want = read_f32(&fixture(), &format!("{name}_f32")).unwrap().data;
        let got = dequantize(ty, &raw).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}[{i}]: {g} vs {w}"
            );
        }
    }
}
