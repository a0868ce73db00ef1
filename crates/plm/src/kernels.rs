//! CPU kernels for the hot paths that flex's own ops leave slow, behind one small interface:
//! each function takes the fast path when the tensor lives on flex (no autodiff, f32) and
//! otherwise falls back to burn's ops, so model code calls it on any device and training keeps
//! its gradients.
//!
//! - [`gelu`]: the exact (erf) GELU. Flex evaluates `erf` with scalar libm, one element at a
//!   time; here a rational approximation of `erf` (odd degree-13 over even degree-8 polynomial
//!   on `[-4, 4]`, ±1 outside; a few ulp of f32) runs in SIMD registers, in place on the
//!   activation buffer; inputs below −1, where `1 + erf` cancels, take an `erfc` form with a
//!   small relative error (a fitted polynomial times a vectorised `exp`).
//! - [`silu_mul`]: SwiGLU's `silu(gate) · up` in one pass over the two buffers, with a
//!   vectorised `exp` (flex runs libm's scalar `expf` for the sigmoid, then a second pass for
//!   the product).
//! - [`QuantMatrix`] and [`linear_quant`]: a weight matrix kept in its GGUF block format (Q4_0,
//!   Q4_1, Q8_0) and multiplied by a few activation rows with the blocks dequantised inside the
//!   dot product, as llama.cpp does: decoding reads 4.5–8.5 bits per weight instead of 32.
//! - [`linear`], [`linear_gelu`] and [`linear_add_norm`]: a linear layer as one packed,
//!   register-blocked product (the crate's `sgemm` module) with the bias in its accumulators
//!   and the GELU, or the residual add and layer norm, applied to cache-hot rows, for inputs of
//!   at least [`LINEAR_MIN_ROWS`] rows.
//! - [`attention_rows`]: multi-head attention on the projections' `[batch, seq, heads ·
//!   head_dim]` rows (the crate's `mha` module): no head reshapes, no probability tensor.
//!
//! The loops are plain Rust compiled once per instruction set (AVX-512, AVX2+FMA, baseline)
//! through `pulp`'s runtime dispatch, which LLVM vectorises.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::gguf::GgmlType;
use crate::{Error, Result};

/// Whether `device` is flex (an autodiff device counts as what it wraps).
pub fn is_flex(device: &Device) -> bool {
    use burn::backend::DeviceOps;
    // burn-dispatch encodes the backend in the high byte of the type id; flex is 4.
    device.as_dispatch().id().type_id >> 8 == 4
}

/// Whether `x` takes the host fast path: on flex, f32, and no autodiff.
fn host_path<const D: usize>(x: &Tensor<D>) -> bool {
    let device = x.device();
    x.dtype() == DType::F32 && !device.is_autodiff() && is_flex(&device)
}

/// `erf(x)`: a rational approximation (odd/even minimax polynomials in `x` clamped to
/// `[-4, 4]`, where erf is ±1 to f32 precision); within 4e-7 of the exact value everywhere (a few
/// f32 ulp; measured against the Taylor series in f64).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.9546e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// `e^x` for `x` in `[-87, 0]`: Cody–Waite reduction by ln 2 and Cephes' degree-6 polynomial,
/// the power of two built in the exponent bits (about 1 ulp).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    // a comparison, not `f32::max` (whose NaN rule costs two more instructions per vector and
    // would turn a NaN into e^-87); a NaN stays NaN
    let x = if x < -87.0 { -87.0 } else { x };
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let r2 = r * r;
    let mut p = 1.987_569_1e-4 * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r2 + r + 1.0;
    // 2^n from the bits of n + 127 (an integer in [2, 127] here): adding 2^23 puts it in the
    // low mantissa bits, so integer vector ops build the exponent (`n as i32` is a saturating
    // conversion that LLVM leaves scalar, one lane at a time); wrapping, or the workspace's
    // overflow checks would keep the loop scalar too
    let biased = (n + (8_388_608.0 + 127.0))
        .to_bits()
        .wrapping_sub(0x4B00_0000);
    y * f32::from_bits(biased << 23)
}

/// `erfc(z)` for `z` ≥ 0.65 with a small relative error (3e-7): `e^{−z²}·g(t)`, `t = 1/(1 +
/// 0.3275911·z)`, `g` a degree-8 polynomial in `t` fitted (relative least squares on Chebyshev
/// nodes of `[0.65, 4]`) to `erfc(z)·e^{z²}`.
#[inline(always)]
fn erfc_tail(z: f32) -> f32 {
    const C: [f32; 8] = [
        0.185_447_86,
        0.175_741_26,
        0.232_424_17,
        -0.051_538_717,
        0.584_691_8,
        -0.538_073_06,
        0.569_151_6,
        -0.157_849_91,
    ];
    let z = z.min(9.0);
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let mut g = 0f32;
    for c in C.iter().rev() {
        g = (g + c) * t;
    }
    g * exp_nonpositive(-(z * z))
}

/// Below this input the GELU takes the `erfc` form: `1 + erf(x/√2)` cancels there, and the
/// absolute error of the erf approximation would become a relative one of 1e-6 and more.
const GELU_TAIL: f32 = -1.0;

/// GELU with the exact erf form, `0.5·x·(1 + erf(x/√2))` (`0.5·x·erfc(−x/√2)` below
/// `GELU_TAIL`), on every element of `x`.
pub fn gelu_slice(x: &mut [f32]) {
    x.par_chunks_mut(1 << 15)
        .for_each(|c| pulp::Arch::new().dispatch(Gelu(c)));
}

/// The GELU loop as a `pulp` op: `with_simd` is inlined into pulp's per-instruction-set
/// functions, so LLVM vectorises the loop for each (a closure would stay a separate baseline
/// function).
struct Gelu<'a>(&'a mut [f32]);

impl pulp::WithSimd for Gelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for v in self.0.iter_mut() {
            let o = *v;
            let z = o * std::f32::consts::FRAC_1_SQRT_2;
            let main = 0.5 * o * (1.0 + erf(z));
            let tail = 0.5 * o * erfc_tail(-z);
            *v = if o < GELU_TAIL { tail } else { main };
        }
    }
}

/// The exact GELU (as `burn::tensor::activation::gelu`), in place on the host buffer when `x`
/// is an f32 flex tensor without autodiff.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !host_path(&x) {
        return burn::tensor::activation::gelu(x);
    }
    let device = x.device();
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(s) => gelu_slice(s),
        // not reached for an f32 tensor; burn's op gives the right answer anyway
        Err(_) => return burn::tensor::activation::gelu(Tensor::from_data(data, &device)),
    }
    Tensor::from_data(data, &device)
}

/// `silu(g)·u = g·σ(g)·u` on every element, written into `g`. The sigmoid takes
/// `e^{−|g|}` (never overflows) and its two branch forms, `1/(1 + t)` and `t/(1 + t)`.
pub fn silu_mul_slice(g: &mut [f32], u: &[f32]) {
    g.par_chunks_mut(1 << 15)
        .zip(u.par_chunks(1 << 15))
        .for_each(|(g, u)| pulp::Arch::new().dispatch(SiluMul(g, u)));
}

/// The SwiGLU loop as a `pulp` op (see [`Gelu`]).
struct SiluMul<'a>(&'a mut [f32], &'a [f32]);

impl pulp::WithSimd for SiluMul<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (g, &u) in self.0.iter_mut().zip(self.1) {
            *g = silu(*g) * u;
        }
    }
}

/// `x · σ(x)`, the sigmoid from `e^{−|x|}` (never overflows) and its two branch forms,
/// `1/(1 + t)` and `t/(1 + t)`; inlined into the callers' vectorised loops.
#[inline(always)]
fn silu(x: f32) -> f32 {
    let t = exp_nonpositive(-x.abs());
    let num = if x >= 0.0 { 1.0 } else { t };
    x * (num / (1.0 + t))
}

