//! GGUF v3 reader: metadata, tensor directory and dequantisation of F32, F16, BF16, Q4_0, Q4_1,
//! Q8_0 and Q6_K tensors to f32.
//!
//! Layout (ggml's `gguf.md`): magic `GGUF`, version (u32), tensor count (u64), metadata count
//! (u64), the metadata key/values, the tensor infos (name, dims listed fastest-first, ggml type,
//! offset), then the data section at the next multiple of `general.alignment` (default 32).
//! Every read is bounds-checked: a truncated or malformed file is an error, never a panic.

use std::collections::BTreeMap;
use std::path::Path;

use crate::Error;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// `f32` or `f64`.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<Value>),
}

impl Value {
    /// As an unsigned integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U64(v) => Some(v),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// As a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F64(v) => Some(v),
            Self::U64(v) => Some(v as f64),
            Self::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    /// As an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types this reader knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
    /// 4-bit, blocks of 32: f16 scale, 16 bytes of nibbles; w = d·(q − 8).
    Q4_0,
    /// 4-bit, blocks of 32: f16 scale, f16 min, 16 bytes of nibbles; w = d·q + m.
    Q4_1,
    /// 8-bit, blocks of 32: f16 scale, 32 × i8; w = d·q.
    Q8_0,
    /// 6-bit K-quant, super-blocks of 256 (210 bytes).
    Q6K,
    /// A type this reader cannot dequantise (its ggml id).
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            14 => Self::Q6K,
            30 => Self::Bf16,
            other => Self::Other(other),
        }
    }

    /// (weights per block, bytes per block).
    fn block(self) -> Option<(usize, usize)> {
        Some(match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
            Self::Q6K => (256, 210),
            Self::Other(_) => return None,
        })
    }
}

/// One entry of the tensor directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, fastest-varying first (the reverse of a row-major shape).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset inside the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Row-major shape (`dims` reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    fn numel(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }
}

/// A parsed GGUF file held in memory.
pub struct Gguf {
    bytes: Vec<u8>,
    /// GGUF version.
    pub version: u32,
    /// Metadata.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("truncated at byte {} (needs {n} more)", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| format!("string length {n} too large"))?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| format!("string at byte {} is not UTF-8", self.pos))
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U64(self.u8()? as u64),
            1 => Value::I64(self.u8()? as i8 as i64),
            2 => {
                let s = self.take(2)?;
                Value::U64(u16::from_le_bytes([s[0], s[1]]) as u64)
            }
            3 => {
                let s = self.take(2)?;
                Value::I64(i16::from_le_bytes([s[0], s[1]]) as i64)
            }
            4 => Value::U64(self.u32()? as u64),
            5 => Value::I64(self.u32()? as i32 as i64),
            6 => Value::F64(f32::from_bits(self.u32()?) as f64),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deeply".into());
                }
                let inner = self.u32()?;
                let n = self.u64()?;
                // Each element takes at least one byte: a count beyond the rest of the file is corrupt.
                if n > (self.b.len() - self.pos) as u64 {
                    return Err(format!("array of {n} elements exceeds the file"));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(inner, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(format!("unknown metadata type {other}")),
        })
    }
}

