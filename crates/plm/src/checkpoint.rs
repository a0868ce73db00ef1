//! Checkpoints as they are published: an HF folder with one `model.safetensors` or a sharded
//! `model.safetensors.index.json` (+ its shards), tensors stored as F32, F16 or BF16, and the one
//! place that maps a checkpoint path to its architecture.
//!
//! Loading reads each shard in chunks of tensors (256 MiB by default) with positioned reads and
//! hands each chunk to burn-store, which converts layout and dtype tensor by tensor; modules are
//! built with lazy parameters, so no random initialisation is materialised first. Peak resident
//! memory while loading is the model so far plus about one chunk.
//!
//! # In-memory dtype
//! [`LoadDtype`] chooses what the float parameters become: `F32` (the default: every stored
//! dtype is widened, so the model computes in f32 and matches transformers' f32 forward of the
//! same weights), `Bf16`/`F16` (2 bytes per parameter; activations then follow the weights'
//! dtype, see each architecture's docs) or `Stored` (whatever the file holds).
//!
//! ```no_run
//! use plm::checkpoint::{Architecture, LoadDtype, Weights};
//! let dir = std::path::Path::new("DeepSeek-V2-Lite");
//! let arch = Architecture::detect(dir)?;           // from config.json's model_type
//! let weights = Weights::open(dir)?;               // index, shards and headers checked
//! println!("{arch}: {} parameters in {} shards", weights.n_params(), weights.shards.len());
//! # Ok::<(), plm::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ApplyError, ChainAdapter, FloatCastAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot,
    PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::safetensors::{TensorInfo, read_header};

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The dtype float parameters are held in after loading.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LoadDtype {
    /// 4 bytes per parameter; every stored float dtype is widened (exact for F16/BF16).
    #[default]
    F32,
    /// bfloat16, 2 bytes per parameter (F32 files are rounded to nearest even).
    Bf16,
    /// IEEE half, 2 bytes per parameter.
    F16,
    /// Whatever each tensor is stored as.
    Stored,
}

impl LoadDtype {
    /// The burn dtype parameters are cast to (`None` for [`LoadDtype::Stored`]).
    pub fn dtype(self) -> Option<DType> {
        match self {
            Self::F32 => Some(DType::F32),
            Self::Bf16 => Some(DType::BF16),
            Self::F16 => Some(DType::F16),
            Self::Stored => None,
        }
    }
}

impl FromStr for LoadDtype {
    type Err = Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" | "half" => Ok(Self::F16),
            "stored" => Ok(Self::Stored),
            other => Err(Error::Unsupported(format!(
                "load dtype '{other}' (expected f32, bf16, f16 or stored)"
            ))),
        }
    }
}

impl fmt::Display for LoadDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::Stored => "stored",
        })
    }
}

/// One safetensors file of a checkpoint and its (checked) header.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    /// Its tensors.
    pub tensors: BTreeMap<String, TensorInfo>,
}

