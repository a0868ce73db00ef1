//! `cargo xtask`: the experiment runner and the project's chores (assets, golden fixtures, CI).
//!
//! ```text
//! cargo xtask list
//! cargo xtask run NAME [--quick] [--device D] [--seed S] [--config FILE] [--out DIR] [--resume]
//! cargo xtask assets [--check] [--only NAME ...]
//! cargo xtask golden [--check] [CASE ...]
//! cargo xtask ci [--backend flex|wgpu]
//! ```

mod assets;
mod ci;
mod device;
mod experiments;
mod forward;
mod golden;
mod inspect;
mod layering;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use experiments::{ConfigSource, RunSpec};
use indicatif::{ProgressBar, ProgressStyle};
use trainer::RunCtx;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Experiments and chores of the burn-papers workspace"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the experiments, one line each.
    List,
    /// Run an experiment; writes `<out>/<name>/<run-id>/{config.json, metrics.json, report.md, *.svg}`.
    Run(RunArgs),
    /// Fetch, verify (sha256) and unpack the registry assets into the assets folder.
    Assets {
        /// Only verify that the assets are present; download nothing.
        #[arg(long)]
        check: bool,
        /// Fetch only these assets.
        #[arg(long, num_args = 1..)]
        only: Vec<String>,
    },
    /// Regenerate golden fixtures with their Python generators, or check they are current.
    Golden {
        /// Only check that fixtures match their generators (no Python needed).
        #[arg(long)]
        check: bool,
        /// Fixture cases (folder names under fixtures/); all when empty.
        cases: Vec<String>,
    },
    /// Exactly what .ci/run does: fetch assets, run the tests, check fixtures, smoke-run hello-lm.
    Ci {
        /// Backend for the run: `flex` (default, the full CI) or `wgpu` (the trainer smoke test on
        /// burn's wgpu backend; builds the wgpu stack in target/wgpu, ~15 min cold on 2 cores).
        #[arg(long, default_value = "flex")]
        backend: String,
    },
    /// Load a checkpoint (.gguf file or HF folder) and write its output for one token sequence.
    Forward {
        /// A .gguf file or an HF folder with config.json.
        #[arg(long)]
        model: PathBuf,
        /// Token ids, separated by spaces or commas.
        #[arg(long)]
        ids: String,
        /// Write the JSON here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Device.
        #[arg(long, default_value = "flex")]
        device: String,
        /// In-memory dtype of the weights: f32 (default; compute in f32), bf16 or f16 (2 bytes
        /// per parameter; activations follow), or stored (as the file holds them).
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
    /// Describe a checkpoint (.gguf file or HF folder) from its headers: architecture,
    /// parameters, dtypes, bytes, shards, MoE layout.
    Inspect {
        /// A .gguf file or an HF folder with config.json.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What each paper crate costs a user who imports it: downstream crate counts (and cold build
    /// times with --build); fails if a library pulls tokenizers, plotters, sha2 or flate2.
    Layering {
        /// Also time a cold release build of each downstream crate (minutes each).
        #[arg(long)]
        build: bool,
        /// Paper crates to measure; all eight when empty.
        crates: Vec<String>,
    },
    /// Run the hello-lm training smoke test on one device (used by `ci --backend wgpu`).
    Smoke {
        /// Device name.
        #[arg(long, default_value = "flex")]
        device: String,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Experiment name (see `cargo xtask list`).
    name: String,
    /// The small size that finishes in seconds.
    #[arg(long)]
    quick: bool,
    /// Device: flex, wgpu, wgpu-cpu, tch, tch-cuda, cuda.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Seed (overrides the config's).
    #[arg(long)]
    seed: Option<u64>,
    /// A JSON config file (the experiment's burn Config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A model checkpoint to start from, for the experiments that take one (`esft`: an HF
    /// `deepseek`, `deepseek_v2` or `deepseek_v3` folder with a byte-level vocabulary; `icl-anchors`, `math-shepherd`: a llama
    /// `.gguf` file or an HF Llama / Mistral / Qwen2 folder with `tokenizer.json`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A data folder for the experiments that read one (`math-shepherd`: GSM8K's
    /// `train.jsonl` / `test.jsonl`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Continue the newest interrupted run of this experiment under --out.
    #[arg(long)]
    resume: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::List => {
            for e in experiments::EXPERIMENTS {
                println!("{:<12} {}", e.name, e.about);
            }
            Ok(())
        }
        Cmd::Run(args) => run(&args).map(|_| ()),
        Cmd::Assets { check, only } => assets::assets(check, &only),
        Cmd::Golden { check, cases } => {
            let root = workspace_root();
            golden::golden(&root.join("fixtures"), &root.join("target"), check, &cases)
        }
        Cmd::Ci { backend } => ci::ci(&backend),
        Cmd::Layering { build, crates } => layering::layering(&crates, build),
        Cmd::Smoke { device } => smoke(&device),
        Cmd::Inspect { model, json } => inspect::inspect(&model).and_then(|s| {
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{}", inspect::render(&s));
            }
            Ok(())
        }),
        Cmd::Forward {
            model,
            ids,
            out,
            device,
            dtype,
        } => device::from_name(&device).and_then(|(d, _)| {
            let dtype: plm::checkpoint::LoadDtype = dtype.parse()?;
            let (shape, data) = forward::forward(&model, &ids, dtype, &d)?;
            let json = forward::to_json(&shape, &data);
            match out {
                Some(p) => Ok(trainer::fs::write_atomic(&p, json.as_bytes())?),
                None => {
                    println!("{json}");
                    Ok(())
                }
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}  eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Progress as plain lines on stderr, for runs without a terminal.
#[derive(Clone)]
struct LogLines {
    on: bool,
    began: std::time::Instant,
    /// The stage last written and the tenth of it reached.
    last: std::rc::Rc<std::cell::RefCell<(String, usize, usize)>>,
}

impl LogLines {
    fn new(on: bool) -> Self {
        Self {
            on,
            began: std::time::Instant::now(),
            last: Default::default(),
        }
    }

    /// Writes a line when a stage begins, at every tenth of it and at its end.
    fn line(&self, label: &str, done: usize, total: usize, msg: &str) {
        if !self.on {
            return;
        }
        let mut last = self.last.borrow_mut();
        if let Some(tenth) = line_due(&last, label, done, total) {
            let t = self.began.elapsed().as_secs();
            eprintln!(
                "[{:02}:{:02}:{:02}] {label} {done}/{total} {msg}",
                t / 3600,
                t / 60 % 60,
                t % 60
            );
            *last = (label.to_string(), tenth, total);
        }
    }
}

/// Whether `done` of `total` in `label` deserves a log line after `last` (label, tenth, total):
/// the tenth to remember when it does.
fn line_due(
    last: &(String, usize, usize),
    label: &str,
    done: usize,
    total: usize,
) -> Option<usize> {
    let tenth = (10 * done).checked_div(total).unwrap_or(10);
    // a new stage, the same one again from its start, or a further tenth
    let new = last.0 != label || last.2 != total || tenth < last.1;
    (new || tenth > last.1).then_some(tenth)
}

/// The newest run folder of `name` that did not finish (`<run-id>.partial`).
fn interrupted_run(exp_dir: &Path) -> Result<Option<PathBuf>> {
    if !exp_dir.is_dir() {
        return Ok(None);
    }
    let mut partial: Vec<PathBuf> = std::fs::read_dir(exp_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.extension().is_some_and(|x| x == "partial"))
        .collect();
    partial.sort();
    Ok(partial.pop())
}

fn run(args: &RunArgs) -> Result<PathBuf> {
    let exp = experiments::find(&args.name)?;
    let (device, device_name) = device::from_name(&args.device)?;
    let exp_dir = args.out.join(exp.name);

    // Folders this run creates, removed again if it fails before its first checkpoint.
    let mut created: Vec<PathBuf> = Vec::new();
    let (dir, prepared) = if args.resume {
        if args.config.is_some() || args.quick {
            bail!("--resume continues a run with its saved config; drop --config/--quick");
        }
        let dir = interrupted_run(&exp_dir)?.with_context(|| {
            format!(
                "no interrupted run of {} to resume under {}",
                exp.name,
                exp_dir.display()
            )
        })?;
        let spec = RunSpec {
            source: ConfigSource::File(dir.join("config.json")),
            seed: None,
            model: None,
            data: None,
        };
        (dir, (exp.prepare)(&spec)?)
    } else {
        let source = match (&args.config, args.quick) {
            (Some(p), false) => ConfigSource::File(p.clone()),
            (Some(_), true) => bail!("--config and --quick exclude each other"),
            (None, true) => ConfigSource::Quick,
            (None, false) => ConfigSource::Full,
        };
        let prepared = (exp.prepare)(&RunSpec {
            source,
            seed: args.seed,
            model: args.model.clone(),
            data: args.data.clone(),
        })?;
        let id = trainer::report::run_id(prepared.seed());
        let dir = exp_dir.join(format!("{id}.partial"));
        if dir.exists() || exp_dir.join(&id).exists() {
            bail!("run folder {} already exists", dir.display());
        }
        created = [&args.out, &exp_dir]
            .into_iter()
            .filter(|d| !d.exists())
            .cloned()
            .collect();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        trainer::fs::write_atomic(&dir.join("config.json"), prepared.config_json()?.as_bytes())?;
        (dir, prepared)
    };

    let bar = progress_bar();
    let mut ctx = RunCtx::new(device, &dir, device_name);
    ctx.resume = args.resume;
    // Without a terminal (a run under nohup, CI) the bar draws nothing; the log then gets a line
    // when a stage or training run starts, every tenth of the way and at its end.
    let log = LogLines::new(!std::io::stderr().is_terminal());
    let bar_cb = bar.clone();
    let log_cb = log.clone();
    ctx.progress = Some(Box::new(move |p: &trainer::Progress| {
        bar_cb.set_length(p.total as u64);
        bar_cb.set_position(p.step as u64);
        let eval = p
            .eval
            .as_ref()
            .and_then(|m| m.iter().next().map(|(k, v)| format!("  {k} {v:.4}")))
            .unwrap_or_default();
        let msg = format!(
            "steps  loss {:.4}  lr {:.2e}  {:.1} it/s{eval}",
            p.loss, p.lr, p.steps_per_sec
        );
        log_cb.line("training", p.step, p.total, &msg);
        bar_cb.set_message(msg);
    }));
    let bar_cb = bar.clone();
    ctx.stage = Some(Box::new(move |s: &trainer::Stage<'_>| {
        bar_cb.set_length(s.total as u64);
        bar_cb.set_position(s.done as u64);
        bar_cb.set_message(s.label.to_string());
        log.line(s.label, s.done, s.total, "");
    }));
    // A backend that fails at run time (no GPU adapter, driver error) panics inside burn; catch
    // it so the run folder is cleaned up like after any other error.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepared.run(&mut ctx)))
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("the {} backend failed: {msg}", args.device))
        });
    drop(ctx);
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let final_dir = dir.with_extension("");
            std::fs::rename(&dir, &final_dir).with_context(|| {
                format!("cannot rename {} to {}", dir.display(), final_dir.display())
            })?;
            println!("{}", report.table_md);
            println!("results: {}", final_dir.display());
            Ok(final_dir)
        }
        Err(e) => {
            if !args.resume {
                if trainer::latest_checkpoint(&dir).ok().flatten().is_some() {
                    eprintln!(
                        "the interrupted run is kept in {}: continue it with `cargo xtask run {} --resume --out {}`",
                        dir.display(),
                        exp.name,
                        args.out.display()
                    );
                } else {
                    let _ = std::fs::remove_dir_all(&dir);
                    for d in created.iter().rev() {
                        let _ = std::fs::remove_dir(d);
                    }
                }
            }
            Err(e)
        }
    }
}

