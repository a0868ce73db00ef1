//! Parameters of any burn module by path, on the host: snapshots, drifts, write-back.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::Error;

/// One parameter's values.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Dotted module path (as `trainer::inventory` names it).
    pub path: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Every float parameter of a module, in visiting order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The parameters.
    pub entries: Vec<Entry>,
}

struct Collect {
    stack: Vec<String>,
    out: Vec<Entry>,
    err: Option<trainer::host::TensorReadError>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val();
        let shape = v.dims().to_vec();
        match trainer::host::f32s(v) {
            Ok(data) => self.out.push(Entry {
                path: self.stack.join("."),
                shape,
                data,
            }),
            Err(e) => self.err = Some(e),
        }
    }
}

struct Write<'a> {
    stack: Vec<String>,
    snap: &'a std::collections::HashMap<&'a str, &'a Entry>,
}

impl ModuleMapper for Write<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.stack.join(".");
        match self.snap.get(path.as_str()) {
            Some(e) => {
                let id = param.id;
                let v = param.val();
                let device = v.device();
                let require = v.is_require_grad();
                let t = Tensor::<D>::from_data(
                    TensorData::new(e.data.clone(), e.shape.clone()),
                    &device,
                );
                Param::initialized(id, t.set_require_grad(require))
            }
            None => param,
        }
    }
}

impl Snapshot {
    /// Reads every float parameter of `module`.
    pub fn of<M: Module>(module: &M) -> crate::Result<Self> {
        let mut c = Collect {
            stack: Vec::new(),
            out: Vec::new(),
            err: None,
        };
        module.visit(&mut c);
        match c.err {
            Some(e) => Err(Error::TensorRead(e)),
            None => Ok(Self { entries: c.out }),
        }
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// Scalars in all entries.
    pub fn numel(&self) -> usize {
        self.entries.iter().map(|e| e.data.len()).sum()
    }

    /// Writes the entries into `module` by path (parameter ids kept; paths the snapshot lacks
    /// are left alone). Every entry must match a parameter of the same shape.
    pub fn write_into<M: Module>(&self, module: M) -> crate::Result<M> {
        let here = Self::of(&module)?;
        for e in &self.entries {
            match here.get(&e.path) {
                None => {
                    return Err(Error::Mismatch {
                        path: e.path.clone(),
                        reason: "not a parameter of the target module".into(),
                    });
                }
                Some(h) if h.shape != e.shape => {
                    return Err(Error::Mismatch {
                        path: e.path.clone(),
                        reason: format!("shape {:?} vs {:?}", e.shape, h.shape),
                    });
                }
                Some(_) => {}
            }
        }
        let map = self.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        Ok(module.map(&mut Write {
            stack: Vec::new(),
            snap: &map,
        }))
    }

    /// Checks that `other` has the same paths and shapes, in the same order.
    pub fn check_same_layout(&self, other: &Snapshot) -> crate::Result<()> {
        if self.entries.len() != other.entries.len() {
            let a: std::collections::HashSet<&str> =
                self.entries.iter().map(|e| e.path.as_str()).collect();
            let path = other
                .entries
                .iter()
                .map(|e| e.path.as_str())
                .find(|p| !a.contains(p))
                .or_else(|| self.entries.last().map(|e| e.path.as_str()))
                .unwrap_or("")
                .to_string();
            return Err(Error::Mismatch {
                path,
                reason: format!(
                    "{} vs {} parameters",
                    self.entries.len(),
                    other.entries.len()
                ),
            });
        }
        for (a, b) in self.entries.iter().zip(&other.entries) {
            if a.path != b.path || a.shape != b.shape {
                return Err(Error::Mismatch {
                    path: a.path.clone(),
                    reason: format!("{} {:?} vs {} {:?}", a.path, a.shape, b.path, b.shape),
                });
            }
        }
        Ok(())
    }

    /// `f(self_i, base_i)` entry by entry, for two snapshots of one layout.
    fn zip_map(&self, base: &Snapshot, f: impl Fn(f32, f32) -> f32) -> crate::Result<Snapshot> {
        self.check_same_layout(base)?;
        Ok(Snapshot {
            entries: self
                .entries
                .iter()
                .zip(&base.entries)
                .map(|(a, b)| Entry {
                    path: a.path.clone(),
                    shape: a.shape.clone(),
                    data: a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect(),
                })
                .collect(),
        })
    }

    /// `self − base` entry by entry (the parameter drift when `self` is fine-tuned and `base`
    /// pre-trained).
    pub fn minus(&self, base: &Snapshot) -> crate::Result<Snapshot> {
        self.zip_map(base, |x, y| x - y)
    }

    /// `base + t·(self − base)`: a point on the straight path.
    pub fn lerp_from(&self, base: &Snapshot, t: f32) -> crate::Result<Snapshot> {
        self.zip_map(base, |x, y| y + t * (x - y))
    }
}
