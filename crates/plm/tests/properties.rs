//! The checkpoint parsers (GGUF, safetensors header, ONNX protobuf) never panic on random,
//! truncated or corrupted bytes, and model invariants hold for random inputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use plm::gguf::Gguf;
use plm::llama::LlamaConfig;
use plm::onnx::Graph;
use proptest::prelude::*;

fn valid_safetensors() -> Vec<u8> {
    plm::safetensors::to_bytes(&[
        ("a".into(), vec![2, 3], vec![1.0; 6]),
        ("b".into(), vec![4], vec![2.0; 4]),
    ])
}

fn valid_gguf() -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let key = b"general.alignment";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(4u32.to_le_bytes());
    b.extend(32u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(b"w");
    b.extend(1u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    b.extend(8u32.to_le_bytes()); // Q8_0
    b.extend(0u64.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend([0u8; 34]);
    b
}

fn parse_st(bytes: &[u8]) {
    let _ = plm::safetensors::parse_header(bytes, bytes.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Gguf::parse(bytes.clone());
        let _ = Graph::parse(&bytes);
        parse_st(&bytes);
        let mut gguf = b"GGUF\x03\x00\x00\x00".to_vec();
        gguf.extend(&bytes);
        let _ = Gguf::parse(gguf);
    }

    #[test]
    fn truncated_files_are_errors(cut in 0usize..200) {
        let g = valid_gguf();
        let n = cut.min(g.len() - 1);
        prop_assert!(Gguf::parse(g[..n].to_vec()).is_err());
        let s = valid_safetensors();
        let n = cut.min(s.len() - 1);
        prop_assert!(plm::safetensors::parse_header(&s[..n], n as u64).is_err());
    }

    #[test]
    fn corrupted_bytes_never_panic(pos in 0usize..200, val in any::<u8>()) {
        let mut g = valid_gguf();
        let i = pos % g.len();
        g[i] = val;
        if let Ok(parsed) = Gguf::parse(g) {
            let _ = parsed.tensor_f32("w");
        }
        let mut s = valid_safetensors();
        let i = pos % s.len();
        s[i] = val;
        parse_st(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn attention_rows_sum_to_one_and_the_past_ignores_the_future(
        seq in proptest::collection::vec(0i64..50, 2..9), seed in 0u64..1000
    ) {
        let d = Device::flex();
        d.seed(seed);
        let m = LlamaConfig::new(50, 16, 2, 4, 2, 24).with_max_seq_len(16).init(&d).unwrap();
        let n = seq.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(seq.clone(), [1, n]), &d);
        let out = m.forward(x);
        for a in &out.attentions {
            let rows = a.clone().sum_dim(3).into_data().try_to_vec::<f32>().unwrap();
            prop_assert!(rows.iter().all(|r| (r - 1.0).abs() < 1e-4));
        }
        let prefix = Tensor::<2, Int>::from_data(TensorData::new(seq[..n - 1].to_vec(), [1, n - 1]), &d);
        let a = m.forward(prefix).logits.into_data().try_to_vec::<f32>().unwrap();
        let b = out.logits.slice(s![.., 0..n - 1, ..]).into_data().try_to_vec::<f32>().unwrap();
        prop_assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4));
    }
}