fn f16(lo: u8, hi: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

impl Gguf {
    /// Parses a GGUF file from bytes.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        let mut c = Cursor { b: &bytes, pos: 0 };
        if c.take(4)? != b"GGUF" {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("unsupported GGUF version {version}"));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        let rest = (bytes.len() - c.pos) as u64;
        if n_tensors > rest || n_kv > rest {
            return Err(format!("{n_tensors} tensors / {n_kv} keys exceed the file"));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty, 0).map_err(|e| format!("metadata {key}: {e}"))?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims > 8 {
                return Err(format!("tensor {name}: {n_dims} dimensions"));
            }
            let dims = (0..n_dims)
                .map(|_| c.u64())
                .collect::<Result<Vec<_>, _>>()?;
            let ggml_type = GgmlType::from_id(c.u32()?);
            let offset = c.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let align = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32)
            .max(1) as usize;
        let data_start = c.pos.div_ceil(align) * align;
        let g = Self {
            version,
            metadata,
            tensors,
            data_start,
            bytes,
        };
        for t in &g.tensors {
            g.byte_range(t)?;
        }
        Ok(g)
    }

    /// Reads and parses the file at `path`.
    pub fn open(path: &Path) -> crate::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(bytes).map_err(|e| Error::Weights(format!("{}: {e}", path.display())))
    }

    fn byte_range(&self, t: &TensorInfo) -> Result<std::ops::Range<usize>, String> {
        let numel = t
            .numel()
            .ok_or_else(|| format!("tensor {}: dims {:?} overflow", t.name, t.dims))?;
        let Some((per, size)) = t.ggml_type.block() else {
            // Unknown types are reported when the tensor is read, not when the file is opened.
            return Ok(0..0);
        };
        if numel % per as u64 != 0 {
            return Err(format!(
                "tensor {}: {numel} weights are not a whole number of {:?} blocks",
                t.name, t.ggml_type
            ));
        }
        let len = (numel / per as u64)
            .checked_mul(size as u64)
            .ok_or_else(|| format!("tensor {}: size overflows", t.name))?;
        let start = (self.data_start as u64)
            .checked_add(t.offset)
            .ok_or_else(|| format!("tensor {}: offset overflows", t.name))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len() as u64)
            .ok_or_else(|| {
                format!(
                    "tensor {}: bytes {start}..{} lie beyond the end of the file ({} bytes; truncated?)",
                    t.name,
                    start + len,
                    self.bytes.len()
                )
            })?;
        Ok(start as usize..end as usize)
    }

    /// The directory entry of `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The stored bytes of tensor `name` (its blocks as they are in the file) with its type and
    /// row-major shape.
    pub fn tensor_raw(&self, name: &str) -> crate::Result<(GgmlType, Vec<usize>, &[u8])> {
        let t = self.info(name).ok_or_else(|| Error::MissingTensor {
            tensor: name.to_string(),
            file: "gguf".into(),
        })?;
        let range = self.byte_range(t).map_err(Error::Weights)?;
        Ok((t.ggml_type, t.shape(), &self.bytes[range]))
    }

    /// Dequantises tensor `name` to f32, row-major with shape [`TensorInfo::shape`].
    pub fn tensor_f32(&self, name: &str) -> crate::Result<(Vec<usize>, Vec<f32>)> {
        let t = self.info(name).ok_or_else(|| Error::MissingTensor {
            tensor: name.to_string(),
            file: "gguf".into(),
        })?;
        let range = self.byte_range(t).map_err(Error::Weights)?;
        let raw = &self.bytes[range];
        let data = dequantize(t.ggml_type, raw).ok_or_else(|| {
            Error::Unsupported(format!("tensor {name} has ggml type {:?}", t.ggml_type))
        })?;
        Ok((t.shape(), data))
    }
}

#[cfg(feature = "tokenizers")]
impl Gguf {
    /// The byte-level BPE tokenizer embedded in the file (`tokenizer.ggml.model = "gpt2"`;
    /// feature `tokenizers`).
    pub fn tokenizer(&self) -> crate::Result<textdata::TextTokenizer> {
        let strings = |key: &str| -> crate::Result<Vec<String>> {
            self.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| Error::Weights(format!("GGUF metadata {key} is missing")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| Error::Weights(format!("{key} holds a non-string")))
                })
                .collect()
        };
        let model = self
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .unwrap_or("");
        if model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer model '{model}' (only gpt2 byte-level BPE)"
            )));
        }
        let pre = self
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let split_digits = matches!(pre, "smollm" | "llama-bpe" | "qwen2" | "deepseek-llm");
        Ok(textdata::TextTokenizer::byte_level_bpe(
            &strings("tokenizer.ggml.tokens")?,
            &strings("tokenizer.ggml.merges")?,
            split_digits,
        )?)
    }
}

