//! `cargo xtask …` (the alias in `.cargo/config.toml`) runs this small program, which compiles in
//! a second, quietly. It builds `xtask` in release mode and forwards cargo's output only once
//! something actually compiles — so the first, minutes-long build shows every crate it
//! compiles, while a warm run prints nothing but the command's own output — then runs
//! `xtask` with the given arguments and exits with its status.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds xtask; returns whether the build succeeded. Lines before the first one that shows work
/// (`Compiling`, `Downloading`, a warning or an error) are held back and dropped on success.
fn build() -> std::io::Result<bool> {
    let mut child = cargo()
        .args(["build", "--release", "--package", "xtask"])
        .stderr(Stdio::piped())
        .spawn()?;
    let Some(stderr) = child.stderr.take() else {
        return Ok(child.wait()?.success());
    };
    let mut held = Vec::new();
    let mut showing = false;
    let err = std::io::stderr();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        let t = line.trim_start();
        if !showing
            && [
                "Compiling",
                "Downloading",
                "Downloaded",
                "Updating",
                "warning",
                "error",
            ]
            .iter()
            .any(|p| t.starts_with(p))
        {
            showing = true;
            let mut e = err.lock();
            for h in held.drain(..) {
                writeln!(e, "{h}")?;
            }
        }
        if showing {
            writeln!(err.lock(), "{line}")?;
        } else {
            held.push(line);
        }
    }
    let ok = child.wait()?.success();
    if !ok && !showing {
        let mut e = err.lock();
        for h in held {
            writeln!(e, "{h}")?;
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    match build() {
        Ok(true) => {}
        Ok(false) => return ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            return ExitCode::FAILURE;
        }
    }
    let status = cargo()
        .args(["run", "--quiet", "--release", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .status();
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: cannot run xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
