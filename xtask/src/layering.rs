//! `cargo xtask layering [--build] [CRATE…]`: what a paper crate costs a user who imports it.
//!
//! For each crate, a downstream crate is written under `target/tmp/downstream/<crate>/` that
//! depends on it alone (path dependency, default features) plus burn with its flex backend — what a
//! researcher adding the crate to their own Burn model writes. `cargo tree` over it (normal and
//! build dependencies, the workspace's `Cargo.lock`) gives the number of crates it compiles, and
//! the check fails if any crate that only the experiment runners need appears (tokenizers with the
//! onig C library, plotters, sha2, flate2). With `--build` each downstream crate is also built
//! cold in release mode into its own target folder and timed.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The paper crates (each one checked on its own).
pub const PAPER_CRATES: [&str; 8] = [
    "moe-arch",
    "esft",
    "prm",
    "fine-purify",
    "icl-anchors",
    "cascade",
    "wsd-formbert",
    "fin-news",
];

/// Crates a library user must not pay for: the experiment runners' tokenizers, plots, hashing and
/// compression.
pub const FORBIDDEN: [&str; 6] = [
    "tokenizers",
    "onig",
    "onig_sys",
    "plotters",
    "sha2",
    "flate2",
];

/// One downstream measurement.
#[derive(Debug)]
pub struct Cost {
    /// The crate depended on (`burn` alone for the baseline).
    pub name: String,
    /// Distinct packages (name and version) compiled for it, the downstream crate excluded.
    pub crates: usize,
    /// The forbidden crates that appeared.
    pub forbidden: Vec<String>,
    /// Seconds of a cold `cargo build --release`, when asked for.
    pub build_s: Option<f64>,
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Writes a downstream crate depending on `dep` (a workspace crate name, or `None` for burn
/// alone) and returns its folder.
fn downstream(root: &Path, dep: Option<&str>) -> Result<std::path::PathBuf> {
    let name = dep.unwrap_or("burn-only");
    let dir = root.join("target/tmp/downstream").join(name);
    std::fs::create_dir_all(dir.join("src"))?;
    let dep_line = dep
        .map(|d| {
            format!(
                "{d} = {{ path = \"{}\" }}\n",
                root.join("crates").join(d).display()
            )
        })
        .unwrap_or_default();
    let manifest = format!(
        "[package]\nname = \"downstream-{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         publish = false\n\n[workspace]\n\n[dependencies]\n{dep_line}\
         burn = {{ version = \"=0.22.1\", default-features = false, features = [\"std\", \"flex\"] }}\n\
         serde = {{ version = \"1\", features = [\"derive\"] }}\nthiserror = \"2\"\n"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n")?;
    // The workspace's lock pins every version, so counts compare like with like.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))?;
    Ok(dir)
}

fn tree(dir: &Path) -> Result<Vec<(String, String)>> {
    let out = cargo()
        .args([
            "tree",
            "--offline",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(dir)
        .output()
        .context("cannot run cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut pkgs: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .filter(|(n, _)| !n.starts_with("downstream-"))
        .collect();
    pkgs.sort();
    pkgs.dedup();
    Ok(pkgs)
}

fn cold_build(dir: &Path) -> Result<f64> {
    let target = dir.join("target");
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    let t = Instant::now();
    let status = cargo()
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(dir)
        .status()?;
    if !status.success() {
        bail!("cargo build in {} failed", dir.display());
    }
    let s = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&target)?;
    Ok(s)
}

/// Measures the downstream cost of `crates` (all paper crates when empty) and of burn alone.
pub fn measure(crates: &[String], build: bool) -> Result<Vec<Cost>> {
    let root = crate::workspace_root();
    let names: Vec<Option<&str>> = std::iter::once(None)
        .chain(if crates.is_empty() {
            PAPER_CRATES.iter().map(|c| Some(*c)).collect::<Vec<_>>()
        } else {
            crates.iter().map(|c| Some(c.as_str())).collect()
        })
        .collect();
    let mut out = Vec::new();
    for dep in names {
        if let Some(d) = dep
            && !root.join("crates").join(d).join("Cargo.toml").is_file()
        {
            bail!("no crate crates/{d}");
        }
        let dir = downstream(&root, dep)?;
        let pkgs = tree(&dir)?;
        let forbidden = pkgs
            .iter()
            .filter(|(n, _)| FORBIDDEN.contains(&n.as_str()))
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        let build_s = if build { Some(cold_build(&dir)?) } else { None };
        out.push(Cost {
            name: dep.unwrap_or("burn + serde + thiserror").to_string(),
            crates: pkgs.len(),
            forbidden,
            build_s,
        });
    }
    Ok(out)
}

/// `cargo xtask layering`: prints the table and fails on a forbidden crate.
pub fn layering(crates: &[String], build: bool) -> Result<()> {
    let costs = measure(crates, build)?;
    println!("| downstream crate depends on | crates compiled | cold release build | forbidden |");
    println!("|---|---|---|---|");
    for c in &costs {
        println!(
            "| {} | {} | {} | {} |",
            c.name,
            c.crates,
            c.build_s
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "-".into()),
            if c.forbidden.is_empty() {
                "none".to_string()
            } else {
                c.forbidden.join(", ")
            }
        );
    }
    let bad: Vec<_> = costs.iter().filter(|c| !c.forbidden.is_empty()).collect();
    if !bad.is_empty() {
        bail!(
            "{} pull(s) crates only the experiment runners need: put them behind the crate's \
             `experiment` feature",
            bad.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