/// Trains hello-lm's quick size for a few steps on `device` and checks the loss fell.
fn smoke(device: &str) -> Result<()> {
    let (dev, name) = device::from_name(device)?;
    let tmp = std::env::temp_dir().join(format!("xtask-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let cfg = plm::hello_lm::HelloLmConfig::quick()
        .with_sample_bytes(8)
        .with_eval_windows(4)
        .with_train(
            trainer::TrainerConfig::new(5)
                .with_lr(3e-3)
                .with_eval_every(5)
                .with_checkpoint_every(5),
        );
    let began = std::time::Instant::now();
    let mut ctx = RunCtx::new(dev, &tmp, name.clone());
    ctx.progress = Some(Box::new(|p: &trainer::Progress| {
        println!(
            "step {}/{} loss {:.4} ({:.2} s/step)",
            p.step,
            p.total,
            p.loss,
            1.0 / p.steps_per_sec
        );
    }));
    let report = plm::hello_lm::run(&cfg, &mut ctx)?;
    let text = std::fs::read_to_string(report.dir().join("metrics.json"))?;
    let m: serde_json::Value = serde_json::from_str(&text)?;
    let start = m["initial_valid_loss"].as_f64().unwrap_or(f64::NAN);
    let end = m["final_valid_loss"].as_f64().unwrap_or(f64::NAN);
    println!(
        "smoke on {name}: valid loss {start:.4} -> {end:.4} in 5 steps, {:.1} s wall",
        began.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&tmp);
    if end.is_nan() || start.is_nan() || end >= start {
        bail!("validation loss did not fall on {name}: {start} -> {end}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::line_due;

    #[test]
    fn log_lines_come_at_a_stage_start_each_tenth_and_a_restart() {
        let mut last = (String::new(), 0, 0);
        let mut lines = Vec::new();
        for (label, done, total) in (0..=20).map(|d| ("a", d, 20)).chain([
            ("a", 1, 20),
            ("b", 1, 3),
            ("b", 1, 3),
            ("b", 0, 0),
        ]) {
            if let Some(t) = line_due(&last, label, done, total) {
                lines.push((label, done));
                last = (label.to_string(), t, total);
            }
        }
        let mut want: Vec<(&str, usize)> = (0..=20).step_by(2).map(|d| ("a", d)).collect();
        want.extend([("a", 1), ("b", 1), ("b", 0)]);
        assert_eq!(lines, want);
    }
}
