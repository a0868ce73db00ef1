//! ESFT adapters: a safetensors file holding only the trained tensors, under their HF names
//! (`model.layers.{l}.mlp.experts.{j}.{gate,up,down}_proj.weight`, …), next to the
//! `expert_cfg.json` that produced them — the layout of the official adapters, so the expert
//! configs move both ways. An adapter applies to a base model and can be removed again,
//! restoring the base weights bit for bit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::store::{
    ApplyError, ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use moe_arch::deepseek::{DeepseekHfConfig, DeepseekLm, hf_safetensors_bytes};

use crate::Error;
use crate::model::MoeModel;
use crate::select::ExpertConfig;

/// The tensor file inside an adapter folder.
pub const ADAPTER_FILE: &str = "adapter.safetensors";
/// The expert config inside an adapter folder (the official name).
pub const EXPERT_CFG_FILE: &str = "expert_cfg.json";

/// What [`save_adapter`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterStats {
    /// Tensors saved.
    pub tensors: usize,
    /// Scalars saved.
    pub params: usize,
    /// Bytes of the adapter folder on disk (both files).
    pub bytes_on_disk: u64,
}

/// Module paths of the parameters that `cfg` trains.
pub fn trainable_paths<M: MoeModel>(model: &M, cfg: &ExpertConfig) -> Vec<String> {
    trainer::inventory(model)
        .into_iter()
        .filter(|p| cfg.is_trainable(&p.path))
        .map(|p| p.path)
        .collect()
}

fn header_names(bytes: &[u8], file: &Path) -> crate::Result<Vec<String>> {
    let h = plm::safetensors::parse_header(bytes, bytes.len() as u64).map_err(|reason| {
        Error::Plm(plm::Error::Weights(format!("{}: {reason}", file.display())))
    })?;
    Ok(h.into_keys().collect())
}

/// Saves the tensors that `cfg` trains (HF names) and `cfg` itself into `dir`, atomically
/// per file.
pub fn save_adapter<M: MoeModel>(
    model: &M,
    cfg: &ExpertConfig,
    dir: &Path,
) -> crate::Result<AdapterStats> {
    cfg.validate(&model.moe_layers())?;
    let paths = trainable_paths(model, cfg);
    let params: usize = trainer::inventory(model)
        .iter()
        .filter(|p| cfg.is_trainable(&p.path))
        .map(trainer::ParamInfo::numel)
        .sum();
    let bytes = hf_safetensors_bytes(model, Some(&paths), M::hf_save_remaps())?;
    let file = dir.join(ADAPTER_FILE);
    let names = header_names(&bytes, &file)?;
    if names.len() != paths.len() {
        return Err(Error::InvalidConfig(format!(
            "adapter would hold {} tensors for {} trainable parameters",
            names.len(),
            paths.len()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    trainer::fs::write_atomic(&file, &bytes)?;
    cfg.write(&dir.join(EXPERT_CFG_FILE))?;
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| Error::io(p, e))
    };
    Ok(AdapterStats {
        tensors: names.len(),
        params,
        bytes_on_disk: size(&file)? + size(&dir.join(EXPERT_CFG_FILE))?,
    })
}

/// An adapter in memory: HF-named tensors and the expert config they belong to.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// The expert config.
    pub config: ExpertConfig,
    bytes: Vec<u8>,
    source: PathBuf,
}

fn load_into<M: MoeModel>(model: &M, bytes: Vec<u8>) -> crate::Result<(M, ApplyResult)> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(PyTorchToBurnAdapter)
        .with_key_remapping(r"^model\.", "");
    for (from, to) in M::hf_load_remaps() {
        store = store.with_key_remapping(*from, *to);
    }
    let mut store = store
        .skip_enum_variants(true)
        .allow_partial(true)
        .validate(false);
    let mut m = model.clone();
    let res = m
        .load_from(&mut store)
        .map_err(|e| plm::Error::Weights(format!("applying adapter: {e}")))?;
    Ok((m, res))
}

impl Adapter {
    /// Reads `dir/adapter.safetensors` and `dir/expert_cfg.json`.
    pub fn read(dir: &Path) -> crate::Result<Self> {
        let config = ExpertConfig::read(&dir.join(EXPERT_CFG_FILE))?;
        let file = dir.join(ADAPTER_FILE);
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        header_names(&bytes, &file)?;
        Ok(Self {
            config,
            bytes,
            source: file,
        })
    }

    /// The HF tensor names it holds.
    pub fn tensor_names(&self) -> crate::Result<Vec<String>> {
        header_names(&self.bytes, &self.source)
    }

    /// Applies the adapter to a copy of `model`. Returns the adapted model and the undo
    /// adapter (the base values of every tensor the expert config trains): applying the undo
    /// adapter restores the base model bit for bit. `model` itself is never modified, so a
    /// failed application leaves nothing half-applied.
    pub fn apply<M: MoeModel>(&self, model: &M) -> crate::Result<(M, Adapter)> {
        self.config.validate(&model.moe_layers())?;
        let paths = trainable_paths(model, &self.config);
        let undo_bytes = hf_safetensors_bytes(model, Some(&paths), M::hf_save_remaps())?;
        let allowed: BTreeSet<String> = header_names(&undo_bytes, &self.source)?
            .into_iter()
            .collect();
        let (adapted, res) = load_into(model, self.bytes.clone())?;
        if let Some(t) = res.unused.first() {
            return Err(Error::UnknownTensor {
                tensor: t.clone(),
                file: self.source.clone(),
            });
        }
        if let Some(e) = res.errors.first() {
            return Err(match e {
                ApplyError::ShapeMismatch { .. } => Error::ShapeMismatch {
                    detail: e.to_string(),
                    file: self.source.clone(),
                },
                other => Error::Plm(plm::Error::Weights(format!(
                    "{}: {other}",
                    self.source.display()
                ))),
            });
        }
        for name in self.tensor_names()? {
            if !allowed.contains(&name) {
                return Err(Error::NotInExpertConfig {
                    tensor: name,
                    file: self.source.clone(),
                });
            }
        }
        let undo = Adapter {
            config: self.config.clone(),
            bytes: undo_bytes,
            source: PathBuf::from("<base weights>"),
        };
        Ok((adapted, undo))
    }
}

/// Merges an adapter into a base `deepseek` checkpoint folder and writes the full merged
/// checkpoint (HF layout) into `out_dir`.
pub fn merge_into_checkpoint(
    base_dir: &Path,
    adapter_dir: &Path,
    out_dir: &Path,
    device: &burn::prelude::Device,
) -> crate::Result<()> {
    let (hf, _) = plm::layers::read_hf_folder::<DeepseekHfConfig>(base_dir)?;
    let base = DeepseekLm::load_hf(base_dir, device)?;
    let (merged, _) = Adapter::read(adapter_dir)?.apply(&base)?;
    merged.save_hf(&hf, out_dir)?;
    Ok(())
}