/// `silu(gate) * up` (SwiGLU's gating, as burn's `activation::silu(gate) * up`), one pass on
/// the host when both are f32 flex tensors of one shape without autodiff; the result reuses
/// `gate`'s buffer when nothing else holds it.
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if !host_path(&gate) || !host_path(&up) || gate.dims() != up.dims() {
        return burn::tensor::activation::silu(gate) * up;
    }
    let device = gate.device();
    let mut g = gate.into_data();
    let u = up.into_data();
    match (g.as_mut_slice::<f32>(), u.as_slice::<f32>()) {
        (Ok(gs), Ok(us)) => silu_mul_slice(gs, us),
        // not reached for f32 tensors; burn's ops give the right answer anyway
        _ => {
            return burn::tensor::activation::silu(Tensor::from_data(g, &device))
                * Tensor::from_data(u, &device);
        }
    }
    Tensor::from_data(g, &device)
}

/// Fewest rows of input that take the packed product in [`linear`]; fewer run burn's product.
/// Measured on the 2-core Xeon (AVX-512): at 4,096 rows (a MiniLM batch) the packed layer is
/// 1.4× faster than burn's `Linear` (bias included); at ~384 rows (one MoE expert's tokens) it
/// was slower, its per-call copy of the weight into panels not paid back.
pub const LINEAR_MIN_ROWS: usize = 1024;

/// A burn [`Linear`](burn::nn::Linear) layer, `x · W + b`, as one packed product (AVX-512 or
/// AVX2 register blocking; see the crate's `sgemm` module) with the bias written into the
/// output before the first pass (no separate pass over the output to add it), when `x` takes
/// the host path (f32 on flex without autodiff), the weight is f32, the CPU has AVX-512 or
/// AVX2 with FMA, `x` has at least [`LINEAR_MIN_ROWS`] rows and [`packed_linear_enabled`];
/// burn's `forward` otherwise. Same values up to f32 summation order.
pub fn linear<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    match linear_host(layer, &x, Post::None) {
        Some(y) => y,
        None => layer.forward(x),
    }
}

/// `gelu(linear(x))` (exact GELU), with the GELU applied to each block of output rows while
/// it is still in cache when the packed product runs (see [`linear`]).
pub fn linear_gelu<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    match linear_host(layer, &x, Post::Gelu) {
        Some(y) => y,
        None => gelu(layer.forward(x)),
    }
}

/// `norm(linear(x) + residual)`, a transformer's "add & norm" after a projection (BERT's
/// attention output and FFN output), with `norm` a layer normalisation over the last dimension
/// with epsilon `eps` (burn's `LayerNorm` keeps its own private, so the caller passes the
/// model's). On the packed path ([`linear`]) the residual is added and each row normalised
/// while the block of rows is still in cache, with no tensor in between; burn's ops otherwise.
pub fn linear_add_norm<const D: usize>(
    layer: &burn::nn::Linear,
    x: Tensor<D>,
    residual: Tensor<D>,
    norm: &burn::nn::LayerNorm,
    eps: f64,
) -> Tensor<D> {
    let host = (|| {
        let n = layer.weight.dims()[1];
        let mut out_dims = x.dims();
        out_dims[D - 1] = n;
        if residual.dims() != out_dims || !host_path(&residual) || !packed_applies(layer, &x) {
            return None;
        }
        let res = HostValues::of(&residual)?;
        let gamma = HostValues::of(&norm.gamma.val())?;
        let beta = HostValues::of_optional(&norm.beta)?;
        let beta = HostValues::optional_values(&beta)?;
        let gamma = gamma.values()?;
        if gamma.len() != n || beta.is_some_and(|b| b.len() != n) {
            return None;
        }
        linear_host(
            layer,
            &x,
            Post::AddNorm {
                residual: res.values()?,
                gamma,
                beta,
                eps: eps as f32,
            },
        )
    })();
    match host {
        Some(y) => y,
        None => norm.forward(linear(layer, x) + residual),
    }
}

/// What [`linear_host`] does to each finished block of rows.
#[derive(Clone, Copy)]
enum Post<'a> {
    /// Nothing.
    None,
    /// The exact GELU.
    Gelu,
    /// Adds the residual's rows, then normalises each row (`(x − mean) / √(var + eps) · gamma
    /// + beta`).
    AddNorm {
        residual: &'a [f32],
        gamma: &'a [f32],
        beta: Option<&'a [f32]>,
        eps: f32,
    },
}

/// Add & layer-norm over rows of `gamma.len()` values (see [`Post::AddNorm`]) as a `pulp` op.
struct AddNorm<'a> {
    rows: &'a mut [f32],
    residual: &'a [f32],
    gamma: &'a [f32],
    beta: Option<&'a [f32]>,
    eps: f32,
}

impl pulp::WithSimd for AddNorm<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let n = self.gamma.len();
        let inv_n = 1.0 / n as f32;
        for (row, res) in self
            .rows
            .chunks_exact_mut(n)
            .zip(self.residual.chunks_exact(n))
        {
            for (x, &r) in row.iter_mut().zip(res) {
                *x += r;
            }
            let mean = crate::mha::row_sum(row) * inv_n;
            for x in row.iter_mut() {
                *x -= mean;
            }
            let mut sq = [0f32; 16];
            let mut chunks = row.chunks_exact(16);
            for c in &mut chunks {
                for (a, &v) in sq.iter_mut().zip(c) {
                    *a += v * v;
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            let var = (sq.iter().sum::<f32>() + tail) * inv_n;
            let inv = 1.0 / (var + self.eps).sqrt();
            match self.beta {
                Some(beta) => {
                    for ((x, &g), &b) in row.iter_mut().zip(self.gamma).zip(beta) {
                        *x = *x * inv * g + b;
                    }
                }
                None => {
                    for (x, &g) in row.iter_mut().zip(self.gamma) {
                        *x = *x * inv * g;
                    }
                }
            }
        }
    }
}

/// Whether [`linear`] may take the packed product: true unless the environment variable
/// `PAPERS_PACKED_LINEAR` is `0` or `off` (read once; for before/after measurements and as an
/// escape hatch).
pub fn packed_linear_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("PAPERS_PACKED_LINEAR").as_deref(),
            Ok("0") | Ok("off")
        )
    })
}

/// The f32 values of a tensor on flex without autodiff: with plm's `flex` feature borrowed from
/// its buffer when it is contiguous (no copy, even when other handles share the buffer), else
/// copied into a fresh contiguous buffer. `None` for another dtype.
enum HostValues {
    #[cfg(feature = "flex")]
    Borrowed(burn::backend::flex::FlexTensor),
    Copied(TensorData),
}

impl HostValues {
    fn of<const D: usize>(t: &Tensor<D>) -> Option<Self> {
        if t.dtype() != DType::F32 {
            return None;
        }
        #[cfg(feature = "flex")]
        if let Ok(ft) = t.clone().try_into_primitive::<burn::backend::Flex>() {
            let layout = ft.layout();
            if layout.is_contiguous()
                && ft.storage::<f32>().len() >= layout.start_offset() + layout.num_elements()
            {
                return Some(HostValues::Borrowed(ft));
            }
        }
        Some(HostValues::Copied(t.clone().into_data()))
    }

    /// [`HostValues::of`] an optional parameter: `Some(None)` when there is none, `None` when
    /// it cannot be read.
    fn of_optional(p: &Option<burn::module::Param<Tensor<1>>>) -> Option<Option<Self>> {
        match p {
            Some(p) => Some(Some(Self::of(&p.val())?)),
            None => Some(None),
        }
    }

    /// The values of an optional [`HostValues`], as [`HostValues::of_optional`].
    fn optional_values(v: &Option<Self>) -> Option<Option<&[f32]>> {
        match v {
            Some(v) => Some(Some(v.values()?)),
            None => Some(None),
        }
    }

