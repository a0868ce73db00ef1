//! A packed f32 matrix product for x86-64 CPUs with AVX-512 or AVX2: `C = A · B (+ bias)`,
//! every matrix row-major, then an optional element-wise epilogue on each finished block of
//! rows.
//!
//! The layout is the usual one for register-blocked products (Goto and van de Geijn 2008):
//! `B` is copied once per call into panels of `NR` columns (`KC` rows deep, zero-padded), the
//! threads split `A` into blocks of `8 · MR` rows, each thread copies its block into panels of
//! `MR` rows interleaved by depth, and a micro-kernel keeps an `MR × NR` block of `C` in
//! `2 · MR` vector registers while it walks the depth: per step, two vector loads of `B`, `MR`
//! broadcasts of `A` and `2 · MR` fused multiply-adds. With AVX-512 `MR` is 14 and `NR` 32
//! (28 accumulators, two `B` registers and one broadcast: 31 of the 32 registers); with AVX2
//! `MR` is 6 and `NR` 16 (15 of 16). The code is safe Rust: `pulp` compiles it for the
//! instruction set it found at run time, and LLVM keeps the accumulators in registers.
//!
//! Only [`crate::kernels`] calls this; every entry point answers `None`/`false` where the CPU
//! has neither instruction set, and the caller then runs burn's product.

use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// Depth of one pass over a packed panel pair.
const KC: usize = 384;
/// Micro-panels of `A` per thread task.
const PANELS_PER_TASK: usize = 8;

/// The instruction set the kernel runs with: AVX-512 (rows of 14, columns of 32: 28
/// accumulators) or AVX2 with FMA (rows of 6, columns of 16: 12 of the 16 registers).
#[derive(Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    V4(pulp::x86::V4),
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
}

impl Isa {
    /// The widest instruction set this CPU has.
    fn detect() -> Option<Self> {
        Self::all().into_iter().next()
    }

    /// Every instruction set this CPU has, widest first.
    fn all() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            v.extend(pulp::x86::V4::try_new().map(Isa::V4));
            v.extend(pulp::x86::V3::try_new().map(Isa::V3));
        }
        v
    }

    /// Columns per micro-kernel call: two registers.
    fn nr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::V4(_) => 32,
            #[cfg(target_arch = "x86_64")]
            Isa::V3(_) => 16,
        }
    }
}

/// What runs on each finished block of output rows (e.g. an activation), on the thread that
/// made them: the index of the block's first row, and its rows.
pub(crate) type Epilogue<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// Whether this CPU runs the kernel (x86-64 with AVX-512, or AVX2 and FMA).
pub(crate) fn available() -> bool {
    Isa::detect().is_some()
}

/// `B` (`k × n`) in panels: for each depth block of `KC` rows, `ceil(n / NR)` panels of
/// `kc × NR` values, each depth row of a panel contiguous.
pub(crate) struct PackedB {
    isa: Isa,
    k: usize,
    n: usize,
    nr: usize,
    panels: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs row-major `b` (`k × n`, rows `ldb` apart) for this CPU's kernel. `None` if the
    /// kernel is not [`available`] or `b` is too short.
    pub(crate) fn new(b: &[f32], k: usize, n: usize, ldb: usize) -> Option<Self> {
        Self::for_isa(Isa::detect()?, b, k, n, ldb)
    }

    fn for_isa(isa: Isa, b: &[f32], k: usize, n: usize, ldb: usize) -> Option<Self> {
        if k > 0 && (ldb < n || b.len() < (k - 1) * ldb + n) {
            return None;
        }
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let mut data = vec![0f32; panels * nr * k];
        if k > 0 && n > 0 {
            data.par_chunks_mut(KC * panels * nr)
                .enumerate()
                .for_each(|(blk, dst)| {
                    let p0 = blk * KC;
                    let kc = (k - p0).min(KC);
                    for (j, d) in dst.chunks_exact_mut(kc * nr).enumerate() {
                        let c0 = j * nr;
                        let w = (n - c0).min(nr);
                        for (p, d) in d.chunks_exact_mut(nr).enumerate() {
                            let row = (p0 + p) * ldb + c0;
                            let src = &b[row..row + w];
                            // whole panel rows as fixed-size copies (a few vector moves); a
                            // run-time length is a `memcpy` call per 16 or 32 values
                            match (
                                <&mut [f32; 32]>::try_from(&mut *d),
                                <&[f32; 32]>::try_from(src),
                            ) {
                                (Ok(d), Ok(s)) => *d = *s,
                                _ => match (
                                    <&mut [f32; 16]>::try_from(&mut *d),
                                    <&[f32; 16]>::try_from(src),
                                ) {
                                    (Ok(d), Ok(s)) => *d = *s,
                                    _ => d[..w].copy_from_slice(src),
                                },
                            }
                        }
                    }
                });
        }
        Some(Self {
            isa,
            k,
            n,
            nr,
            panels,
            data,
        })
    }
}