/// Dequantises raw blocks of `ty` (a whole number of blocks) to f32; `None` for unknown types.
pub fn dequantize(ty: GgmlType, raw: &[u8]) -> Option<Vec<f32>> {
    let (per, size) = ty.block()?;
    let mut out = Vec::with_capacity(raw.len() / size * per);
    for b in raw.chunks_exact(size) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16(b[0], b[1])),
            GgmlType::Bf16 => out.push(f32::from_bits(
                (u16::from_le_bytes([b[0], b[1]]) as u32) << 16,
            )),
            GgmlType::Q4_0 => {
                let d = f16(b[0], b[1]);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|q| d * ((q & 0x0F) as f32 - 8.0)));
                out.extend(qs.iter().map(|q| d * ((q >> 4) as f32 - 8.0)));
            }
            GgmlType::Q4_1 => {
                let d = f16(b[0], b[1]);
                let m = f16(b[2], b[3]);
                let qs = &b[4..20];
                out.extend(qs.iter().map(|q| d * (q & 0x0F) as f32 + m));
                out.extend(qs.iter().map(|q| d * (q >> 4) as f32 + m));
            }
            GgmlType::Q8_0 => {
                let d = f16(b[0], b[1]);
                out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
            GgmlType::Q6K => dequantize_q6k(b, &mut out),
            GgmlType::Other(_) => return None,
        }
    }
    Some(out)
}

/// Q6_K super-block: `ql[128]` (low 4 bits), `qh[64]` (high 2 bits), `scales[16]` (i8), `d` (f16);
/// w = d · scale · (q − 32), as ggml's `dequantize_row_q6_K`.
fn dequantize_q6k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, rest) = b.split_at(128);
    let (qh, rest) = rest.split_at(64);
    let (sc, d) = rest.split_at(16);
    let d = f16(d[0], d[1]);
    let mut y = [0f32; 256];
    for half in 0..2 {
        let ql = &ql[64 * half..];
        let qh = &qh[32 * half..];
        let sc = &sc[8 * half..];
        let y = &mut y[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
    out.extend_from_slice(&y);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn q4_1_puts_low_nibbles_first_then_high_nibbles() {
        let mut b = Vec::new();
        b.extend(h(0.5));
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        let w = dequantize(GgmlType::Q4_1, &b).unwrap();
        assert_eq!(w.len(), 32);
        assert_eq!(w[0], -1.0);
        assert_eq!(w[3], 0.5 * 3.0 - 1.0);
        assert_eq!(w[16], 0.5 * 15.0 - 1.0);
        assert_eq!(w[31], -1.0);
    }

    #[test]
    fn q8_0_scales_signed_bytes() {
        let mut b = Vec::new();
        b.extend(h(0.25));
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let w = dequantize(GgmlType::Q8_0, &b).unwrap();
        assert_eq!(w[0], -4.0);
        assert_eq!(w[31], 0.25 * 15.0);
    }

    #[test]
    fn q4_0_is_offset_by_eight() {
        let mut b = Vec::new();
        b.extend(h(2.0));
        b.extend([0x8Fu8; 16]);
        let w = dequantize(GgmlType::Q4_0, &b).unwrap();
        assert_eq!(w[0], 2.0 * 7.0);
        assert_eq!(w[16], 0.0);
    }

    fn tiny_file() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(1u64.to_le_bytes()); // kv
        let key = b"general.architecture";
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key);
        b.extend(8u32.to_le_bytes());
        b.extend(5u64.to_le_bytes());
        b.extend(b"llama");
        let name = b"w";
        b.extend((name.len() as u64).to_le_bytes());
        b.extend(name);
        b.extend(2u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        for i in 0..6 {
            b.extend((i as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn a_small_file_round_trips() {
        let g = Gguf::parse(tiny_file()).unwrap();
        assert_eq!(
            g.get("general.architecture").and_then(Value::as_str),
            Some("llama")
        );
        let (shape, data) = g.tensor_f32("w").unwrap();
        assert_eq!(shape, vec![3, 2]);
        assert_eq!(data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn an_unsupported_quantisation_names_the_tensor() {
        let mut f = tiny_file();
        // The tensor info holds dims 2 and 3 (u64 each), then the ggml type (u32, F32 = 0):
        // make it 12 (Q4_K), which this reader does not dequantise.
        let needle = [2u8, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let at = f
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("dims followed by the F32 type id");
        f[at + 16] = 12;
        let g = Gguf::parse(f).unwrap();
        let err = g
            .tensor_f32("w")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("tensor w") && err.contains("Other(12)"),
            "{err}"
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let f = tiny_file();
        for n in 0..f.len() {
            assert!(
                Gguf::parse(f[..n].to_vec()).is_err(),
                "prefix of {n} bytes parsed"
            );
        }
    }
}