    fn values(&self) -> Option<&[f32]> {
        match self {
            #[cfg(feature = "flex")]
            HostValues::Borrowed(ft) => {
                let (start, len) = (ft.layout().start_offset(), ft.layout().num_elements());
                ft.storage::<f32>().get(start..start + len)
            }
            HostValues::Copied(d) => d.as_slice::<f32>().ok(),
        }
    }
}

/// Whether [`linear_host`] takes the packed product for `x` (shape, size, device, dtype, CPU,
/// switch): checked before anything is read to the host.
fn packed_applies<const D: usize>(layer: &burn::nn::Linear, x: &Tensor<D>) -> bool {
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    layer.weight.dims()[0] == dims[D - 1]
        && rows >= LINEAR_MIN_ROWS
        && packed_linear_enabled()
        && host_path(x)
        && layer.weight.val().dtype() == DType::F32
        && crate::sgemm::available()
}

fn linear_host<const D: usize>(
    layer: &burn::nn::Linear,
    x: &Tensor<D>,
    post: Post<'_>,
) -> Option<Tensor<D>> {
    if !packed_applies(layer, x) {
        return None;
    }
    let dims = x.dims();
    let k = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let weight = layer.weight.val();
    let n = weight.dims()[1];
    let bias = HostValues::of_optional(&layer.bias)?;
    let bias = HostValues::optional_values(&bias)?;
    let w = HostValues::of(&weight)?;
    let packed = crate::sgemm::PackedB::new(w.values()?, k, n, n)?;
    let xs = HostValues::of(x)?;
    let mut out = vec![0f32; rows * n];
    if let Post::AddNorm { residual, .. } = post
        && residual.len() != rows * n
    {
        return None;
    }
    let epilogue = |r0: usize, s: &mut [f32]| match post {
        Post::None => {}
        Post::Gelu => gelu_slice(s),
        Post::AddNorm {
            residual,
            gamma,
            beta,
            eps,
        } => pulp::Arch::new().dispatch(AddNorm {
            residual: &residual[r0 * n..r0 * n + s.len()],
            rows: s,
            gamma,
            beta,
            eps,
        }),
    };
    let epilogue: Option<crate::sgemm::Epilogue<'_>> = match post {
        Post::None => None,
        _ => Some(&epilogue),
    };
    if !crate::sgemm::gemm(rows, xs.values()?, k, &packed, bias, &mut out, epilogue) {
        return None;
    }
    let mut shape = dims;
    shape[D - 1] = n;
    Some(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// Runs a mixture-of-experts layer's routed experts on the host. The input rows sorted by
/// expert are `xs` (`[rows, d]`) itself, or with `gather` (`rows` indices into `xs`, which is
/// then `[tokens, d]`) the rows `xs[gather[j]]`; `counts[e]` of them, in order, go to expert
/// `e`. Each expert's rows go through `down(silu(gate(x)) · up(x))` and, with `row_scale`
/// (`[rows]`, e.g. the routing weights), every output row is multiplied by its scale. Returns
/// `[rows, d]` in the sorted order.
///
/// One task per expert (the largest first), each gathering its rows into a cache-hot buffer
/// (no `[rows, d]` copy of the input is ever made) and running its three products with the
/// packed kernel back to back: SwiGLU's gating is the gate product's epilogue, the scale the
/// down product's. At a few hundred rows per expert this avoids what the per-expert
/// burn ops pay — a thread fork and join per product, an activation tensor between every two.
/// `None` (the caller then runs burn's ops) unless `xs` takes the host path (f32 flex, no
/// autodiff), every weight is f32, the shapes agree (a `gather` index past `xs` included), the
/// CPU has AVX-512 or AVX2 with FMA and [`packed_linear_enabled`].
pub fn swiglu_experts(
    experts: &[crate::llama::SwiGlu],
    xs: &Tensor<2>,
    gather: Option<&[usize]>,
    counts: &[usize],
    row_scale: Option<&Tensor<1>>,
) -> Option<Tensor<2>> {
    let [n_in, d] = xs.dims();
    let rows = gather.map_or(n_in, <[usize]>::len);
    if experts.len() != counts.len()
        || counts.iter().sum::<usize>() != rows
        || gather.is_some_and(|g| g.iter().any(|&i| i >= n_in))
        || !packed_linear_enabled()
        || !crate::sgemm::available()
        || !host_path(xs)
        || row_scale.is_some_and(|r| r.dims() != [rows] || !host_path(r))
    {
        return None;
    }
    fn layers(e: &crate::llama::SwiGlu) -> [&burn::nn::Linear; 3] {
        [&e.gate_proj, &e.up_proj, &e.down_proj]
    }
    let mut d_ff = Vec::with_capacity(experts.len());
    for e in experts {
        let [g, u, dn] = layers(e).map(|l| l.weight.dims());
        let ok = g[0] == d && u == g && dn == [g[1], d];
        if !ok
            || layers(e)
                .iter()
                .any(|l| l.weight.val().dtype() != DType::F32)
        {
            return None;
        }
        d_ff.push(g[1]);
    }
    let x = HostValues::of(xs)?;
    let x = x.values()?;
    let scale = match row_scale {
        Some(r) => Some(HostValues::of(r)?),
        None => None,
    };
    let scale = match &scale {
        Some(v) => Some(v.values()?),
        None => None,
    };
    // every expert's parameters, read once (borrowed from flex's buffers)
    let mut params = Vec::with_capacity(experts.len());
    for e in experts {
        let w = layers(e)
            .map(|l| HostValues::of(&l.weight.val()).zip(HostValues::of_optional(&l.bias)));
        let [Some(g), Some(u), Some(dn)] = w else {
            return None;
        };
        params.push([g, u, dn]);
    }
    // the output split into each expert's rows; tasks biggest first
    let mut out = vec![0f32; rows * d];
    let mut jobs = Vec::with_capacity(experts.len());
    let (mut rest, mut start) = (out.as_mut_slice(), 0usize);
    for (e, &c) in counts.iter().enumerate() {
        let (mine, tail) = rest.split_at_mut(c * d);
        rest = tail;
        if c > 0 {
            jobs.push((e, start, mine));
        }
        start += c;
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(counts[j.0]));
    let ok = jobs
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(xbuf, gate, up): &mut (Vec<f32>, Vec<f32>, Vec<f32>), (e, r0, y)| -> Option<()> {
                let c = counts[e];
                let f = d_ff[e];
                let [(g, gb), (u, ub), (dn, db)] = &params[e];
                let xe = match gather {
                    Some(idx) => {
                        xbuf.clear();
                        for &i in &idx[r0..r0 + c] {
                            xbuf.extend_from_slice(&x[i * d..(i + 1) * d]);
                        }
                        &xbuf[..]
                    }
                    None => &x[r0 * d..(r0 + c) * d],
                };
                let pg = crate::sgemm::PackedB::new(g.values()?, d, f, f)?;
                let pu = crate::sgemm::PackedB::new(u.values()?, d, f, f)?;
                let pd = crate::sgemm::PackedB::new(dn.values()?, f, d, d)?;
                // the thread's buffers, grown as needed (the products overwrite every value)
                gate.resize(gate.len().max(c * f), 0.0);
                up.resize(up.len().max(c * f), 0.0);
                let (gate, up) = (&mut gate[..c * f], &mut up[..c * f]);
                let bias = HostValues::optional_values;
                // up first; the gate product's epilogue then gates its rows in place
                if !crate::sgemm::gemm(c, xe, d, &pu, bias(ub)?, up, None) {
                    return None;
                }
                let up = &*up;
                let gating = |rr: usize, g: &mut [f32]| {
                    pulp::Arch::new().dispatch(SiluMul(g, &up[rr * f..rr * f + g.len()]));
                };
                if !crate::sgemm::gemm(c, xe, d, &pg, bias(gb)?, gate, Some(&gating)) {
                    return None;
                }
                let scaled;
                let epi: Option<crate::sgemm::Epilogue<'_>> = match scale {
                    Some(sc) => {
                        scaled = move |rr: usize, ys: &mut [f32]| {
                            for (row, &a) in ys.chunks_exact_mut(d).zip(&sc[r0 + rr..]) {
                                for v in row {
                                    *v *= a;
                                }
                            }
                        };
                        Some(&scaled)
                    }
                    None => None,
                };
                crate::sgemm::gemm(c, gate, f, &pd, bias(db)?, y, epi).then_some(())
            },
        )
        .collect::<Option<Vec<()>>>();
    ok?;
    Some(Tensor::from_data(
        TensorData::new(out, [rows, d]),
        &xs.device(),
    ))
}