/// Copies `rows` rows of `a` (from row 0, columns `p0..p0 + kc`) into panels of `MR` rows,
/// `dst[panel][p][r]`, zero-padding the last panel. Depth outer, rows inner: each depth step
/// writes `MR` contiguous values (the other order vectorises into scatters, which made the
/// copy as slow as the product for MoE experts' shapes).
fn pack_a<const MR: usize>(
    a: &[f32],
    lda: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    dst: &mut [f32],
) {
    for (i, d) in dst[..rows.div_ceil(MR) * kc * MR]
        .chunks_exact_mut(kc * MR)
        .enumerate()
    {
        let r0 = i * MR;
        let h = (rows - r0).min(MR);
        if h < MR {
            d.fill(0.0);
        }
        let (d, _) = d.as_chunks_mut::<MR>();
        let src: [&[f32]; MR] = std::array::from_fn(|r| {
            let r = r0 + r.min(h - 1);
            &a[r * lda + p0..r * lda + p0 + kc]
        });
        if h == MR {
            for (p, d) in d.iter_mut().enumerate() {
                for (d, s) in d.iter_mut().zip(&src) {
                    *d = s[p];
                }
            }
        } else {
            for (p, d) in d.iter_mut().enumerate() {
                for (d, s) in d.iter_mut().zip(&src).take(h) {
                    *d = s[p];
                }
            }
        }
    }
}

/// Panels of `B` per column block: the block (`KC × 16 · NR` values, 768 KiB with AVX-512)
/// stays in a core's L2 while every row panel of the task passes over it.
const PANELS_PER_BLOCK: usize = 16;

/// One thread task: rows `crows` of `C` (`n` values apart) from the matching rows of `A`.
struct Task<'a, const MR: usize> {
    a: &'a [f32],
    lda: usize,
    b: &'a PackedB,
    /// The bias zero-padded to whole panels, or none.
    bias: Option<&'a [f32]>,
    crows: &'a mut [f32],
    abuf: &'a mut [f32],
}

/// What a micro-kernel call starts its accumulators from.
#[derive(Clone, Copy)]
enum Start<'a> {
    /// Zero: `C` is written.
    Zero,
    /// The panel's slice of the padded bias (`NR` values): `C` is written.
    Bias(&'a [f32]),
    /// Zero, and the block is added to `C` (a later depth block).
    Accumulate,
}

impl<const MR: usize> WithSimd for Task<'_, MR> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Task {
            a,
            lda,
            b,
            bias,
            crows,
            abuf,
        } = self;
        let (k, n, nr_full, panels) = (b.k, b.n, b.nr, b.panels);
        let rows = crows.len() / n;
        if k == 0 {
            match bias {
                Some(bias) => crows
                    .chunks_exact_mut(n)
                    .for_each(|row| row.copy_from_slice(&bias[..n])),
                None => crows.fill(0.0),
            }
        }
        for (blk, p0) in (0..k).step_by(KC).enumerate() {
            let kc = (k - p0).min(KC);
            pack_a::<MR>(a, lda, rows, p0, kc, abuf);
            let bblk = &b.data[blk * KC * panels * nr_full..];
            for j0 in (0..panels).step_by(PANELS_PER_BLOCK) {
                for i in 0..rows.div_ceil(MR) {
                    let mr = (rows - i * MR).min(MR);
                    let apanel = &abuf[i * kc * MR..(i + 1) * kc * MR];
                    for j in j0..(j0 + PANELS_PER_BLOCK).min(panels) {
                        let nr = (n - j * nr_full).min(nr_full);
                        let bpanel = &bblk[j * kc * nr_full..(j + 1) * kc * nr_full];
                        let c = &mut crows[i * MR * n + j * nr_full..];
                        let start = match (blk, bias) {
                            (0, Some(bias)) => Start::Bias(&bias[j * nr_full..(j + 1) * nr_full]),
                            (0, None) => Start::Zero,
                            _ => Start::Accumulate,
                        };
                        kernel::<S, MR>(simd, apanel, bpanel, c, n, mr, nr, start);
                    }
                }
            }
        }
    }
}

