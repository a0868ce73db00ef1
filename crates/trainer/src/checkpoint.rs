//! Checkpoints: model, optimizer state, step and RNG state, written atomically.
//!
//! Layout under the run folder:
//! ```text
//! checkpoints/step-000120/{model.bpk, optim.bpk, state.json}
//! checkpoints/latest            # the name of the newest complete checkpoint
//! ```
//! A checkpoint folder is first written as `.tmp-step-…` and renamed when complete; `latest` is
//! replaced atomically afterwards. `state.json` records a checksum of both record files ([`crate::fs::checksum_hex`]), so a
//! truncated or altered checkpoint is reported instead of loaded.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use crate::fs::{checksum_hex, write_atomic, write_json_atomic};
use crate::{Error, Result, Rng};

const MODEL_FILE: &str = "model.bpk";
const OPTIM_FILE: &str = "optim.bpk";
const STATE_FILE: &str = "state.json";
const LATEST: &str = "latest";

/// The small, human-readable part of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    /// Number of optimizer steps already taken.
    pub step: usize,
    /// The trainer RNG after `step` steps.
    pub rng: Rng,
    /// Checksum of `model.bpk` ([`checksum_hex`]).
    pub model_checksum: String,
    /// Checksum of `optim.bpk`.
    pub optim_checksum: String,
}

/// The checkpoints folder of a run.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    dir: PathBuf,
}

fn step_name(step: usize) -> String {
    format!("step-{step:06}")
}

impl Checkpoints {
    /// Checkpoints kept in `run_dir/checkpoints`.
    pub fn new(run_dir: &Path) -> Self {
        Self {
            dir: run_dir.join("checkpoints"),
        }
    }

    /// The folder holding the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a checkpoint after `step` steps, then drops all but the newest `keep`.
    pub fn save<M: Module>(
        &self,
        step: usize,
        model: &M,
        optim: &ModuleOptimizer,
        rng: &Rng,
        keep: usize,
    ) -> Result<PathBuf> {
        let final_dir = self.dir.join(step_name(step));
        let tmp_dir = self.dir.join(format!(".tmp-{}", step_name(step)));
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
        }
        std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;

        let model_bytes = model.clone().into_record().into_bytes()?;
        write_atomic(&tmp_dir.join(MODEL_FILE), &model_bytes)?;
        let optim_bytes = optim.into_bytes()?;
        write_atomic(&tmp_dir.join(OPTIM_FILE), &optim_bytes)?;
        let state = CheckpointState {
            step,
            rng: rng.clone(),
            model_checksum: checksum_hex(&model_bytes),
            optim_checksum: checksum_hex(&optim_bytes),
        };
        write_json_atomic(&tmp_dir.join(STATE_FILE), &state)?;

        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
        }
        std::fs::rename(&tmp_dir, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        write_atomic(&self.dir.join(LATEST), step_name(step).as_bytes())?;
        self.prune(keep)?;
        Ok(final_dir)
    }

    fn complete_steps(&self) -> Result<Vec<usize>> {
        let mut steps = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(steps),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
                steps.push(n);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    fn prune(&self, keep: usize) -> Result<()> {
        let steps = self.complete_steps()?;
        let n = steps.len().saturating_sub(keep);
        for s in &steps[..n] {
            let d = self.dir.join(step_name(*s));
            std::fs::remove_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        Ok(())
    }

    /// The folder of the newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        let pointer = self.dir.join(LATEST);
        match std::fs::read_to_string(&pointer) {
            Ok(name) => {
                let d = self.dir.join(name.trim());
                if d.is_dir() {
                    Ok(Some(d))
                } else {
                    Err(Error::CorruptCheckpoint {
                        path: pointer,
                        reason: format!("points at missing checkpoint {}", name.trim()),
                    })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(pointer, e)),
        }
    }

    /// Loads the checkpoint in `dir` into `model` and `optim`, verifying its checksums first.
    pub fn load<M: Module>(
        dir: &Path,
        model: M,
        optim: ModuleOptimizer,
    ) -> Result<(M, ModuleOptimizer, CheckpointState)> {
        let corrupt = |reason: String| Error::CorruptCheckpoint {
            path: dir.to_path_buf(),
            reason,
        };
        let state_path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| corrupt(format!("state.json: {e}")))?;
        let read = |file: &str, want: &str| -> Result<Vec<u8>> {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let got = checksum_hex(&bytes);
            if got != want {
                return Err(corrupt(format!(
                    "{file} has checksum {got}, state.json expects {want}"
                )));
            }
            Ok(bytes)
        };
        let model_bytes = read(MODEL_FILE, &state.model_checksum)?;
        let optim_bytes = read(OPTIM_FILE, &state.optim_checksum)?;
        let record =
            burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(model_bytes))
                .map_err(|e| corrupt(format!("model record: {e}")))?;
        let model = model
            .try_load_record(record)
            .map_err(|e| corrupt(format!("model does not fit this architecture: {e}")))?;
        let optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(optim_bytes))
            .map_err(|e| corrupt(format!("optimizer record: {e}")))?;
        Ok((model, optim, state))
    }
}
