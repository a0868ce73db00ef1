//! The checkpoint parsers (GGUF, safetensors header, ONNX protobuf) never panic on random,
//! truncated or corrupted bytes, and model invariants hold for random inputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use plm::gguf::Gguf;
use plm::hooks::AttentionHooks;
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
        let _rng = testkit::device_rng_lock();
        let d = Device::flex();
        d.seed(seed);
        let m = LlamaConfig::new(50, 16, 2, 4, 2, 24).with_max_seq_len(16).init(&d).unwrap();
        let n = seq.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(seq.clone(), [1, n]), &d);
        let out = m.forward_with(x, &AttentionHooks::none(), None);
        prop_assert_eq!(out.attentions.len(), 2);
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

/// The sharded bf16 Qwen2 fixture copied into a fresh folder.
fn sharded_copy() -> tempfile::TempDir {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/llama_family_bf16/qwen2");
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    tmp
}

const SHARDS: [&str; 3] = [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
];

/// Opening and loading the folder: Ok or a typed error, never a panic.
fn open_and_load(dir: &std::path::Path) -> Result<(), plm::Error> {
    plm::checkpoint::Weights::open(dir)?;
    plm::llama::Llama::load_hf(dir, &Device::flex()).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn truncated_shards_and_indexes_are_typed_errors(file in 0usize..3, frac in 0.0f64..1.0) {
        let tmp = sharded_copy();
        let path = tmp.path().join(SHARDS[file]);
        let bytes = std::fs::read(&path).unwrap();
        let cut = ((bytes.len() as f64) * frac) as usize;
        std::fs::write(&path, &bytes[..cut.min(bytes.len() - 1)]).unwrap();
        let e = open_and_load(tmp.path()).unwrap_err();
        let typed = matches!(
            e,
            plm::Error::Weights(_) | plm::Error::Config { .. } | plm::Error::Io { .. }
        );
        prop_assert!(typed, "{e}");
    }

    #[test]
    fn corrupted_shards_and_indexes_never_panic(
        file in 0usize..3,
        edits in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..4),
    ) {
        let tmp = sharded_copy();
        let path = tmp.path().join(SHARDS[file]);
        let mut bytes = std::fs::read(&path).unwrap();
        // Mostly the header and the index, where a byte changes meaning; data bytes only change
        // values.
        let span = if file == 2 { bytes.len() } else { bytes.len().min(4096) };
        for (at, v) in edits {
            let i = ((span as f64) * at) as usize % span;
            bytes[i] = v;
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = open_and_load(tmp.path());
    }
}

#[test]
fn an_index_naming_a_tensor_no_shard_holds_or_a_missing_shard_is_named() {
    let tmp = sharded_copy();
    let index = tmp.path().join(SHARDS[2]);
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replacen("\"model.norm.weight\"", "\"model.no_such.weight\"", 1),
    )
    .unwrap();
    match open_and_load(tmp.path()) {
        Err(plm::Error::TensorNotInShard { tensor, .. }) => {
            assert_eq!(tensor, "model.no_such.weight")
        }
        other => panic!("{other:?}"),
    }
    let tmp = sharded_copy();
    std::fs::remove_file(tmp.path().join(SHARDS[1])).unwrap();
    assert!(matches!(
        open_and_load(tmp.path()),
        Err(plm::Error::MissingShard { .. })
    ));
}

#[test]
fn a_tensor_missing_from_every_shard_or_of_the_wrong_shape_is_named() {
    // Drop model.norm.weight from the index and its shard: the module's norm has no source.
    let tmp = sharded_copy();
    let w = plm::checkpoint::Weights::open(tmp.path()).unwrap();
    let (shard, _) = w.tensor("model.norm.weight").unwrap();
    let shard = shard.to_path_buf();
    let mut tensors = Vec::new();
    for (name, info) in &w.shards.iter().find(|s| s.path == shard).unwrap().tensors {
        if name != "model.norm.weight" {
            let t = plm::safetensors::read_as_f32(&shard, name).unwrap().data;
            tensors.push((name.clone(), info.shape.clone(), t));
        }
    }
    std::fs::write(&shard, plm::safetensors::to_bytes(&tensors)).unwrap();
    let index = tmp.path().join(SHARDS[2]);
    let text = std::fs::read_to_string(&index).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("model.norm.weight");
    std::fs::write(&index, v.to_string()).unwrap();
    match open_and_load(tmp.path()) {
        Err(plm::Error::MissingTensor { tensor, .. }) => assert_eq!(tensor, "norm.gamma"),
        other => panic!("{other:?}"),
    }
    // A config that disagrees with the stored shapes.
    let tmp = sharded_copy();
    let cfg = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"intermediate_size\": 48", "\"intermediate_size\": 40"),
    )
    .unwrap();
    match open_and_load(tmp.path()) {
        Err(plm::Error::ShapeMismatch {
            tensor,
            expected,
            found,
        }) => {
            assert!(tensor.contains("mlp"), "{tensor}");
            assert_ne!(expected, found);
        }
        other => panic!("{other:?}"),
    }
}
