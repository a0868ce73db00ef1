//! Parameter inventory by module path: freezing, gradient clipping and adapters.
//!
//! Paths are the field names joined by dots, as burn's optimizer and records name them
//! (`layers.3.mlp.experts.7.up.weight`). A trainable predicate over these paths decides which
//! parameters receive gradients; the rest are never touched by the optimizer (not even weight
//! decay), so they stay bit-identical.

use std::collections::HashSet;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::{Error, Result};

/// One float parameter of a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Dotted module path.
    pub path: String,
    /// burn's parameter id (stable across optimizer steps and records).
    pub id: ParamId,
    /// Tensor shape.
    pub shape: Vec<usize>,
}

impl ParamInfo {
    /// Number of scalars in the parameter.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Default)]
struct Inventory {
    stack: Vec<String>,
    out: Vec<ParamInfo>,
}

impl ModuleVisitor for Inventory {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push(ParamInfo {
            path: self.stack.join("."),
            id: param.id,
            shape: param.val().dims().to_vec(),
        });
    }
}

/// All float parameters of `module`, in visiting order.
pub fn inventory<M: Module>(module: &M) -> Vec<ParamInfo> {
    let mut v = Inventory::default();
    module.visit(&mut v);
    v.out
}

/// Which parameters the optimizer may update.
#[derive(Clone, Debug)]
pub struct TrainableSet {
    params: Vec<ParamInfo>,
    ids: HashSet<ParamId>,
}

impl TrainableSet {
    /// Every parameter of `module` for which `trainable(path)` holds.
    pub fn select<M: Module>(module: &M, trainable: impl Fn(&str) -> bool) -> Self {
        let params: Vec<ParamInfo> = inventory(module)
            .into_iter()
            .filter(|p| trainable(&p.path))
            .collect();
        let ids = params.iter().map(|p| p.id).collect();
        Self { params, ids }
    }

    /// All parameters of `module`.
    pub fn all<M: Module>(module: &M) -> Self {
        Self::select(module, |_| true)
    }

    /// The selected parameters.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// Number of trainable scalars.
    pub fn numel(&self) -> usize {
        self.params.iter().map(ParamInfo::numel).sum()
    }

    /// Whether `id` is trainable.
    pub fn contains(&self, id: &ParamId) -> bool {
        self.ids.contains(id)
    }

    /// The gradients of the trainable parameters only (frozen ones are dropped).
    pub fn gradients<M: Module>(
        &self,
        grads: &mut burn::tensor::Gradients,
        module: &M,
    ) -> GradientsParams {
        let ids: Vec<ParamId> = self.params.iter().map(|p| p.id).collect();
        GradientsParams::from_params(grads, module, &ids)
    }

    /// Saves only the trainable parameters (an adapter) as a burnpack file, atomically.
    pub fn save_adapter<M: Module>(&self, module: &M, path: &Path) -> Result<()> {
        let paths: Vec<String> = self.params.iter().map(|p| p.path.clone()).collect();
        let record = module
            .clone()
            .into_record_group(ParamGroup::from_paths(paths));
        let bytes = record.into_bytes()?;
        crate::fs::write_atomic(path, &bytes)
    }
}

/// Loads an adapter written by [`TrainableSet::save_adapter`] over `module`: the parameters it
/// names are replaced, all others are kept.
pub fn load_adapter<M: Module>(module: M, path: &Path) -> Result<M> {
    Ok(module.try_load_record(read_record(path)?.allow_partial(true))?)
}

/// Saves every parameter of `module` as a burnpack file, atomically (read back with
/// [`load_module`]).
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<()> {
    let bytes = module.clone().into_record().into_bytes()?;
    crate::fs::write_atomic(path, &bytes)
}

/// Loads a file written by [`save_module`] into `module`, which must have the same parameters
/// (a missing or mis-shaped one is an error).
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    Ok(module.try_load_record(read_record(path)?)?)
}

fn read_record(path: &Path) -> Result<burn::store::ModuleRecord> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(burn::store::ModuleRecord::from_bytes(
        burn::tensor::Bytes::from_bytes_vec(bytes),
    )?)
}

struct RequireGrad<'a> {
    ids: &'a HashSet<ParamId>,
    flag: bool,
}

impl burn::module::ModuleMapper for RequireGrad<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.ids.contains(&param.id) {
            param.set_require_grad(self.flag)
        } else {
            param
        }
    }
}

/// Sets gradient tracking of the parameters in `ids` to `flag` (the rest are left as they are).
/// The trainer turns it off for frozen parameters while it trains, so autodiff skips their
/// weight gradients (ESFT's time saving), and turns it back on when it returns the model.
pub fn set_require_grad<M: Module>(module: M, ids: &HashSet<ParamId>, flag: bool) -> M {
    module.map(&mut RequireGrad { ids, flag })
}

struct CastWhere<'a> {
    stack: Vec<String>,
    dtype: burn::tensor::DType,
    select: &'a dyn Fn(&str) -> bool,
}

impl burn::module::ModuleMapper for CastWhere<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !(self.select)(&self.stack.join(".")) {
            return param;
        }
        let (id, value, mapper) = param.consume();
        if value.dtype() == self.dtype {
            return Param::from_mapped_value(id, value, mapper);
        }
        // A new leaf (same id, same tracking): a cast of the old leaf would be an interior
        // node, and its gradient would never reach the optimizer.
        let track = value.is_require_grad();
        let cast = value
            .detach()
            .set_require_grad(false)
            .cast(self.dtype)
            .set_require_grad(track);
        Param::from_mapped_value(id, cast, mapper)
    }
}

