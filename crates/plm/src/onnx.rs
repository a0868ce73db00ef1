//! Just enough of ONNX to take the weights out of an exported transformer: a bounds-checked
//! protobuf reader for `ModelProto.graph` (its nodes and float initializers), and the mapping of
//! an exported BERT's initializers back to HF names.
//!
//! PyTorch's exporter keeps the names of bias and LayerNorm initializers
//! (`model.0.auto_model.encoder.layer.0.attention.self.query.bias`) but renames the MatMul weights
//! (`onnx::MatMul_470`, stored `[in, out]`). A weight's role is recovered from the graph: its
//! MatMul output feeds an `Add` whose other input is the named bias.

use std::collections::HashMap;
use std::path::Path;

use crate::Error;

/// A float initializer.
#[derive(Clone, Debug, PartialEq)]
pub struct Initializer {
    /// Name.
    pub name: String,
    /// Shape.
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A graph node (only what the weight mapping needs).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Node {
    /// Operator.
    pub op_type: String,
    /// Input value names.
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
}

/// The float initializers and nodes of a model's main graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Initializers of element type FLOAT.
    pub initializers: Vec<Initializer>,
    /// Nodes in file order.
    pub nodes: Vec<Node>,
}

enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Pb<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Pb<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                let s = self.take(4)?;
                Wire::Fixed32(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
}

fn parse_node(b: &[u8]) -> Result<Node, String> {
    let mut n = Node::default();
    let mut pb = Pb::new(b);
    while let Some((f, w)) = pb.next()? {
        match (f, w) {
            (1, Wire::Bytes(s)) => n.inputs.push(utf8(s)?),
            (2, Wire::Bytes(s)) => n.outputs.push(utf8(s)?),
            (4, Wire::Bytes(s)) => n.op_type = utf8(s)?,
            _ => {}
        }
    }
    Ok(n)
}

/// `Some` for FLOAT tensors, `None` for other element types.
fn parse_tensor(b: &[u8]) -> Result<Option<Initializer>, String> {
    let mut dims = Vec::new();
    let mut data_type = 0u64;
    let mut name = String::new();
    let mut raw: Option<&[u8]> = None;
    let mut floats = Vec::new();
    let mut pb = Pb::new(b);
    while let Some((f, w)) = pb.next()? {
        match (f, w) {
            (1, Wire::Varint(d)) => dims.push(d),
            (1, Wire::Bytes(packed)) => {
                let mut p = Pb::new(packed);
                while p.pos < packed.len() {
                    dims.push(p.varint()?);
                }
            }
            (2, Wire::Varint(t)) => data_type = t,
            (4, Wire::Fixed32(bits)) => floats.push(f32::from_bits(bits)),
            (4, Wire::Bytes(packed)) => floats.extend(
                packed
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            (8, Wire::Bytes(s)) => name = utf8(s)?,
            (9, Wire::Bytes(s)) => raw = Some(s),
            (13, Wire::Bytes(_)) => {
                return Err(format!(
                    "initializer {name} uses external data (unsupported)"
                ));
            }
            _ => {}
        }
    }
    if data_type != 1 {
        return Ok(None);
    }
    let dims: Vec<usize> = dims
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format!("{name}: dimension too large")))
        .collect::<Result<_, _>>()?;
    let numel = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("{name}: shape overflows"))?;
    let data = match raw {
        Some(r) => r
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        None => floats,
    };
    if data.len() != numel {
        return Err(format!(
            "initializer {name}: {} values for shape {dims:?}",
            data.len()
        ));
    }
    Ok(Some(Initializer { name, dims, data }))
}

impl Graph {
    /// Parses the main graph of a serialised `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut pb = Pb::new(bytes);
        let mut graph = None;
        while let Some((f, w)) = pb.next()? {
            if let (7, Wire::Bytes(g)) = (f, w) {
                graph = Some(g);
            }
        }
        let g = graph.ok_or("no graph in the model")?;
        let mut out = Graph::default();
        let mut pb = Pb::new(g);
        while let Some((f, w)) = pb.next()? {
            match (f, w) {
                (1, Wire::Bytes(n)) => out.nodes.push(parse_node(n)?),
                (5, Wire::Bytes(t)) => {
                    if let Some(t) = parse_tensor(t)? {
                        out.initializers.push(t);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Reads and parses an `.onnx` file.
    pub fn open(path: &Path) -> crate::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes).map_err(|e| Error::Weights(format!("{}: {e}", path.display())))
    }

    /// The initializers under HF names, weights in PyTorch's `[out, in]` layout: named ones have
    /// everything up to and including `strip` removed; anonymous MatMul weights are named after
    /// the bias their product is added to, and transposed.
    pub fn hf_tensors(&self, strip: &str) -> Result<Vec<crate::safetensors::NamedTensor>, String> {
        let by_name: HashMap<&str, &Initializer> = self
            .initializers
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let hf = |n: &str| n.find(strip).map(|i| n[i + strip.len()..].to_string());
        let mut out = Vec::new();
        for t in &self.initializers {
            if let Some(name) = hf(&t.name) {
                out.push((name, t.dims.clone(), t.data.clone()));
            }
        }
        for node in self.nodes.iter().filter(|n| n.op_type == "MatMul") {
            let Some(w) = node.inputs.iter().find_map(|i| by_name.get(i.as_str())) else {
                continue;
            };
            if hf(&w.name).is_some() {
                continue;
            }
            let Some(y) = node.outputs.first() else {
                continue;
            };
            let bias = self
                .nodes
                .iter()
                .filter(|n| n.op_type == "Add" && n.inputs.contains(y))
                .flat_map(|n| n.inputs.iter())
                .find_map(|i| {
                    i.strip_suffix(".bias")
                        .filter(|_| by_name.contains_key(i.as_str()))
                        .map(|_| i)
                })
                .ok_or_else(|| format!("MatMul weight {} feeds no named bias", w.name))?;
            let name = hf(bias)
                .and_then(|b| b.strip_suffix(".bias").map(|s| format!("{s}.weight")))
                .ok_or_else(|| format!("bias {bias} lacks the prefix {strip}"))?;
            let [rows, cols] = w.dims[..] else {
                return Err(format!("MatMul weight {} is not 2-D", w.name));
            };
            let mut tr = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    tr[c * rows + r] = w.data[r * cols + c];
                }
            }
            out.push((name, vec![cols, rows], tr));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn field(no: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(no << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend(payload);
    }

    fn model() -> Vec<u8> {
        let mut t = Vec::new();
        varint(1 << 3, &mut t);
        varint(2, &mut t);
        varint(2 << 3, &mut t);
        varint(1, &mut t);
        field(8, b"w", &mut t);
        field(
            9,
            &[1f32, 2.0]
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect::<Vec<_>>(),
            &mut t,
        );
        let mut g = Vec::new();
        field(5, &t, &mut g);
        let mut m = Vec::new();
        field(7, &g, &mut m);
        m
    }

    #[test]
    fn reads_a_float_initializer() {
        let g = Graph::parse(&model()).unwrap();
        assert_eq!(g.initializers[0].name, "w");
        assert_eq!(g.initializers[0].dims, vec![2]);
        assert_eq!(g.initializers[0].data, vec![1.0, 2.0]);
    }

    #[test]
    fn every_truncation_is_an_error_or_a_shorter_graph_never_a_panic() {
        let m = model();
        for n in 0..m.len() {
            let _ = Graph::parse(&m[..n]);
        }
        assert!(Graph::parse(&m[..m.len() - 3]).is_err());
    }
}
