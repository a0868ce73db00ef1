//! `cargo xtask golden [--check] [CASE…]`: golden fixtures from the reference implementation.
//!
//! Each case is a folder `fixtures/<case>/` with a Python generator `generate.py`, the small
//! files it writes, and `manifest.json`, which records the sha256 of the generator and of every
//! output. `--check` (run by CI, needs no Python) fails when a generator changed after its
//! outputs were made or an output was edited by hand. Without `--check` the generators run in
//! a virtual environment `target/golden-venv` built from `fixtures/requirements.txt` (PyTorch,
//! transformers, ... from PyPI), and the manifests are rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use trainer::fs::write_json_atomic;

use crate::assets::sha256_file;

/// `fixtures/<case>/manifest.json`.
#[derive(Serialize, Deserialize, Debug)]
struct Manifest {
    generator_sha256: String,
    outputs: BTreeMap<String, String>,
}

fn cases(root: &Path, only: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if root.is_dir() {
        for e in std::fs::read_dir(root)? {
            let p = e?.path();
            if p.join("generate.py").is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    if !only.is_empty() {
        for name in only {
            if !out.iter().any(|p| p.ends_with(name)) {
                bail!("no fixture case '{name}' under {}", root.display());
            }
        }
        out.retain(|p| only.iter().any(|n| p.ends_with(n)));
    }
    Ok(out)
}

fn check_case(case: &Path) -> Result<()> {
    let mpath = case.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).with_context(|| {
        format!(
            "{} has no manifest: run `cargo xtask golden`",
            case.display()
        )
    })?;
    let m: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{}", mpath.display()))?;
    let gen_sha = sha256_file(&case.join("generate.py"))?;
    if gen_sha != m.generator_sha256 {
        bail!(
            "{}: generate.py changed since the fixture was made: run `cargo xtask golden {}`",
            case.display(),
            case.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
    }
    for (file, want) in &m.outputs {
        let got = sha256_file(&case.join(file))
            .with_context(|| format!("{}: output {file} is missing", case.display()))?;
        if &got != want {
            bail!(
                "{}: {file} differs from what its generator wrote",
                case.display()
            );
        }
    }
    Ok(())
}

fn venv(root: &Path, target: &Path) -> Result<PathBuf> {
    let venv = target.join("golden-venv");
    let py = venv.join("bin/python");
    if !py.is_file() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?;
        if !status.success() {
            bail!("python3 -m venv failed");
        }
    }
    let req = root.join("requirements.txt");
    if req.is_file() {
        let status = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&req)
            .status()?;
        if !status.success() {
            bail!("pip install -r {} failed", req.display());
        }
    }
    Ok(py)
}

fn regenerate(case: &Path, py: &Path) -> Result<()> {
    let status = Command::new(py)
        .arg(case.join("generate.py"))
        .arg(case)
        .status()
        .with_context(|| format!("cannot run {}", py.display()))?;
    if !status.success() {
        bail!("{}/generate.py failed ({status})", case.display());
    }
    let mut outputs = BTreeMap::new();
    for f in list_files(case)? {
        let name = f
            .strip_prefix(case)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == "generate.py" || name == "manifest.json" || name.ends_with(".md") {
            continue;
        }
        outputs.insert(name, sha256_file(&f)?);
    }
    let m = Manifest {
        generator_sha256: sha256_file(&case.join("generate.py"))?,
        outputs,
    };
    write_json_atomic(&case.join("manifest.json"), &m)?;
    Ok(())
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                if !p.ends_with("__pycache__") {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks or regenerates the fixture cases under `root`.
pub fn golden(root: &Path, target: &Path, check: bool, only: &[String]) -> Result<()> {
    let cases = cases(root, only)?;
    if check {
        let mut bad = Vec::new();
        for c in &cases {
            match check_case(c) {
                Ok(()) => println!("current  {}", c.display()),
                Err(e) => {
                    println!("STALE    {}", c.display());
                    bad.push(format!("{e:#}"));
                }
            }
        }
        println!("{} fixture case(s) checked", cases.len());
        if !bad.is_empty() {
            bail!("{} stale fixture case(s): {}", bad.len(), bad.join("; "));
        }
        return Ok(());
    }
    let py = venv(root, target)?;
    for c in &cases {
        println!("generating {}", c.display());
        regenerate(c, &py)?;
    }
    Ok(())
}
