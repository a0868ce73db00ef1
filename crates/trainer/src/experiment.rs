//! What every experiment shares: the run context xtask hands in, and the report it hands back.
//!
//! A paper crate exposes `experiment::run(&Config, &mut RunCtx) -> Result<Report>`; it writes its
//! artifacts into [`RunCtx::dir`] with [`RunCtx::finish`], which produces the three files every run
//! has (`config.json`, `metrics.json`, `report.md`) next to the SVG plots the experiment drew.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::Serialize;

use crate::fs::write_json_atomic;
use crate::{Progress, Result};

type ProgressFn<'a> = Box<dyn FnMut(&Progress) + 'a>;

/// Everything an experiment needs from the runner.
pub struct RunCtx<'a> {
    /// The device to compute on (experiments call `.autodiff()` to train).
    pub device: Device,
    /// The run folder; everything the run writes goes here.
    pub dir: PathBuf,
    /// Continue from the newest checkpoint in `dir` instead of starting over.
    pub resume: bool,
    /// Drawn by the runner (indicatif in xtask).
    pub progress: Option<ProgressFn<'a>>,
    /// Free-form note about the device, recorded in `metrics.json` (e.g. `flex (cpu)`).
    pub device_name: String,
}

impl<'a> RunCtx<'a> {
    /// A context without progress output.
    pub fn new(device: Device, dir: impl Into<PathBuf>, device_name: impl Into<String>) -> Self {
        Self {
            device,
            dir: dir.into(),
            resume: false,
            progress: None,
            device_name: device_name.into(),
        }
    }

    /// Forwards a trainer progress event to the runner's callback.
    pub fn report_progress(&mut self, p: &Progress) {
        if let Some(cb) = self.progress.as_mut() {
            cb(p);
        }
    }

    /// A path inside the run folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `config.json`, `metrics.json` and `report.md` and returns the report.
    pub fn finish<C: Serialize, M: Serialize>(
        &self,
        config: &C,
        metrics: &M,
        title: &str,
        table_md: String,
        body_md: String,
    ) -> Result<Report> {
        write_json_atomic(&self.path("config.json"), config)?;
        write_json_atomic(&self.path("metrics.json"), metrics)?;
        let md = format!("# {title}\n\n{table_md}\n{body_md}");
        crate::fs::write_atomic(&self.path("report.md"), md.as_bytes())?;
        Ok(Report {
            dir: self.dir.clone(),
            table_md,
        })
    }
}

/// What a finished run hands back to the runner.
#[derive(Clone, Debug)]
pub struct Report {
    /// The run folder.
    pub dir: PathBuf,
    /// The result table (Markdown) the runner prints.
    pub table_md: String,
}

impl Report {
    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