/// The weight files of an HF checkpoint folder, with every header checked and, when sharded,
/// the index checked against the shards.
#[derive(Debug, Clone)]
pub struct Weights {
    /// The folder.
    pub dir: PathBuf,
    /// `model.safetensors.index.json` when the checkpoint is sharded.
    pub index: Option<PathBuf>,
    /// The files, in the order the index first names them.
    pub shards: Vec<Shard>,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

impl Shard {
    /// Reads and checks the header of `path`. Float8 tensors (DeepSeek-V3's official release)
    /// come with block scales that no loader here applies: they are refused by name rather than
    /// loaded as if they were plain floats.
    fn read(path: PathBuf) -> crate::Result<Self> {
        let tensors = read_header(&path)?;
        if let Some((name, info)) = tensors.iter().find(|(_, t)| t.dtype.starts_with("F8")) {
            return Err(Error::UnsupportedDtype {
                tensor: name.clone(),
                dtype: info.dtype.clone(),
                file: path,
            });
        }
        Ok(Self { path, tensors })
    }
}

impl Weights {
    /// Reads the weight files of `dir`: `model.safetensors.index.json` and its shards when the
    /// index exists, otherwise `model.safetensors`.
    ///
    /// Errors name the culprit: a shard the index names but the folder lacks
    /// ([`Error::MissingShard`]), an index entry whose shard does not hold the tensor
    /// ([`Error::TensorNotInShard`]), a truncated or malformed header ([`Error::Weights`]), a
    /// dtype no parameter can take ([`Error::UnsupportedDtype`]).
    pub fn open(dir: &Path) -> crate::Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        if !index_path.exists() {
            let path = dir.join(SINGLE_FILE);
            if !path.exists() {
                return Err(Error::NoWeights {
                    dir: dir.to_path_buf(),
                });
            }
            return Ok(Self {
                dir: dir.to_path_buf(),
                index: None,
                shards: vec![Shard::read(path)?],
            });
        }
        let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let index: IndexFile = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: index_path.clone(),
            reason: e.to_string(),
        })?;
        // Shards in the order the index first names them (the map is sorted by tensor name).
        let mut slot: BTreeMap<&str, usize> = BTreeMap::new();
        let mut shards = Vec::new();
        for file in index.weight_map.values() {
            if slot.contains_key(file.as_str()) {
                continue;
            }
            let rel = Path::new(file);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(Error::Config {
                    path: index_path.clone(),
                    reason: format!("shard name '{file}' is not a file inside the folder"),
                });
            }
            let path = dir.join(rel);
            if !path.is_file() {
                return Err(Error::MissingShard {
                    shard: path,
                    index: index_path.clone(),
                });
            }
            slot.insert(file, shards.len());
            shards.push(Shard::read(path)?);
        }
        for (tensor, file) in &index.weight_map {
            let shard = &shards[slot[file.as_str()]];
            if !shard.tensors.contains_key(tensor) {
                return Err(Error::TensorNotInShard {
                    tensor: tensor.clone(),
                    shard: shard.path.clone(),
                });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            index: Some(index_path),
            shards,
        })
    }

    /// The stored tensor `name` and the file holding it.
    pub fn tensor(&self, name: &str) -> Option<(&Path, &TensorInfo)> {
        self.shards
            .iter()
            .find_map(|s| s.tensors.get(name).map(|t| (s.path.as_path(), t)))
    }

    /// Every stored tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.shards
            .iter()
            .flat_map(|s| s.tensors.keys().map(String::as_str))
    }

    /// Number of stored values over all tensors.
    pub fn n_params(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| s.tensors.values())
            .map(TensorInfo::numel)
            .sum()
    }

    /// Bytes of tensor data over all files (headers excluded).
    pub fn n_bytes(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| s.tensors.values())
            .map(TensorInfo::byte_len)
            .sum()
    }

    /// Number of values stored in each dtype.
    pub fn dtype_counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in self.shards.iter().flat_map(|s| s.tensors.values()) {
            *out.entry(t.dtype.clone()).or_insert(0) += t.numel();
        }
        out
    }

    /// What to name in errors about the checkpoint as a whole.
    fn origin(&self) -> PathBuf {
        self.index
            .clone()
            .unwrap_or_else(|| self.shards[0].path.clone())
    }

    /// Loads every parameter of `module` from the checkpoint and checks that each parameter was
    /// found in some shard with the shape the module expects.
    ///
    /// Each shard is read in chunks of at most [`LoadOptions::chunk_bytes`] (a larger tensor is a
    /// chunk of its own) with positioned reads, never whole: resident memory while loading is
    /// the model so far plus one chunk (plus one tensor's layout conversion).
    pub fn load_into<M: Module + ModuleSnapshot>(
        &self,
        module: M,
        options: &LoadOptions,
    ) -> crate::Result<M> {
        let mut module = module;
        let mut applied: BTreeSet<String> = BTreeSet::new();
        // Per chunk, nearly every parameter is "missing": keep each name once.
        let mut missing: BTreeSet<String> = BTreeSet::new();
        for shard in &self.shards {
            let file = std::fs::File::open(&shard.path).map_err(|e| Error::io(&shard.path, e))?;
            let base = crate::safetensors::data_start(&shard.path)?;
            for chunk in chunks(shard, options.chunk_bytes) {
                let bytes = read_chunk(&file, &shard.path, base, &chunk)?;
                let store = SafetensorsStore::from_bytes(Some(bytes));
                let cast = |dt: DType| CastExcept {
                    cast: FloatCastAdapter::to(dt),
                    keep: options.keep_f32.clone(),
                };
                let store = match (options.pytorch_layout, options.dtype.dtype()) {
                    (true, Some(dt)) => {
                        store.with_from_adapter(ChainAdapter::new(PyTorchLayout, cast(dt)))
                    }
                    (true, None) => store.with_from_adapter(PyTorchLayout),
                    (false, Some(dt)) => store.with_from_adapter(cast(dt)),
                    (false, None) => store,
                };
                // Without the store's own validation its errors come back in the apply result,
                // where they become typed errors below.
                let mut store = store
                    .skip_enum_variants(options.skip_enum_variants)
                    .validate(false)
                    .allow_partial(true);
                for (from, to) in &options.remaps {
                    store = store.with_key_remapping(from, to);
                }
                let res = module
                    .load_from(&mut store)
                    .map_err(|e| Error::Weights(format!("{}: {e}", shard.path.display())))?;
                if let Some(e) = res.errors.first() {
                    return Err(match e {
                        ApplyError::ShapeMismatch {
                            path,
                            expected,
                            found,
                        } => Error::ShapeMismatch {
                            tensor: format!("{path} (in {})", shard.path.display()),
                            expected: expected.to_vec(),
                            found: found.to_vec(),
                        },
                        other => Error::Weights(format!("{}: {other:?}", shard.path.display())),
                    });
                }
                applied.extend(res.applied.iter().cloned());
                missing.extend(res.missing.iter().map(|(p, _)| p.clone()));
            }
        }
        if let Some(m) = missing.difference(&applied).next() {
            return Err(Error::MissingTensor {
                tensor: m.clone(),
                file: self.origin(),
            });
        }
        Ok(module)
    }
}