/// `C[..mr, ..nr] (+)= Apanel · Bpanel` (from `start`): `a` is `kc × MR`, `b` `kc` rows of
/// two registers of `S`, `c` holds `mr` rows `ldc` apart.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn kernel<S: Simd, const MR: usize>(
    simd: S,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    start: Start<'_>,
) {
    let (bv, _) = S::as_simd_f32s(b);
    let (bv, _) = bv.as_chunks::<2>();
    let (av, _) = a.as_chunks::<MR>();
    let init = match start {
        Start::Bias(bias) => {
            let (v, _) = S::as_simd_f32s(bias);
            [v[0], v[1]]
        }
        Start::Zero | Start::Accumulate => [simd.splat_f32s(0.0); 2],
    };
    let mut acc = [init; MR];
    for (bp, ap) in bv.iter().zip(av) {
        for (acc, &x) in acc.iter_mut().zip(ap) {
            let x = simd.splat_f32s(x);
            acc[0] = simd.mul_add_e_f32s(x, bp[0], acc[0]);
            acc[1] = simd.mul_add_e_f32s(x, bp[1], acc[1]);
        }
    }
    // A copy for the row stores, whose row count is known only at run time: indexing the
    // loop's own array by it would make LLVM keep that array in memory and store all
    // accumulators on every depth step (measured: 1.7× slower).
    let acc = std::hint::black_box(acc);
    let accumulate = matches!(start, Start::Accumulate);
    let lanes = size_of::<S::f32s>() / size_of::<f32>();
    for (r, acc) in acc.iter().enumerate().take(mr) {
        let row = &mut c[r * ldc..r * ldc + nr];
        if nr == 2 * lanes {
            // a whole panel: plain vector loads and stores
            let (v, _) = S::as_mut_simd_f32s(row);
            if accumulate {
                v[0] = simd.add_f32s(v[0], acc[0]);
                v[1] = simd.add_f32s(v[1], acc[1]);
            } else {
                v[0] = acc[0];
                v[1] = acc[1];
            }
        } else {
            let (lo, hi) = row.split_at_mut(nr.min(lanes));
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if accumulate {
                v0 = simd.add_f32s(v0, simd.partial_load_f32s(lo));
                v1 = simd.add_f32s(v1, simd.partial_load_f32s(hi));
            }
            simd.partial_store_f32s(lo, v0);
            simd.partial_store_f32s(hi, v1);
        }
    }
}

/// `c` (`m × n`, rows `n` apart) `= a · b + bias`, then `epilogue` on every finished block of
/// rows, with the instruction set `b` was packed for. `a` is `m × k` with rows `lda` apart.
/// Returns false, touching nothing, when a slice is shorter than its shape.
pub(crate) fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
    epilogue: Option<Epilogue<'_>>,
) -> bool {
    let isa = b.isa;
    let (k, n) = (b.k, b.n);
    let fits = c.len() >= m * n
        && (m == 0 || k == 0 || (lda >= k && a.len() >= (m - 1) * lda + k))
        && bias.is_none_or(|b| b.len() == n);
    if !fits {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    // the bias zero-padded to whole panels, so every micro-kernel loads it as full registers
    let bias: Option<Vec<f32>> = bias.map(|v| {
        let mut p = vec![0f32; b.panels * b.nr];
        p[..n].copy_from_slice(v);
        p
    });
    let rows = Rows {
        a,
        lda,
        b,
        bias: bias.as_deref(),
    };
    let c = &mut c[..m * n];
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::V4(simd) => run::<_, 14>(simd, rows, c, epilogue),
        #[cfg(target_arch = "x86_64")]
        Isa::V3(simd) => run::<_, 6>(simd, rows, c, epilogue),
    }
    true
}