/// `module` with the float parameters whose path `select` accepts held in `dtype` (ids kept).
/// With a base loaded in bf16, `cast_where(model, DType::F32, |p| cfg.is_trainable(p))` makes
/// the parameters to train f32 beside the frozen bf16 rest (layers that mix dtypes cast at
/// their boundary, as moe-arch's experts do).
pub fn cast_where<M: Module>(
    module: M,
    dtype: burn::tensor::DType,
    select: impl Fn(&str) -> bool,
) -> M {
    module.map(&mut CastWhere {
        stack: Vec::new(),
        dtype,
        select: &select,
    })
}

struct Fresh;

impl burn::module::ModuleMapper for Fresh {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, value, mapper) = param.consume();
        let track = value.is_require_grad();
        let copy = Tensor::<D>::from_data(value.to_data(), &value.device()).set_require_grad(track);
        Param::from_mapped_value(ParamId::new(), copy, mapper)
    }
}

/// An independent copy of `module`: the same values in new tensors with new parameter ids.
///
/// A burn `clone()` keeps the ids and the autodiff leaves, so two clones inside one model are
/// tied: their gradients add up and land on the first of them, and the other never moves. Use this
/// when several members of one model start from the same pretrained weights but must train
/// apart (the complete models of a cascade).
pub fn fresh_copy<M: Module>(module: M) -> M {
    module.map(&mut Fresh)
}

/// `module` with every parameter initialised now.
///
/// Burn 0.22 initialises a parameter lazily, at its first use, from the device RNG of that
/// moment. A model built right after `device.seed(s)` but first used after another reseeding
/// (or after other models drew from the RNG) gets weights that depend on what ran in between,
/// so an experiment's results would depend on the order of its seeds or tasks. Call this right
/// after building a model whose weights must come from the seed set before it; a model loaded
/// from weights or trained straight away does not need it.
pub fn materialise<M: Module>(module: M) -> M {
    module.visit(&mut Materialise);
    module
}

struct Materialise;

impl ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // reading the value runs the initialisation, shared by every clone of the parameter
        let _ = param.val();
    }
}

struct ForEachGrad<'a, F: FnMut(&mut GradientsParams, ParamId, usize)> {
    grads: &'a mut GradientsParams,
    f: F,
}

impl<F: FnMut(&mut GradientsParams, ParamId, usize)> ModuleVisitor for ForEachGrad<'_, F> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        (self.f)(self.grads, param.id, D);
    }
}

/// Calls `f(grads, id, rank)` for every float parameter of `module` (the rank is only known
/// inside the visitor, so the rank-generic work is dispatched from there).
fn for_each_grad<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    f: impl FnMut(&mut GradientsParams, ParamId, usize),
) {
    module.visit(&mut ForEachGrad { grads, f });
}

/// Squared L2 norm of one gradient as a device scalar, or `None` if absent.
fn sq_norm(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<Tensor<1>> {
    macro_rules! by_rank {
        ($($d:literal),*) => {
            match rank {
                $($d => grads.get::<$d>(id).map(|g| g.powi_scalar(2).sum()),)*
                _ => None,
            }
        };
    }
    by_rank!(1, 2, 3, 4, 5, 6)
}

fn scale(grads: &mut GradientsParams, id: ParamId, rank: usize, factor: f32) {
    macro_rules! by_rank {
        ($($d:literal),*) => {
            match rank {
                $($d => if let Some(g) = grads.remove::<$d>(id) {
                    grads.register(id, g.mul_scalar(factor));
                },)*
                _ => {}
            }
        };
    }
    by_rank!(1, 2, 3, 4, 5, 6)
}

/// Moves the gradients of the parameters in `ids` out of `grads` into a new set (for an
/// optimizer step with its own learning rate).
pub fn split_grads<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    ids: &HashSet<ParamId>,
) -> GradientsParams {
    let mut out = GradientsParams::new();
    for_each_grad(module, grads, |g, id, rank| {
        if !ids.contains(&id) {
            return;
        }
        macro_rules! by_rank {
            ($($d:literal),*) => {
                match rank {
                    $($d => if let Some(t) = g.remove::<$d>(id) {
                        out.register(id, t);
                    },)*
                    _ => {}
                }
            };
        }
        by_rank!(1, 2, 3, 4, 5, 6)
    });
    out
}

/// The joint L2 norm of all gradients in `grads`.
pub fn global_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams) -> Result<f32> {
    let mut total: Option<Tensor<1>> = None;
    for_each_grad(module, grads, |g, id, rank| {
        if let Some(s) = sq_norm(g, id, rank) {
            total = Some(match total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    });
    match total {
        None => Ok(0.0),
        Some(t) => {
            let sq = crate::host::scalar(t)? as f32;
            Ok(sq.sqrt())
        }
    }
}

/// Multiplies every gradient in `grads` by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f32) {
    for_each_grad(module, grads, |g, id, rank| scale(g, id, rank, factor));
}

/// Clips each gradient tensor to `max_norm` separately, or each element to `[-v, v]`.
pub fn clip_each<M: Module>(module: &M, grads: &mut GradientsParams, clip: &crate::GradClip) {
    let clipper = match *clip {
        crate::GradClip::PerTensorNorm(v) => burn::optim::grad_clipping::GradientClipping::Norm(v),
        crate::GradClip::Value(v) => burn::optim::grad_clipping::GradientClipping::Value(v),
        crate::GradClip::GlobalNorm(_) => return,
    };
    for_each_grad(module, grads, |g, id, rank| {
        macro_rules! by_rank {
            ($($d:literal),*) => {
                match rank {
                    $($d => if let Some(t) = g.remove::<$d>(id) {
                        g.register(id, clipper.clip_gradient(t));
                    },)*
                    _ => {}
                }
            };
        }
        by_rank!(1, 2, 3, 4, 5, 6)
    });
}