/// The tensors of `shard` in file order, grouped into runs of at most `cap` bytes.
fn chunks(shard: &Shard, cap: u64) -> Vec<Vec<(&str, &TensorInfo)>> {
    let mut tensors: Vec<(&str, &TensorInfo)> =
        shard.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tensors.sort_by_key(|(_, t)| t.data_offsets[0]);
    let mut out: Vec<Vec<(&str, &TensorInfo)>> = Vec::new();
    let mut size = 0u64;
    for (name, t) in tensors {
        let len = t.byte_len();
        match out.last_mut() {
            Some(last) if size + len <= cap => {
                last.push((name, t));
                size += len;
            }
            _ => {
                out.push(vec![(name, t)]);
                size = len;
            }
        }
    }
    out
}

/// One chunk as an in-memory safetensors file: a header for its tensors and their bytes, read
/// from `file` (data section at `base`) with positioned reads.
fn read_chunk(
    file: &std::fs::File,
    path: &Path,
    base: u64,
    chunk: &[(&str, &TensorInfo)],
) -> crate::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let entries = chunk
        .iter()
        .map(|(name, t)| (*name, t.dtype.as_str(), t.shape.as_slice(), t.byte_len()));
    // Filled by reads into spare capacity: no zeroing pass over the chunk first.
    let mut buf = crate::safetensors::header_bytes(entries);
    let mut f = file;
    for (name, t) in chunk {
        let len = t.byte_len();
        f.seek(SeekFrom::Start(base + t.data_offsets[0]))
            .map_err(|e| Error::io(path, e))?;
        let got = f
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(path, e))?;
        if got as u64 != len {
            return Err(Error::Weights(format!(
                "{}: tensor {name} is cut short ({got} of {len} bytes)",
                path.display()
            )));
        }
    }
    Ok(buf)
}

/// burn-store's `PyTorchToBurnAdapter` with a cache-blocked transpose of linear weights (its
/// element-by-element byte transpose made loading run at about 0.16 GB/s).
#[derive(Clone)]
struct PyTorchLayout;

