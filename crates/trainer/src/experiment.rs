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
type StageFn<'a> = Box<dyn FnMut(&Stage<'_>) + 'a>;

/// Progress through long work that is not training (sampling, annotation, evaluation): `done`
/// of `total` units of the stage called `label`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage<'s> {
    /// What is being done, e.g. `"annotating problems"`.
    pub label: &'s str,
    /// Units finished.
    pub done: usize,
    /// Units in the stage.
    pub total: usize,
}

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
    /// Progress through stages that are not training, drawn by the runner like `progress`.
    pub stage: Option<StageFn<'a>>,
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
            stage: None,
            device_name: device_name.into(),
        }
    }

    /// Forwards a trainer progress event to the runner's callback.
    pub fn report_progress(&mut self, p: &Progress) {
        if let Some(cb) = self.progress.as_mut() {
            cb(p);
        }
    }

    /// Forwards progress through a stage that is not training to the runner's callback.
    pub fn report_stage(&mut self, label: &str, done: usize, total: usize) {
        if let Some(cb) = self.stage.as_mut() {
            cb(&Stage { label, done, total });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_reach_the_runner_and_are_optional() {
        let events = std::cell::RefCell::new(Vec::new());
        let dev = Device::flex();
        let mut ctx = RunCtx::new(dev.clone(), "unused", "cpu");
        ctx.stage = Some(Box::new(|s: &Stage<'_>| {
            events
                .borrow_mut()
                .push((s.label.to_string(), s.done, s.total));
        }));
        ctx.report_stage("sampling", 0, 3);
        ctx.report_stage("sampling", 3, 3);
        drop(ctx);
        assert_eq!(
            events.into_inner(),
            vec![
                ("sampling".to_string(), 0, 3),
                ("sampling".to_string(), 3, 3)
            ]
        );
        // without a callback a report is a no-op
        RunCtx::new(dev, "unused", "cpu").report_stage("x", 1, 2);
    }
}