/// The combine step of a mixture-of-experts layer: `ys` (`[n · k, d]`) holds the expert
/// outputs of the `n · k` (token, slot) assignments in expert order, `order[j]` the assignment
/// (`token · k + slot`) of row `j`; returns `[n, d]` with each token's `k` rows summed. One
/// pass, parallel over tokens (each gathers its `k` rows), no zero-initialised scatter target.
/// `None` (the caller then scatter-adds with burn's ops) unless `ys` takes the host path and
/// `order` is a permutation of `0..n · k`.
pub fn sum_assignment_rows(ys: &Tensor<2>, order: &[usize], k: usize) -> Option<Tensor<2>> {
    let [nk, d] = ys.dims();
    if k == 0 || nk % k != 0 || order.len() != nk || !host_path(ys) {
        return None;
    }
    let mut row_of = vec![usize::MAX; nk];
    for (j, &a) in order.iter().enumerate() {
        let slot = row_of.get_mut(a)?;
        if *slot != usize::MAX {
            return None;
        }
        *slot = j;
    }
    let y = HostValues::of(ys)?;
    let y = y.values()?;
    let mut out = vec![0f32; nk / k * d];
    out.par_chunks_mut(d * 64)
        .zip(row_of.par_chunks(k * 64))
        .for_each(|(o, rows)| {
            for (o, rows) in o.chunks_exact_mut(d).zip(rows.chunks_exact(k)) {
                o.copy_from_slice(&y[rows[0] * d..(rows[0] + 1) * d]);
                for &r in &rows[1..] {
                    for (a, &b) in o.iter_mut().zip(&y[r * d..(r + 1) * d]) {
                        *a += b;
                    }
                }
            }
        });
    Some(Tensor::from_data(
        TensorData::new(out, [nk / k, d]),
        &ys.device(),
    ))
}

/// Multi-head scaled dot-product attention, `softmax(q kᵀ / √head_dim + mask) v` per head, on
/// the projections as linear layers write them: `q` `[batch, queries, heads · head_dim]`, `k`
/// and `v` `[batch, keys, kv_heads · head_dim]` (grouped-query attention when `kv_heads <
/// heads`: query head `h` reads key/value head `h / (heads / kv_heads)`); the context comes back
/// as `[batch, queries, heads · head_dim]`, ready for the output projection. `key_mask`
/// `[batch, keys]` hides padded keys (true = hide); `causal` lets query `i` see keys `0..=i +
/// keys − queries` only (the queries are the last ones of the keys' sequence).
///
/// On flex (f32, no autodiff; unless [`host_attention_enabled`] says no) this is one host
/// kernel (the crate's `mha` module): no head reshapes, no `[batch, heads, queries, keys]`
/// tensor, masked keys weigh exactly zero and a query whose keys are all masked averages the
/// keys it may see. Elsewhere it runs burn's fused `attention` op on head-split views (a fully
/// masked query gives what that op gives).
///
/// # Errors
/// [`Error::InvalidConfig`] when the widths are not `heads` (resp. `kv_heads`) heads of one
/// width, `kv_heads` does not divide `heads`, batches differ, `k` and `v` differ in shape,
/// `key_mask` is not `[batch, keys]` or `causal` has fewer keys than queries.
pub fn attention_rows(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    kv_heads: usize,
    key_mask: Option<Tensor<2, Bool>>,
    causal: bool,
) -> Result<Tensor<3>> {
    let [b, s, dq] = q.dims();
    let [bk, t, dk] = k.dims();
    let bad = |why: String| Err(Error::InvalidConfig(format!("attention_rows: {why}")));
    if heads == 0 || kv_heads == 0 || !dq.is_multiple_of(heads) || !heads.is_multiple_of(kv_heads) {
        return bad(format!(
            "{dq} query columns, {heads} heads and {kv_heads} key/value heads do not fit"
        ));
    }
    let hd = dq / heads;
    if dk != kv_heads * hd || bk != b || v.dims() != k.dims() {
        return bad(format!(
            "q {:?}, k {:?}, v {:?} with {heads}/{kv_heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        ));
    }
    if let Some(m) = &key_mask
        && m.dims() != [b, t]
    {
        return bad(format!("key mask {:?}, expected [{b}, {t}]", m.dims()));
    }
    if causal && t < s {
        return bad(format!("causal attention with {s} queries over {t} keys"));
    }
    let dims = crate::mha::AttnDims {
        batch: b,
        queries: s,
        keys: t,
        heads,
        kv_heads,
        head_dim: hd,
        causal,
    };
    if host_attention_enabled() && host_path(&q) && host_path(&k) && host_path(&v) {
        let mask: Option<Vec<bool>> = key_mask.map(|m| m.into_data().iter::<bool>().collect());
        let (qs, ks, vs) = (HostValues::of(&q), HostValues::of(&k), HostValues::of(&v));
        if let (Some(qs), Some(ks), Some(vs)) = (&qs, &ks, &vs)
            && let (Some(qv), Some(kv), Some(vv)) = (qs.values(), ks.values(), vs.values())
        {
            let mut out = vec![0f32; b * s * dq];
            crate::mha::attention(qv, kv, vv, mask.as_deref(), dims, &mut out);
            return Ok(Tensor::from_data(
                TensorData::new(out, [b, s, dq]),
                &q.device(),
            ));
        }
        // not reached for f32 tensors
        let device = q.device();
        let key_mask =
            mask.map(|m| Tensor::<2, Bool>::from_data(TensorData::new(m, [b, t]), &device));
        return Ok(attention_rows_burn(q, k, v, dims, key_mask));
    }
    Ok(attention_rows_burn(q, k, v, dims, key_mask))
}

/// Whether [`attention_rows`] may take its host kernel: true unless the environment variable
/// `PAPERS_HOST_ATTENTION` is `0` or `off` (read once; for before/after measurements).
pub fn host_attention_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("PAPERS_HOST_ATTENTION").as_deref(),
            Ok("0") | Ok("off")
        )
    })
}

/// [`attention_rows`] with burn's ops: head-split views and the fused `attention` op.
fn attention_rows_burn(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    dims: crate::mha::AttnDims,
    key_mask: Option<Tensor<2, Bool>>,
) -> Tensor<3> {
    let crate::mha::AttnDims {
        batch: b,
        queries: s,
        keys: t,
        heads,
        kv_heads,
        head_dim: hd,
        causal,
    } = dims;
    let group = heads / kv_heads;
    let split = |x: Tensor<3>, n: usize, len: usize| x.reshape([b, len, n, hd]).swap_dims(1, 2);
    let repeat = |x: Tensor<4>| {
        if group == 1 {
            x
        } else {
            x.unsqueeze_dim::<5>(2)
                .expand([b, kv_heads, group, t, hd])
                .reshape([b, heads, t, hd])
        }
    };
    let device = q.device();
    let q = split(q, heads, s);
    let (k, v) = (repeat(split(k, kv_heads, t)), repeat(split(v, kv_heads, t)));
    let mut mask = key_mask.map(|m| m.reshape([b, 1, 1, t]).expand([b, heads, s, t]));
    if causal {
        // hide key j > i + (t − s)
        let c = Tensor::<2, Bool>::tril_mask([s, t], (t - s) as i64, &device)
            .reshape([1, 1, s, t])
            .expand([b, heads, s, t]);
        mask = Some(match mask {
            Some(m) => m.bool_or(c),
            None => c,
        });
    }
    let ctx = burn::tensor::module::attention(
        q,
        k,
        v,
        mask,
        None,
        burn::tensor::ops::AttentionModuleOptions::default(),
    );
    ctx.swap_dims(1, 2).reshape([b, s, heads * hd])
}