impl ModuleAdapter for PyTorchLayout {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let linear_weight = ctx.module_type() == Some("Struct:Linear")
            && tensor.name.rsplit('.').next() == Some("weight")
            && tensor.shape.len() == 2
            && matches!(tensor.dtype.size(), 1 | 2 | 4 | 8)
            && !matches!(tensor.dtype, DType::QFloat(_));
        if !linear_weight {
            return PyTorchToBurnAdapter.adapt(tensor, ctx);
        }
        let (name, dtype) = (tensor.name.clone(), tensor.dtype);
        let shape = burn::tensor::Shape::from(vec![tensor.shape[1], tensor.shape[0]]);
        burn::store::bridge::map_data(tensor, name, dtype, shape, transpose_data)
    }

    fn get_alternative_param_name(&self, name: &str, module_type: &str) -> Option<String> {
        PyTorchToBurnAdapter.get_alternative_param_name(name, module_type)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// `[rows, cols]` → `[cols, rows]` for any element width.
fn transpose_data(data: burn::tensor::TensorData) -> burn::tensor::TensorData {
    let (rows, cols) = (data.shape()[0], data.shape()[1]);
    let dtype = data.dtype();
    let bytes = data.as_bytes();
    let out = match dtype.size() {
        1 => transpose_blocked::<1>(bytes, rows, cols),
        2 => transpose_blocked::<2>(bytes, rows, cols),
        4 => transpose_blocked::<4>(bytes, rows, cols),
        _ => transpose_blocked::<8>(bytes, rows, cols),
    };
    burn::tensor::TensorData::from_bytes_vec(out, vec![cols, rows], dtype)
}

/// Transposes a row-major `rows × cols` grid of `W`-byte elements in 32 × 32 tiles, so both the
/// reads and the writes stay within a few cache lines.
fn transpose_blocked<const W: usize>(src: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    const T: usize = 32;
    let mut dst = vec![0u8; src.len()];
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    let s = (r * cols + c) * W;
                    let d = (c * rows + r) * W;
                    let e: [u8; W] = src[s..s + W].try_into().unwrap_or([0; W]);
                    dst[d..d + W].copy_from_slice(&e);
                }
            }
        }
    }
    dst
}

/// Casts float tensors to one dtype, except the module paths ending in one of `keep` (held in
/// f32 whatever the load dtype).
#[derive(Clone)]
struct CastExcept {
    cast: FloatCastAdapter,
    keep: Vec<String>,
}

impl ModuleAdapter for CastExcept {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        if self.keep.iter().any(|k| tensor.name.ends_with(k.as_str())) {
            FloatCastAdapter::to(DType::F32).adapt(tensor, ctx)
        } else {
            self.cast.adapt(tensor, ctx)
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// How stored names and layouts map onto a module.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `(regex, replacement)` renames from stored names to module paths, applied in order.
    pub remaps: Vec<(String, String)>,
    /// Stored linear weights are PyTorch's `[out, in]` and norms use `weight`/`bias`
    /// (burn-store's `PyTorchToBurnAdapter`). Default true.
    pub pytorch_layout: bool,
    /// Module paths leave out enum variant names. Default false.
    pub skip_enum_variants: bool,
    /// In-memory dtype of the float parameters. Default f32.
    pub dtype: LoadDtype,
    /// Module paths (suffixes) held in f32 whatever `dtype`: small tensors whose precision
    /// decides discrete choices (DeepSeek-V3's expert score bias, stored in f32 upstream too).
    pub keep_f32: Vec<String>,
    /// Largest run of tensors read at once. Default 256 MiB.
    pub chunk_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            remaps: Vec::new(),
            pytorch_layout: true,
            skip_enum_variants: false,
            dtype: LoadDtype::F32,
            keep_f32: Vec::new(),
            chunk_bytes: 256 << 20,
        }
    }
}

impl LoadOptions {
    /// Adds a `(regex, replacement)` rename.
    pub fn remap(mut self, from: &str, to: &str) -> Self {
        self.remaps.push((from.to_string(), to.to_string()));
        self
    }

