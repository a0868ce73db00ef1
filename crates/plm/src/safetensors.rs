//! Safetensors header checks, so a truncated or malformed file gives a typed error naming the
//! problem (burn's store would fail later and less precisely), and the mapping of burn-store's
//! load report onto this crate's errors.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use burn::store::ApplyResult;
use serde::Deserialize;

use crate::Error;

/// One tensor entry of a safetensors header.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Element type (`F32`, `F16`, `BF16`, `I64`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub data_offsets: [u64; 2],
}

impl TensorInfo {
    /// Number of values.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Bytes of data.
    pub fn byte_len(&self) -> u64 {
        self.data_offsets[1] - self.data_offsets[0]
    }
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Parses and checks a safetensors header given the whole file length.
///
/// Every tensor's byte range must lie inside the file and match `dtype × shape`.
pub fn parse_header(bytes: &[u8], file_len: u64) -> Result<BTreeMap<String, TensorInfo>, String> {
    if bytes.len() < 8 {
        return Err("file is shorter than the 8-byte header length".into());
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(len8);
    if n > 100_000_000 || 8 + n > file_len {
        return Err(format!(
            "header length {n} exceeds the file ({file_len} bytes)"
        ));
    }
    let header = bytes
        .get(8..8 + n as usize)
        .ok_or_else(|| format!("header of {n} bytes is truncated"))?;
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("header is not JSON: {e}"))?;
    let data_len = file_len - 8 - n;
    let mut out = BTreeMap::new();
    for (name, v) in raw {
        if name == "__metadata__" {
            continue;
        }
        let info: TensorInfo =
            serde_json::from_value(v).map_err(|e| format!("tensor {name}: {e}"))?;
        let size = dtype_size(&info.dtype)
            .ok_or_else(|| format!("tensor {name}: unknown dtype {}", info.dtype))?;
        let numel = info
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| format!("tensor {name}: shape {:?} overflows", info.shape))?;
        let [start, end] = info.data_offsets;
        if start > end || end > data_len {
            return Err(format!(
                "tensor {name}: bytes {start}..{end} lie outside the {data_len}-byte data section (truncated file?)"
            ));
        }
        if numel.checked_mul(size) != Some(end - start) {
            return Err(format!(
                "tensor {name}: {} bytes for {} × {:?}",
                end - start,
                info.dtype,
                info.shape
            ));
        }
        out.insert(name, info);
    }
    Ok(out)
}

/// Reads and checks the header of the file at `path`.
pub fn read_header(path: &Path) -> crate::Result<BTreeMap<String, TensorInfo>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8).map_err(|_| {
        Error::Weights(format!(
            "{}: file is shorter than the 8-byte header length",
            path.display()
        ))
    })?;
    let n = u64::from_le_bytes(len8)
        .min(file_len.saturating_sub(8))
        .min(100_000_000);
    let mut buf = len8.to_vec();
    buf.resize(8 + n as usize, 0);
    f.read_exact(&mut buf[8..])
        .map_err(|e| Error::io(path, e))?;
    parse_header(&buf, file_len).map_err(|e| Error::Weights(format!("{}: {e}", path.display())))
}

/// Where the data section of the safetensors file at `path` starts (8 + header length).
pub fn data_start(path: &Path) -> crate::Result<u64> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8).map_err(|e| Error::io(path, e))?;
    Ok(8 + u64::from_le_bytes(len8))
}

/// Checks the header of `path` (truncation, offsets, dtypes).
pub fn validate(path: &Path) -> crate::Result<()> {
    read_header(path).map(|_| ())
}

/// The tensor names of `path`.
pub fn tensor_names(path: &Path) -> crate::Result<Vec<String>> {
    Ok(read_header(path)?.into_keys().collect())
}

/// Turns burn-store's load report into an error naming the first missing tensor or the first
/// shape mismatch.
pub fn check_apply(path: &Path, res: &ApplyResult) -> crate::Result<()> {
    if let Some(e) = res.errors.first() {
        return Err(Error::Weights(format!("{}: {e:?}", path.display())));
    }
    if let Some((missing, _)) = res.missing.first() {
        return Err(Error::MissingTensor {
            tensor: missing.clone(),
            file: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data));
        v
    }

    #[test]
    fn a_valid_header_parses() {
        let b = file(
            r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"x":"y"}}"#,
            24,
        );
        let h = parse_header(&b, b.len() as u64).unwrap();
        assert_eq!(h["a"].shape, vec![2, 3]);
    }

    #[test]
    fn truncation_and_inconsistent_sizes_are_reported() {
        let b = file(
            r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#,
            10,
        );
        assert!(
            parse_header(&b, b.len() as u64)
                .unwrap_err()
                .contains("outside")
        );
        let b = file(
            r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,24]}}"#,
            24,
        );
        assert!(parse_header(&b, b.len() as u64).is_err());
        let b = file(
            r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}"#,
            1,
        );
        assert!(
            parse_header(&b, b.len() as u64)
                .unwrap_err()
                .contains("dtype")
        );
        assert!(parse_header(&[1, 2, 3], 3).is_err());
    }
}