/// The inputs of one product: `A` (rows `lda` apart), the packed `B` and the padded bias.
#[derive(Clone, Copy)]
struct Rows<'a> {
    a: &'a [f32],
    lda: usize,
    b: &'a PackedB,
    bias: Option<&'a [f32]>,
}

/// [`gemm`] with `MR`-row panels on instruction set `S`, the threads taking up to
/// [`PANELS_PER_TASK`] panels of rows each; `c` holds exactly the output's rows.
#[allow(dead_code)]
fn run<S: Simd + Send + Sync, const MR: usize>(
    simd: S,
    Rows { a, lda, b, bias }: Rows<'_>,
    c: &mut [f32],
    epilogue: Option<Epilogue<'_>>,
) {
    let n = b.n;
    // at most PANELS_PER_TASK panels per task, fewer when that leaves the threads uneven work
    // (384 rows: 4 tasks of 7 panels on 2 threads, not 112 + 112 against 112 + 48 rows)
    let panels = (c.len() / n).div_ceil(MR);
    let tasks = panels
        .div_ceil(PANELS_PER_TASK)
        .next_multiple_of(rayon::current_num_threads().max(1));
    let mc = panels.div_ceil(tasks).clamp(1, PANELS_PER_TASK) * MR;
    c.par_chunks_mut(mc * n).enumerate().for_each_init(
        || vec![0f32; mc * KC],
        |abuf, (ci, crows)| {
            simd.vectorize(Task::<MR> {
                a: &a[ci * mc * lda..],
                lda,
                b,
                bias,
                crows,
                abuf,
            });
            if let Some(f) = epilogue {
                f(ci * mc, crows);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| b[j] as f64);
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn products_match_the_naive_sum_at_every_edge() {
        // every instruction set this CPU has (on x86-64 CI machines: AVX2 at least)
        #[cfg(target_arch = "x86_64")]
        assert!(!Isa::all().is_empty(), "no AVX2 on this x86-64 CPU");
        // tails in every dimension: m around MR and MC, n around NR and 16, k around KC
        for &(m, k, n) in &[
            (1, 1, 1),
            (13, 7, 15),
            (14, 384, 32),
            (15, 385, 17),
            (113, 100, 33),
            (200, 800, 70),
            (50, 400, 600),
            (3, 0, 5),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let bias = values(n, 3);
            for isa in Isa::all() {
                let packed = PackedB::for_isa(isa, &b, k, n, n).unwrap();
                for with_bias in [false, true] {
                    let bias = with_bias.then_some(bias.as_slice());
                    let mut c = vec![f32::NAN; m * n];
                    assert!(gemm(m, &a, k, &packed, bias, &mut c, None));
                    let want = naive(m, k, n, &a, &b, bias);
                    for (x, y) in c.iter().zip(&want) {
                        let nr = isa.nr();
                        assert!(
                            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                            "{nr}: {m}x{k}x{n}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_strided_a_and_the_epilogue_are_honoured() {
        let (m, k, n, lda) = (30, 20, 40, 25);
        let a = values(m * lda, 4);
        let b = values(k * n, 5);
        let dense: Vec<f32> = (0..m)
            .flat_map(|i| a[i * lda..i * lda + k].to_vec())
            .collect();
        let want = naive(m, k, n, &dense, &b, None);
        for isa in Isa::all() {
            let packed = PackedB::for_isa(isa, &b, k, n, n).unwrap();
            let mut c = vec![0f32; m * n];
            // doubles every value and adds its row's index (told by the block's first row)
            let double = |r0: usize, s: &mut [f32]| {
                for (i, row) in s.chunks_exact_mut(n).enumerate() {
                    row.iter_mut().for_each(|v| *v = 2.0 * *v + (r0 + i) as f32);
                }
            };
            assert!(gemm(m, &a, lda, &packed, None, &mut c, Some(&double)));
            for (j, (x, y)) in c.iter().zip(&want).enumerate() {
                let want = 2.0 * y + (j / n) as f32;
                assert!((x - want).abs() <= 1e-4 * (1.0 + want.abs()));
            }
            // short slices are refused
            assert!(!gemm(m + 1, &a, lda, &packed, None, &mut c, None));
        }
    }
}