    /// Sets the in-memory dtype.
    pub fn with_dtype(mut self, dtype: LoadDtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Holds the module paths ending in `suffix` in f32 whatever the load dtype.
    pub fn keep_f32(mut self, suffix: &str) -> Self {
        self.keep_f32.push(suffix.to_string());
        self
    }

    /// Sets whether stored tensors use PyTorch's layout.
    pub fn with_pytorch_layout(mut self, on: bool) -> Self {
        self.pytorch_layout = on;
        self
    }

    /// Sets whether module paths skip enum variant names.
    pub fn with_skip_enum_variants(mut self, on: bool) -> Self {
        self.skip_enum_variants = on;
        self
    }
}

/// Reads `dir/config.json` as `T`.
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> crate::Result<T> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path,
        reason: e.to_string(),
    })
}

/// The architectures this workspace loads. `plm` loads the dense ones; the DeepSeek MoE
/// families are loaded by the `moe-arch` crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// HF `bert` (encoder).
    Bert,
    /// HF `gpt2`.
    Gpt2,
    /// HF `llama`.
    Llama,
    /// HF `mistral` (Llama with sliding-window attention).
    Mistral,
    /// HF `qwen2` (Llama with q/k/v biases).
    Qwen2,
    /// DeepSeekMoE v1 (`deepseek`).
    Deepseek,
    /// DeepSeek-V2 (`deepseek_v2`).
    DeepseekV2,
    /// DeepSeek-V3 (`deepseek_v3`).
    DeepseekV3,
    /// A llama-architecture GGUF file.
    GgufLlama,
}

impl Architecture {
    /// Every architecture, in the order of this enum.
    pub const ALL: [Self; 9] = [
        Self::Bert,
        Self::Gpt2,
        Self::Llama,
        Self::Mistral,
        Self::Qwen2,
        Self::Deepseek,
        Self::DeepseekV2,
        Self::DeepseekV3,
        Self::GgufLlama,
    ];