/// Values per quantisation block.
const QK: usize = 32;

/// A `[rows, cols]` weight matrix (each output row contiguous, as GGUF and HF store a linear
/// layer's weight) kept in its GGUF block format.
#[derive(Clone, Debug)]
pub struct QuantMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    raw: Arc<Vec<u8>>,
}

impl QuantMatrix {
    /// A matrix from GGUF blocks: `raw` holds `rows` rows of `cols / 32` blocks of `ty`
    /// (Q4_0, Q4_1 or Q8_0). Other types, a `cols` that is not a multiple of 32 or a length
    /// that does not match are errors.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, raw: Vec<u8>) -> Result<Self> {
        let block = block_bytes(ty).ok_or_else(|| {
            Error::Unsupported(format!(
                "quantised matrix of type {ty:?} (Q4_0, Q4_1, Q8_0)"
            ))
        })?;
        if !cols.is_multiple_of(QK) || raw.len() != rows * (cols / QK) * block {
            return Err(Error::ShapeMismatch {
                tensor: format!("{ty:?} matrix ({} bytes)", raw.len()),
                expected: vec![rows, cols],
                found: vec![raw.len() / block.max(1) * QK],
            });
        }
        Ok(Self {
            ty,
            rows,
            cols,
            raw: Arc::new(raw),
        })
    }

    /// The block format.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes held.
    pub fn n_bytes(&self) -> usize {
        self.raw.len()
    }

    /// The matrix with its rows reordered: row `i` of the result is row `order[i]` here.
    pub fn permute_rows(&self, order: &[usize]) -> Result<Self> {
        let rb = self.row_bytes();
        if order.len() != self.rows || order.iter().any(|&r| r >= self.rows) {
            return Err(Error::InvalidConfig(format!(
                "row order of {} entries for a {}-row matrix",
                order.len(),
                self.rows
            )));
        }
        let mut raw = Vec::with_capacity(self.raw.len());
        for &r in order {
            raw.extend_from_slice(&self.raw[r * rb..(r + 1) * rb]);
        }
        Self::new(self.ty, self.rows, self.cols, raw)
    }

    fn row_bytes(&self) -> usize {
        (self.cols / QK) * block_bytes(self.ty).unwrap_or(0)
    }

    /// All values as f32, row-major (the reference the kernel is checked against).
    pub fn dequantize(&self) -> Vec<f32> {
        crate::gguf::dequantize(self.ty, &self.raw).unwrap_or_default()
    }

    /// `out[n, rows] = x[n, cols] · Wᵀ`, rows split over rayon's threads; each block of `W` is
    /// dequantised in registers once for all `n` rows of `x`.
    pub fn matmul_t(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        if x.len() != n * self.cols || out.len() != n * self.rows {
            return Err(Error::ShapeMismatch {
                tensor: "quantised matmul input / output".into(),
                expected: vec![n * self.cols, n * self.rows],
                found: vec![x.len(), out.len()],
            });
        }
        // Per-block sums of x (the Q4_1 offset term).
        let xsum: Vec<f32> = x.chunks_exact(QK).map(|c| c.iter().sum()).collect();
        let rb = self.row_bytes();
        let ty = self.ty;
        let raw = &self.raw[..];
        let rows = self.rows;
        // Output is [n, rows]: compute row-chunks of W into a [chunk, n] scratch, then scatter.
        const CHUNK: usize = 64;
        let chunks: Vec<(usize, Vec<f32>)> = (0..rows.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let r0 = c * CHUNK;
                let r1 = (r0 + CHUNK).min(rows);
                let mut acc = vec![0f32; (r1 - r0) * n];
                pulp::Arch::new().dispatch(Rows {
                    ty,
                    w: &raw[r0 * rb..r1 * rb],
                    row_bytes: rb,
                    x,
                    xsum: &xsum,
                    n,
                    acc: &mut acc,
                });
                (r0, acc)
            })
            .collect();
        for (r0, acc) in chunks {
            let len = acc.len() / n.max(1);
            for i in 0..len {
                for b in 0..n {
                    out[b * rows + r0 + i] = acc[i * n + b];
                }
            }
        }
        Ok(())
    }
}

/// Rows of a quantised matrix times `n` activation rows, as a `pulp` op (see [`Gelu`]).
struct Rows<'a> {
    ty: GgmlType,
    w: &'a [u8],
    row_bytes: usize,
    x: &'a [f32],
    xsum: &'a [f32],
    n: usize,
    acc: &'a mut [f32],
}

impl pulp::WithSimd for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let cols = self.x.len() / self.n.max(1);
        let nb = cols / QK;
        for (i, w) in self.w.chunks_exact(self.row_bytes).enumerate() {
            for b in 0..self.n {
                let xr = &self.x[b * cols..(b + 1) * cols];
                let xs = &self.xsum[b * nb..(b + 1) * nb];
                self.acc[i * self.n + b] = dot_row(self.ty, w, xr, xs);
            }
        }
    }
}

fn block_bytes(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 => Some(18),
        GgmlType::Q4_1 => Some(20),
        GgmlType::Q8_0 => Some(34),
        _ => None,
    }
}