/// A tensor read from a safetensors file: its shape and its values converted to `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor<T> {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<T>,
}

fn read_raw(path: &Path, name: &str) -> crate::Result<(TensorInfo, Vec<u8>)> {
    let header = read_header(path)?;
    let info = header
        .get(name)
        .cloned()
        .ok_or_else(|| Error::MissingTensor {
            tensor: name.to_string(),
            file: path.to_path_buf(),
        })?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let base = 8 + u64::from_le_bytes(len8) as usize;
    let [s, e] = info.data_offsets;
    let raw = bytes[base + s as usize..base + e as usize].to_vec();
    Ok((info, raw))
}

/// Reads an `F32` tensor (host side; for fixtures and tools, not for model loading).
pub fn read_f32(path: &Path, name: &str) -> crate::Result<HostTensor<f32>> {
    let (info, raw) = read_raw(path, name)?;
    if info.dtype != "F32" {
        return Err(Error::Weights(format!(
            "{name} is {}, expected F32",
            info.dtype
        )));
    }
    let data = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(HostTensor {
        shape: info.shape,
        data,
    })
}

/// Reads a float tensor stored as F32, F16 or BF16, widened to f32 (host side).
pub fn read_as_f32(path: &Path, name: &str) -> crate::Result<HostTensor<f32>> {
    let (info, raw) = read_raw(path, name)?;
    let data = match info.dtype.as_str() {
        "F32" => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "F16" => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "BF16" => raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::UnsupportedDtype {
                tensor: name.to_string(),
                dtype: other.to_string(),
                file: path.to_path_buf(),
            });
        }
    };
    Ok(HostTensor {
        shape: info.shape,
        data,
    })
}

/// Reads a `U8` tensor (host side).
pub fn read_u8(path: &Path, name: &str) -> crate::Result<HostTensor<u8>> {
    let (info, raw) = read_raw(path, name)?;
    if info.dtype != "U8" {
        return Err(Error::Weights(format!(
            "{name} is {}, expected U8",
            info.dtype
        )));
    }
    Ok(HostTensor {
        shape: info.shape,
        data: raw,
    })
}

/// Reads an `I64` tensor (host side).
pub fn read_i64(path: &Path, name: &str) -> crate::Result<HostTensor<i64>> {
    let (info, raw) = read_raw(path, name)?;
    if info.dtype != "I64" {
        return Err(Error::Weights(format!(
            "{name} is {}, expected I64",
            info.dtype
        )));
    }
    let data = raw
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok(HostTensor {
        shape: info.shape,
        data,
    })
}

/// An f32 tensor on the host: `(name, shape, row-major values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Serialises f32 tensors as a safetensors file in memory (used to feed tensors from other
/// formats, such as dequantised GGUF or ONNX initializers, through the same loader as HF files).
pub fn to_bytes(tensors: &[NamedTensor]) -> Vec<u8> {
    let entries = tensors.iter().map(|(name, shape, data)| {
        (
            name.as_str(),
            "F32",
            shape.as_slice(),
            4 * data.len() as u64,
        )
    });
    let mut out = header_bytes(entries);
    for (_, _, data) in tensors {
        for v in data {
            out.extend(v.to_le_bytes());
        }
    }
    out
}

/// The start of a safetensors file: the 8-byte header length and the JSON header (padded to 8
/// bytes) for tensors `(name, dtype, shape, byte length)` laid out in order. The data follows.
pub fn header_bytes<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str, &'a [usize], u64)>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, dtype, shape, len) in entries {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + offset as usize);
    out.extend((h.len() as u64).to_le_bytes());
    out.extend(h);
    out
}

/// A tensor as stored: `(name, dtype such as "BF16", shape, little-endian bytes)`.
pub type RawTensor = (String, String, Vec<usize>, Vec<u8>);

/// Serialises tensors of any stored dtype as a safetensors file in memory (the bytes are taken
/// as they are; their length must be `shape × dtype size`).
pub fn to_bytes_raw(tensors: &[RawTensor]) -> Vec<u8> {
    let entries = tensors.iter().map(|(name, dtype, shape, data)| {
        (
            name.as_str(),
            dtype.as_str(),
            shape.as_slice(),
            data.len() as u64,
        )
    });
    let mut out = header_bytes(entries);
    for (_, _, _, data) in tensors {
        out.extend(data);
    }
    out
}