    /// The HF `model_type` (or `gguf` for a GGUF file).
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::Gpt2 => "gpt2",
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Deepseek => "deepseek",
            Self::DeepseekV2 => "deepseek_v2",
            Self::DeepseekV3 => "deepseek_v3",
            Self::GgufLlama => "gguf",
        }
    }

    /// Whether [`crate::llama::Llama`] loads it (the Llama family: Llama, Mistral, Qwen2, and
    /// llama GGUF files).
    pub fn is_llama_family(self) -> bool {
        matches!(
            self,
            Self::Llama | Self::Mistral | Self::Qwen2 | Self::GgufLlama
        )
    }

    /// The architecture of a checkpoint: a `.gguf` file (its `general.architecture` must be
    /// `llama`) or an HF folder (its `config.json` `model_type`).
    pub fn detect(path: &Path) -> crate::Result<Self> {
        if path.extension().is_some_and(|e| e == "gguf") {
            let g = crate::gguf::Gguf::open(path)?;
            return match g
                .get("general.architecture")
                .and_then(crate::gguf::Value::as_str)
            {
                Some("llama") => Ok(Self::GgufLlama),
                Some(other) => Err(Error::Unsupported(format!(
                    "GGUF architecture '{other}' in {} (supported: llama)",
                    path.display()
                ))),
                None => Err(Error::Weights(format!(
                    "{}: GGUF metadata general.architecture is missing",
                    path.display()
                ))),
            };
        }
        let cfg = path.join("config.json");
        if !cfg.is_file() {
            return Err(Error::Unsupported(format!(
                "{} is neither a .gguf file nor a folder with config.json",
                path.display()
            )));
        }
        #[derive(Deserialize)]
        struct Head {
            model_type: Option<String>,
        }
        let head: Head = read_config(path)?;
        let Some(mt) = head.model_type else {
            return Err(Error::Config {
                path: cfg,
                reason: "no model_type".into(),
            });
        };
        Self::ALL
            .into_iter()
            .find(|a| *a != Self::GgufLlama && a.model_type() == mt)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL[..8].iter().map(|a| a.model_type()).collect();
                Error::Unsupported(format!(
                    "architecture '{mt}' in {} (supported: {}, and llama .gguf files)",
                    cfg.display(),
                    known.join(", ")
                ))
            })
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocked_transpose_is_a_transpose() {
        for (rows, cols) in [(1, 1), (3, 70), (65, 33), (64, 64)] {
            let src: Vec<u8> = (0..rows * cols * 2).map(|i| (i % 251) as u8).collect();
            let t = transpose_blocked::<2>(&src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    let s = (r * cols + c) * 2;
                    let d = (c * rows + r) * 2;
                    assert_eq!(src[s..s + 2], t[d..d + 2]);
                }
            }
        }
    }

    fn write(path: &Path, tensors: &[(&str, Vec<usize>)]) {
        let named: Vec<crate::safetensors::NamedTensor> = tensors
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone(), vec![0.5; s.iter().product()]))
            .collect();
        std::fs::write(path, crate::safetensors::to_bytes(&named)).unwrap();
    }

    fn sharded(dir: &Path) {
        write(
            &dir.join("a.safetensors"),
            &[("x", vec![2, 3]), ("y", vec![4])],
        );
        write(&dir.join("b.safetensors"), &[("z", vec![5])]);
        std::fs::write(
            dir.join(INDEX_FILE),
            r#"{"metadata":{"total_size":60},"weight_map":{"x":"a.safetensors","y":"a.safetensors","z":"b.safetensors"}}"#,
        )
        .unwrap();
    }

    #[test]
    fn a_sharded_folder_lists_its_shards_and_counts_its_values() {
        let dir = tempfile::tempdir().unwrap();
        sharded(dir.path());
        let w = Weights::open(dir.path()).unwrap();
        assert_eq!(w.shards.len(), 2);
        assert_eq!(w.n_params(), 6 + 4 + 5);
        assert_eq!(w.n_bytes(), 4 * 15);
        assert_eq!(w.dtype_counts()["F32"], 15);
        assert!(w.tensor("z").unwrap().0.ends_with("b.safetensors"));
    }

    #[test]
    fn a_missing_shard_and_a_misplaced_tensor_are_named() {
        let dir = tempfile::tempdir().unwrap();
        sharded(dir.path());
        std::fs::remove_file(dir.path().join("b.safetensors")).unwrap();
        let e = Weights::open(dir.path()).unwrap_err();
        assert!(
            matches!(&e, Error::MissingShard { shard, .. } if shard.ends_with("b.safetensors"))
        );

        let dir = tempfile::tempdir().unwrap();
        sharded(dir.path());
        std::fs::write(
            dir.path().join(INDEX_FILE),
            r#"{"weight_map":{"x":"a.safetensors","z":"a.safetensors"}}"#,
        )
        .unwrap();
        let e = Weights::open(dir.path()).unwrap_err();
        assert!(
            matches!(&e, Error::TensorNotInShard { tensor, .. } if tensor == "z"),
            "{e}"
        );
    }

    #[test]
    fn a_folder_without_weights_or_with_an_escaping_shard_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Weights::open(dir.path()).unwrap_err(),
            Error::NoWeights { .. }
        ));
        std::fs::write(
            dir.path().join(INDEX_FILE),
            r#"{"weight_map":{"x":"../a.safetensors"}}"#,
        )
        .unwrap();
        assert!(matches!(
            Weights::open(dir.path()).unwrap_err(),
            Error::Config { .. }
        ));
    }

    #[test]
    fn load_dtypes_parse_and_print() {
        for d in [
            LoadDtype::F32,
            LoadDtype::Bf16,
            LoadDtype::F16,
            LoadDtype::Stored,
        ] {
            assert_eq!(d.to_string().parse::<LoadDtype>().unwrap(), d);
        }
        assert!("f8".parse::<LoadDtype>().is_err());
    }

    #[test]
    fn architectures_are_read_from_model_type() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"model_type":"qwen2"}"#).unwrap();
        assert_eq!(
            Architecture::detect(dir.path()).unwrap(),
            Architecture::Qwen2
        );
        std::fs::write(dir.path().join("config.json"), r#"{"model_type":"t5"}"#).unwrap();
        let e = Architecture::detect(dir.path()).unwrap_err().to_string();
        assert!(e.contains("'t5'") && e.contains("mistral"), "{e}");
        std::fs::write(dir.path().join("config.json"), r#"{}"#).unwrap();
        assert!(matches!(
            Architecture::detect(dir.path()).unwrap_err(),
            Error::Config { .. }
        ));
    }
}