#[inline(always)]
fn half(lo: u8, hi: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// Lanes of the partial sums: element-wise over `[f32; L]`, which LLVM turns into one SIMD
/// register (strict f32 addition is not reassociated, so a plain running sum would stay scalar).
const L: usize = 16;

/// Dot product of one quantised row with `x` (`xs`: per-block sums of `x`).
#[inline(always)]
fn dot_row(ty: GgmlType, w: &[u8], x: &[f32], xs: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let mut offset = 0f32;
    match ty {
        GgmlType::Q8_0 => {
            for (blk, xb) in w.chunks_exact(34).zip(x.chunks_exact(QK)) {
                let d = half(blk[0], blk[1]);
                let mut s = [0f32; L];
                for (q, v) in blk[2..34].chunks_exact(L).zip(xb.chunks_exact(L)) {
                    for l in 0..L {
                        s[l] += f32::from(q[l] as i8) * v[l];
                    }
                }
                for l in 0..L {
                    acc[l] += d * s[l];
                }
            }
        }
        GgmlType::Q4_1 | GgmlType::Q4_0 => {
            let (bb, head) = if ty == GgmlType::Q4_1 {
                (20, 4)
            } else {
                (18, 2)
            };
            for ((blk, xb), sum) in w.chunks_exact(bb).zip(x.chunks_exact(QK)).zip(xs) {
                let d = half(blk[0], blk[1]);
                // Q4_1: w = d·q + m; Q4_0: w = d·(q − 8), an offset of −8·d per value.
                let m = if ty == GgmlType::Q4_1 {
                    half(blk[2], blk[3])
                } else {
                    -8.0 * d
                };
                // Low nibbles are values 0..16 of the block, high nibbles 16..32.
                let (lo, hi) = xb.split_at(16);
                // 16 packed bytes: one lane each.
                let q = &blk[head..bb];
                for l in 0..L {
                    acc[l] += d * (f32::from(q[l] & 15) * lo[l] + f32::from(q[l] >> 4) * hi[l]);
                }
                offset += m * sum;
            }
        }
        _ => {}
    }
    acc.iter().sum::<f32>() + offset
}

/// `x · Wᵀ (+ bias)` with `W` quantised, when `x` takes the host path (f32 on flex without
/// autodiff) and has at most `max_rows` rows; `None` otherwise (the caller then runs its
/// f32 layer). The shape of `x` must end in `W`'s `cols`.
///
/// # Shapes
/// `x` `[batch, seq, cols]` → `[batch, seq, rows]`.
pub fn linear_quant(
    x: &Tensor<3>,
    w: &QuantMatrix,
    bias: Option<&Tensor<1>>,
    max_rows: usize,
) -> Option<Tensor<3>> {
    let [b, s, c] = x.dims();
    if c != w.cols || b * s > max_rows || !host_path(x) {
        return None;
    }
    let device = x.device();
    let xs = x.clone().into_data().try_into_vec::<f32>().ok()?;
    let mut out = vec![0f32; b * s * w.rows];
    w.matmul_t(&xs, b * s, &mut out).ok()?;
    let y = Tensor::<3>::from_data(TensorData::new(out, [b, s, w.rows]), &device);
    Some(match bias {
        Some(bias) => y + bias.clone().reshape([1, 1, w.rows]),
        None => y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // Abramowitz–Stegun 7.1.28 is too coarse for a reference: integrate the series.
        // erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1)), converges for |x| ≤ 4 in f64.
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_the_series() {
        let mut worst = 0f64;
        for i in -5000..=5000 {
            let x = i as f64 / 1000.0;
            let want = if x.abs() >= 4.0 {
                x.signum() * (1.0 - 1.5e-8)
            } else {
                erf_ref(x)
            };
            worst = worst.max((f64::from(erf(x as f32)) - want).abs());
        }
        assert!(worst < 4e-7, "{worst}");
    }

    #[test]
    fn exp_and_erfc_have_small_relative_errors() {
        for i in 0..=8700 {
            let x = -(i as f64) / 100.0;
            let got = f64::from(exp_nonpositive(x as f32));
            let want = (x as f32 as f64).exp();
            assert!((got / want - 1.0).abs() < 3e-7, "exp({x}): {got} vs {want}");
        }
        for i in 65..=400 {
            let z = i as f64 / 100.0;
            let got = f64::from(erfc_tail(z as f32));
            let want = 1.0 - erf_ref(z as f32 as f64);
            // the series reference loses ~1e-11 to cancellation near z = 4
            assert!(
                (got - want).abs() < 1e-6 * want + 2e-11,
                "erfc({z}): {got} vs {want}"
            );
        }
    }

    #[test]
    fn gelu_matches_burns_op_on_flex() {
        let d = Device::flex();
        let v: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 60.0).collect();
        let t = Tensor::<1>::from_data(TensorData::new(v.clone(), [1000]), &d);
        let fast = gelu(t.clone()).into_data().try_into_vec::<f32>().unwrap();
        let slow = burn::tensor::activation::gelu(t)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        // relative agreement; below x ≈ −5.5 libm's `1 + erff` rounds to 0 where the erfc form
        // keeps the true value (under 1e-7)
        testkit::assert_allclose(&fast, &slow, 1e-7, 2e-6, "gelu");
        assert!(
            fast.iter()
                .zip(&v)
                .all(|(g, x)| g.is_finite() && (*x < 0.0 || g <= x))
        );
    }

    #[test]
    fn packed_linear_matches_burns_layer_on_flex() {
        use burn::nn::LinearConfig;
        let d = Device::flex();
        let _guard = testkit::device_rng_lock();
        d.seed(7);
        // 1,200 and 1,040 rows take the packed product (tails in every dimension); 10 rows
        // fall back to burn's layer
        for (bias, b, s, k, n) in [
            (true, 4, 300, 100, 70),
            (false, 2, 520, 33, 16),
            (true, 2, 5, 8, 8),
        ] {
            let layer = LinearConfig::new(k, n).with_bias(bias).init(&d);
            let x =
                Tensor::<3>::random([b, s, k], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
            let want = layer.forward(x.clone());
            let got = linear(&layer, x.clone());
            testkit::assert_allclose(
                &got.into_data().try_into_vec::<f32>().unwrap(),
                &want.clone().into_data().try_into_vec::<f32>().unwrap(),
                1e-5,
                1e-4,
                "linear",
            );
            let got = linear_gelu(&layer, x.clone());
            let gelu_want = burn::tensor::activation::gelu(want.clone());
            testkit::assert_allclose(
                &got.into_data().try_into_vec::<f32>().unwrap(),
                &gelu_want.into_data().try_into_vec::<f32>().unwrap(),
                1e-5,
                1e-4,
                "linear_gelu",
            );
            // add & norm with a random residual, gamma and beta (and without beta)
            let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
            let residual = Tensor::<3>::random([b, s, n], normal, &d);
            let mut norm = burn::nn::LayerNormConfig::new(n)
                .with_epsilon(1e-6)
                .init(&d);
            norm.gamma = burn::module::Param::from_tensor(Tensor::random([n], normal, &d));
            norm.beta = if bias {
                Some(burn::module::Param::from_tensor(Tensor::random(
                    [n],
                    normal,
                    &d,
                )))
            } else {
                None
            };
            let got = linear_add_norm(&layer, x.clone(), residual.clone(), &norm, 1e-6);
            let norm_want = norm.forward(want + residual);
            testkit::assert_allclose(
                &got.into_data().try_into_vec::<f32>().unwrap(),
                &norm_want.into_data().try_into_vec::<f32>().unwrap(),
                1e-4,
                1e-4,
                "linear_add_norm",
            );
        }
    }

    #[test]
    fn swiglu_experts_match_each_experts_burn_forward() {
        use burn::nn::LinearConfig;
        let d = Device::flex();
        let _guard = testkit::device_rng_lock();
        d.seed(9);
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        let (dm, f) = (40, 24);
        for bias in [false, true] {
            let lin = |i, o| LinearConfig::new(i, o).with_bias(bias).init(&d);
            let experts: Vec<crate::llama::SwiGlu> = (0..5)
                .map(|_| crate::llama::SwiGlu {
                    gate_proj: lin(dm, f),
                    up_proj: lin(dm, f),
                    down_proj: lin(f, dm),
                })
                .collect();
            // an empty expert, one row, fewer rows than a register block, several blocks
            let counts = [7, 0, 1, 120, 33];
            let rows: usize = counts.iter().sum();
            let xs = Tensor::<2>::random([rows, dm], normal, &d);
            let scale = Tensor::<1>::random([rows], normal, &d);
            let mut want = Vec::new();
            let mut start = 0;
            for (e, &c) in experts.iter().zip(&counts) {
                if c > 0 {
                    let x = xs
                        .clone()
                        .slice(s![start..start + c, ..])
                        .reshape([1, c, dm]);
                    want.push(e.forward(x).reshape([c, dm]));
                }
                start += c;
            }
            let want = Tensor::cat(want, 0);
            let got = swiglu_experts(&experts, &xs, None, &counts, None).expect("host path");
            testkit::assert_allclose(
                &got.into_data().try_into_vec::<f32>().unwrap(),
                &want.clone().into_data().try_into_vec::<f32>().unwrap(),
                1e-5,
                1e-4,
                "swiglu_experts",
            );
            // the same rows gathered from a shuffled source (one token twice, one never)
            let perm: Vec<usize> = (0..rows).map(|j| (j * 37 + 11) % rows).collect();
            let mut src = vec![0usize; rows + 1];
            for (j, &p) in perm.iter().enumerate() {
                src[p] = j;
            }
            src[rows] = 0;
            let src_rows = Tensor::<1, Int>::from_ints(
                src.iter().map(|&v| v as i64).collect::<Vec<_>>().as_slice(),
                &d,
            );
            let shuffled = xs.clone().select(0, src_rows);
            let mut gather = perm.clone();
            gather[0] = rows; // row 0 read from the duplicate at the end
            let got = swiglu_experts(&experts, &shuffled, Some(&gather), &counts, None)
                .expect("host path");
            testkit::assert_allclose(
                &got.into_data().try_into_vec::<f32>().unwrap(),
                &want.clone().into_data().try_into_vec::<f32>().unwrap(),
                1e-5,
                1e-4,
                "swiglu_experts gathered",
            );
            let past = vec![rows + 1; rows];
            assert!(swiglu_experts(&experts, &shuffled, Some(&past), &counts, None).is_none());
            assert!(
                swiglu_experts(&experts, &shuffled, Some(&gather[1..]), &counts, None).is_none()
            );
            let got =
                swiglu_experts(&experts, &xs, None, &counts, Some(&scale)).expect("host path");
            let want = want * scale.clone().reshape([rows, 1]);
            testkit::assert_allclose(
                &got.into_data().try_into_vec::<f32>().unwrap(),
                &want.into_data().try_into_vec::<f32>().unwrap(),
                1e-5,
                1e-4,
                "swiglu_experts scaled",
            );
            // declined: counts that do not add up, a scale of the wrong length, autodiff
            assert!(swiglu_experts(&experts, &xs, None, &[7, 0, 1, 120, 32], None).is_none());
            assert!(swiglu_experts(&experts, &xs, None, &counts[..4], None).is_none());
            let short = Tensor::<1>::zeros([rows - 1], &d);
            assert!(swiglu_experts(&experts, &xs, None, &counts, Some(&short)).is_none());
            let ad = Device::flex().autodiff();
            let xa = Tensor::<2>::zeros([rows, dm], &ad);
            assert!(swiglu_experts(&experts, &xa, None, &counts, None).is_none());
        }
    }

    #[test]
    fn assignment_rows_sum_per_token_as_a_scatter_add_does() {
        let d = Device::flex();
        let _guard = testkit::device_rng_lock();
        d.seed(3);
        let (n, k, dm) = (150, 3, 20);
        let ys = Tensor::<2>::random([n * k, dm], burn::tensor::Distribution::Default, &d);
        // a permutation: assignments sorted by a pseudo-random key
        let mut order: Vec<usize> = (0..n * k).collect();
        order.sort_by_key(|&a| (a * 7919) % 101);
        let idx: Vec<i64> = order.iter().map(|&a| (a / k) as i64).collect();
        let want = Tensor::<2>::zeros([n, dm], &d).select_assign(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(idx, [n * k]), &d),
            ys.clone(),
            burn::tensor::IndexingUpdateOp::Add,
        );
        let got = sum_assignment_rows(&ys, &order, k).expect("host path");
        testkit::assert_allclose(
            &got.into_data().try_into_vec::<f32>().unwrap(),
            &want.into_data().try_into_vec::<f32>().unwrap(),
            1e-6,
            1e-5,
            "sum_assignment_rows",
        );
        // not a permutation, wrong length, k not dividing the rows
        let mut dup = order.clone();
        dup[1] = dup[0];
        assert!(sum_assignment_rows(&ys, &dup, k).is_none());
        let mut big = order.clone();
        big[0] = n * k;
        assert!(sum_assignment_rows(&ys, &big, k).is_none());
        assert!(sum_assignment_rows(&ys, &order[1..], k).is_none());
        assert!(sum_assignment_rows(&ys, &order, 4).is_none());
    }

    #[test]
    fn silu_mul_matches_burns_ops_on_flex() {
        let d = Device::flex();
        // both signs, the saturated ends and zero
        let g: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) * 0.05).collect();
        let u: Vec<f32> = (0..4099)
            .map(|i| ((i * 7919) % 113) as f32 * 0.03 - 1.5)
            .collect();
        let gt = Tensor::<2>::from_data(TensorData::new(g, [1, 4099]), &d);
        let ut = Tensor::<2>::from_data(TensorData::new(u, [1, 4099]), &d);
        let want = burn::tensor::activation::silu(gt.clone()) * ut.clone();
        let got = silu_mul(gt, ut);
        let (want, got) = (want.to_data(), got.to_data());
        let (want, got) = (
            want.as_slice::<f32>().unwrap(),
            got.as_slice::<f32>().unwrap(),
        );
        for (w, g) in want.iter().zip(got) {
            assert!((w - g).abs() <= 2e-6 * (1.0 + w.abs()), "{w} vs {g}");
        }
        // shapes that differ fall back to burn's broadcasting ops
        let a = Tensor::<2>::ones([2, 3], &d);
        let b = Tensor::<2>::ones([1, 3], &d);
        assert_eq!(silu_mul(a, b).dims(), [2, 3]);
    }

    /// Attention by definition, in f64: `q` `[b, s, h·hd]`, `k`/`v` `[b, t, hk·hd]`; a query
    /// whose visible keys are all masked averages them.
    #[allow(clippy::too_many_arguments)]
    fn attention_ref(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: Option<&[bool]>,
        (b, s, t, h, hk, hd): (usize, usize, usize, usize, usize, usize),
        causal: bool,
    ) -> Vec<f32> {
        let mut out = vec![0f32; b * s * h * hd];
        for bi in 0..b {
            for hi in 0..h {
                let g = hi / (h / hk);
                for i in 0..s {
                    let future = |j: usize| causal && j > i + t - s;
                    let seen = |j: usize| !future(j) && !mask.is_some_and(|m| m[bi * t + j]);
                    let any = (0..t).any(seen);
                    let scores: Vec<f64> = (0..t)
                        .map(|j| {
                            if future(j) || (any && !seen(j)) {
                                return f64::NEG_INFINITY;
                            }
                            if !any {
                                return 0.0;
                            }
                            (0..hd)
                                .map(|c| {
                                    f64::from(q[(bi * s + i) * h * hd + hi * hd + c])
                                        * f64::from(k[(bi * t + j) * hk * hd + g * hd + c])
                                })
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..hd {
                        let o: f64 = (0..t)
                            .map(|j| e[j] / z * f64::from(v[(bi * t + j) * hk * hd + g * hd + c]))
                            .sum();
                        out[(bi * s + i) * h * hd + hi * hd + c] = o as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attention_rows_matches_the_definition_on_flex_and_autodiff() {
        let flex = Device::flex();
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104_729) % 1009) as f32 / 1009.0 - 0.5) * 3.0)
                .collect()
        };
        // (batch, queries, keys, heads, kv heads, head dim, causal, masked keys)
        for (case, &(b, s, t, h, hk, hd, causal, masked)) in [
            (2, 70, 70, 3, 3, 8, false, true),
            (1, 5, 37, 4, 2, 16, true, false),
            (3, 33, 33, 2, 1, 5, true, true),
            (2, 1, 19, 2, 2, 32, false, true),
        ]
        .iter()
        .enumerate()
        {
            let q = vals(b * s * h * hd, 1 + case);
            let k = vals(b * t * hk * hd, 11 + case);
            let v = vals(b * t * hk * hd, 21 + case);
            // every third key hidden; a third sequence hides all of them (averaged)
            let mask: Option<Vec<bool>> =
                masked.then(|| (0..b * t).map(|i| i / t == 2 || (i % t) % 3 == 1).collect());
            let want = attention_ref(&q, &k, &v, mask.as_deref(), (b, s, t, h, hk, hd), causal);
            let fully_masked_rows = masked && b > 2;
            for device in [flex.clone(), flex.clone().autodiff()] {
                // burn's op on autodiff leaves a fully masked query to its own convention
                if device.is_autodiff() && fully_masked_rows {
                    continue;
                }
                let tq =
                    Tensor::<3>::from_data(TensorData::new(q.clone(), [b, s, h * hd]), &device);
                let tk =
                    Tensor::<3>::from_data(TensorData::new(k.clone(), [b, t, hk * hd]), &device);
                let tv =
                    Tensor::<3>::from_data(TensorData::new(v.clone(), [b, t, hk * hd]), &device);
                let tm = mask
                    .clone()
                    .map(|m| Tensor::<2, Bool>::from_data(TensorData::new(m, [b, t]), &device));
                let got = attention_rows(tq, tk, tv, h, hk, tm, causal).unwrap();
                assert_eq!(got.dims(), [b, s, h * hd]);
                let got = got
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap();
                testkit::assert_allclose(
                    &got,
                    &want,
                    1e-5,
                    1e-4,
                    &format!("case {case} on {device:?}"),
                );
            }
        }
    }

    /// Runs one block of the attention kernel with a chosen instruction set.
    type BlockRunner = dyn Fn(crate::mha::Block<'_>) + Sync;

    #[test]
    fn the_attention_kernel_agrees_on_every_instruction_set() {
        // AVX2 (8 lanes) and scalar (1 lane) pad keys and head width differently from AVX-512
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 104_729 + seed * 7919) % 997) as f32 / 997.0 - 0.5) * 2.0)
                .collect()
        };
        for &(b, s, t, h, hk, hd, causal) in
            &[(2, 45, 45, 4, 2, 12, true), (3, 9, 21, 2, 2, 20, false)]
        {
            let (q, k, v) = (
                vals(b * s * h * hd, 1),
                vals(b * t * hk * hd, 2),
                vals(b * t * hk * hd, 3),
            );
            let mask: Vec<bool> = (0..b * t).map(|i| i % 5 == 2).collect();
            let want = attention_ref(&q, &k, &v, Some(&mask), (b, s, t, h, hk, hd), causal);
            let dims = crate::mha::AttnDims {
                batch: b,
                queries: s,
                keys: t,
                heads: h,
                kv_heads: hk,
                head_dim: hd,
                causal,
            };
            let mut runs: Vec<(&str, Box<BlockRunner>)> = vec![(
                "scalar",
                Box::new(|blk| pulp::WithSimd::with_simd(blk, pulp::Scalar::new())),
            )];
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            if let Some(v3) = pulp::x86::V3::try_new() {
                runs.push((
                    "avx2",
                    Box::new(move |blk| pulp::WithSimd::with_simd(blk, v3)),
                ));
            }
            for (name, run) in &runs {
                let mut out = vec![f32::NAN; b * s * h * hd];
                crate::mha::attention_by(&q, &k, &v, Some(&mask), dims, &mut out, run.as_ref());
                testkit::assert_allclose(&out, &want, 1e-5, 1e-4, name);
            }
        }
    }

    #[test]
    fn attention_rows_refuses_bad_shapes() {
        let d = Device::flex();
        let z = |dims: [usize; 3]| Tensor::<3>::zeros(dims, &d);
        // (q, k, v, heads, kv heads, causal): 12 columns are not 5 heads; k is not 2 heads of
        // 4; batches differ; k and v differ; causal with fewer keys than queries
        for (q, k, v, h, hk, causal) in [
            ([1, 4, 12], [1, 4, 12], [1, 4, 12], 5, 5, false),
            ([1, 4, 12], [1, 4, 8], [1, 4, 8], 3, 2, false),
            ([1, 4, 12], [2, 4, 12], [2, 4, 12], 3, 3, false),
            ([1, 4, 12], [1, 4, 12], [1, 5, 12], 3, 3, false),
            ([1, 6, 12], [1, 4, 12], [1, 4, 12], 3, 3, true),
        ] {
            let got = attention_rows(z(q), z(k), z(v), h, hk, None, causal);
            assert!(got.is_err(), "{q:?} {k:?} {v:?} {h}/{hk}");
        }
        // a key mask of the wrong length
        let m = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; 5], [1, 5]), &d);
        let (q, kv) = (z([1, 4, 12]), z([1, 4, 12]));
        assert!(attention_rows(q.clone(), kv.clone(), kv, 3, 3, Some(m), false).is_err());
        // grouped heads: 3 query heads of 4 over one key/value head
        let kv = z([1, 4, 4]);
        assert!(attention_rows(q, kv.clone(), kv, 3, 1, None, false).is_ok());
    }

    fn blocks(ty: GgmlType, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        // Deterministic bytes with small, valid f16 scales.
        let bb = block_bytes(ty).unwrap();
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8
        };
        let mut raw = Vec::new();
        for _ in 0..rows * cols / QK {
            let d = half::f16::from_f32(0.01 + f32::from(next()) / 4000.0).to_bits();
            raw.extend_from_slice(&d.to_le_bytes());
            let mut used = 2;
            if ty == GgmlType::Q4_1 {
                let m = half::f16::from_f32(-(f32::from(next()) / 500.0)).to_bits();
                raw.extend_from_slice(&m.to_le_bytes());
                used = 4;
            }
            for _ in used..bb {
                raw.push(next());
            }
        }
        raw
    }

    #[test]
    fn quantised_products_match_the_dequantised_reference() {
        let (rows, cols, n) = (150, 96, 3);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let m = QuantMatrix::new(ty, rows, cols, blocks(ty, rows, cols, 7)).unwrap();
            // 4.5, 5 and 8.5 bits per weight
            let bits = m.n_bytes() as f64 * 8.0 / (rows * cols) as f64;
            let want_bits = match ty {
                GgmlType::Q4_0 => 4.5,
                GgmlType::Q4_1 => 5.0,
                _ => 8.5,
            };
            assert_eq!(bits, want_bits, "{ty:?}");
            let w = m.dequantize();
            assert_eq!(w.len(), rows * cols);
            let mut want = vec![0f32; n * rows];
            for b in 0..n {
                for r in 0..rows {
                    want[b * rows + r] = (0..cols).map(|c| x[b * cols + c] * w[r * cols + c]).sum();
                }
            }
            let mut got = vec![0f32; n * rows];
            m.matmul_t(&x, n, &mut got).unwrap();
            testkit::assert_allclose(&got, &want, 1e-4, 1e-5, &format!("{ty:?}"));
            // Row permutation moves whole rows.
            let order: Vec<usize> = (0..rows).rev().collect();
            let p = m.permute_rows(&order).unwrap().dequantize();
            assert_eq!(&p[..cols], &w[(rows - 1) * cols..]);
        }
    }

    #[test]
    fn bad_shapes_and_types_are_errors() {
        assert!(QuantMatrix::new(GgmlType::Q8_0, 2, 30, vec![0; 68]).is_err());
        assert!(QuantMatrix::new(GgmlType::Q8_0, 2, 32, vec![0; 67]).is_err());
        assert!(QuantMatrix::new(GgmlType::F32, 2, 32, vec![0; 256]).is_err());
        let m = QuantMatrix::new(GgmlType::Q8_0, 2, 32, vec![0; 68]).unwrap();
        assert!(m.matmul_t(&[0.0; 31], 1, &mut [0.0; 2]).is_err());
        assert!(m.permute_rows(&[0, 2]).is_err());
    }

    #[test]
    fn linear_quant_runs_on_flex_and_declines_autodiff() {
        let d = Device::flex();
        let m = QuantMatrix::new(GgmlType::Q8_0, 4, 32, blocks(GgmlType::Q8_0, 4, 32, 3)).unwrap();
        let w = Tensor::<2>::from_data(TensorData::new(m.dequantize(), [4, 32]), &d);
        let x = Tensor::<3>::from_data(
            TensorData::new(
                (0..64).map(|i| i as f32 / 64.0).collect::<Vec<_>>(),
                [1, 2, 32],
            ),
            &d,
        );
        let bias = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [4]), &d);
        let got = linear_quant(&x, &m, Some(&bias), 8).expect("fast path");
        let want = x.clone().matmul(w.transpose().unsqueeze_dim(0)) + bias.reshape([1, 1, 4]);
        let want = testkit::tensor_values(want, &[1, 2, 4]);
        testkit::assert_tensor_close(got, &want, &[1, 2, 4], 1e-4, "linear_quant");
        assert!(
            linear_quant(&x, &m, None, 1).is_none(),
            "more rows than max_rows"
        );
        let ad = d.clone().autodiff();
        let xa = Tensor::<3>::from_data(x.into_data(), &ad);
        assert!(linear_quant(&xa, &m, None, 8).is_none());
    }
}
