//! `cargo xtask ci`: what `.ci/run` does.

use std::process::Command;

use anyhow::{Result, bail};

/// Runs cargo with `args` in the workspace root, with `env` set for the child only.
fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}=\"{v}\" ")).collect();
    println!("+ {}cargo {}", shown.concat(), args.join(" "));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args)
        .envs(env.iter().copied())
        .current_dir(crate::workspace_root());
    let status = cmd.status()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn timed(label: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let t = std::time::Instant::now();
    let r = f();
    println!("== {label}: {:.0} s", t.elapsed().as_secs_f64());
    r
}

/// Builds every paper crate's examples with the crate's default features (the library alone, as a
/// user gets it) and runs each one.
fn examples() -> Result<()> {
    let root = crate::workspace_root();
    for c in crate::layering::PAPER_CRATES {
        let dir = root.join("crates").join(c).join("examples");
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_suffix(".rs").map(str::to_string)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if names.is_empty() {
            bail!("crates/{c}/examples holds no example");
        }
        names.sort();
        for n in names {
            cargo(
                &["run", "--quiet", "--release", "-p", c, "--example", &n],
                &[],
            )?;
        }
    }
    Ok(())
}

/// The CI pipeline on `backend`.
pub fn ci(backend: &str) -> Result<()> {
    match backend {
        "flex" => {
            timed("assets", || crate::assets::assets(false, &[]))?;
            timed("format", || cargo(&["fmt", "--all", "--", "--check"], &[]))?;
            timed("clippy", || {
                cargo(
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ],
                    &[],
                )
            })?;
            timed("docs (rustdoc warnings denied)", || {
                cargo(
                    &["doc", "--no-deps", "--workspace"],
                    &[("RUSTDOCFLAGS", "-D warnings")],
                )
            })?;
            timed("golden fixtures", || {
                let root = crate::workspace_root();
                crate::golden::golden(&root.join("fixtures"), &root.join("target"), true, &[])
            })?;
            timed("tests", || {
                cargo(
                    &[
                        "test",
                        "--release",
                        "--workspace",
                        "--exclude",
                        "benches",
                        "--no-fail-fast",
                    ],
                    &[],
                )
            })?;
            timed("layering: libraries alone, their examples", || {
                crate::layering::layering(&[], false)?;
                examples()
            })?;
            timed("hello-lm --quick", || {
                let out = std::env::temp_dir().join(format!("xtask-ci-{}", std::process::id()));
                let r = cargo(
                    &[
                        "run",
                        "--quiet",
                        "--release",
                        "-p",
                        "xtask",
                        "--",
                        "run",
                        "hello-lm",
                        "--quick",
                        "--out",
                        &out.to_string_lossy(),
                    ],
                    &[],
                );
                let _ = std::fs::remove_dir_all(&out);
                r
            })
        }
        "wgpu" => {
            // A separate target folder: the wgpu build changes burn's features, and the flex
            // build of tests and experiments must not be invalidated by it.
            let icd = std::env::var_os("VK_ICD_FILENAMES").is_some()
                || ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
                    .iter()
                    .any(|d| std::fs::read_dir(d).is_ok_and(|mut r| r.next().is_some()));
            if cfg!(target_os = "linux") && !icd {
                bail!(
                    "no Vulkan driver found: install one (on a machine without a GPU: \
                     `apt-get install mesa-vulkan-drivers libvulkan1`) or set VK_ICD_FILENAMES"
                );
            }
            let target = crate::workspace_root().join("target/wgpu");
            let target = target.to_string_lossy().into_owned();
            timed("wgpu smoke", || {
                cargo(
                    &[
                        "run",
                        "--release",
                        "-p",
                        "xtask",
                        "--no-default-features",
                        "--features",
                        "wgpu",
                        "--",
                        "smoke",
                        "--device",
                        "wgpu",
                    ],
                    &[("CARGO_TARGET_DIR", &target)],
                )
            })
        }
        other => bail!("unknown CI backend '{other}' (expected flex or wgpu)"),
    }
}
