//! Multi-head scaled dot-product attention on host buffers, in the layout the projections write:
//! rows of `[batch, seq, heads · head_dim]`, so neither the inputs nor the context are ever
//! reshaped into `[batch, heads, seq, head_dim]` (two copies per tensor on flex).
//!
//! One task owns a block of query rows of one sequence (a contiguous slab of the output) and
//! runs every head over it: the head's keys are transposed once into `[head_dim, keys]` so that
//! both products are broadcast-multiply-adds along contiguous rows (scores along the keys,
//! context along the head dimension), which LLVM vectorises inside `pulp`'s per-instruction-set
//! functions. The softmax subtracts the row maximum and exponentiates with the crate's
//! vectorised `exp`; masked keys get exactly zero weight, and a row whose keys are all masked
//! averages the keys it may see (causality permitting; as adding the most negative float
//! before the softmax does).

use rayon::prelude::*;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnDims {
    /// Sequences.
    pub batch: usize,
    /// Query rows per sequence.
    pub queries: usize,
    /// Key rows per sequence.
    pub keys: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention: each serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Query `i` sees keys `0..=i + keys − queries` only.
    pub causal: bool,
}

/// Query rows per task when there are few sequences.
const ROWS_PER_TASK: usize = 32;

/// `out = softmax(q kᵀ / √head_dim + mask) v` per head; `q` `[batch, queries, heads·hd]`, `k`
/// and `v` `[batch, keys, kv_heads·hd]`, `key_mask` `[batch, keys]` (true = hide), `out` like
/// `q`. The caller checks the lengths.
pub(crate) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[bool]>,
    dims: AttnDims,
    out: &mut [f32],
) {
    attention_by(q, k, v, key_mask, dims, out, &|blk| {
        pulp::Arch::new().dispatch(blk)
    });
}

/// [`attention`] with each block run by `run` (the best instruction set of this CPU, or one
/// chosen by a test).
pub(crate) fn attention_by(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[bool]>,
    dims: AttnDims,
    out: &mut [f32],
    run: &(dyn Fn(Block<'_>) + Sync),
) {
    let dq = dims.heads * dims.head_dim;
    let per_seq = dims.queries * dq;
    // whole sequences per task when there are enough of them (each task transposes its keys
    // once per head), else blocks of rows
    let rows_per_task = if dims.batch >= 2 * rayon::current_num_threads() {
        dims.queries.max(1)
    } else {
        ROWS_PER_TASK
    };
    out.par_chunks_mut(per_seq)
        .enumerate()
        .for_each(|(b, seq_out)| {
            seq_out
                .par_chunks_mut(rows_per_task * dq)
                .enumerate()
                .for_each(|(blk, rows_out)| {
                    run(Block {
                        q,
                        k,
                        v,
                        key_mask,
                        dims,
                        batch: b,
                        row0: blk * rows_per_task,
                        out: rows_out,
                    })
                });
        });
}

/// One task: query rows `row0..` of sequence `batch`, every head.
pub(crate) struct Block<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    key_mask: Option<&'a [bool]>,
    dims: AttnDims,
    batch: usize,
    row0: usize,
    out: &'a mut [f32],
}

/// Lanes of the manual reductions (independent partial sums vectorise; one running sum would
/// stay scalar, float addition not being reassociated).
const LANES: usize = 16;

#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    // comparisons rather than `f32::max`, whose NaN rule costs two more instructions per
    // vector (the scores are finite)
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    acc.iter().fold(tail, |a, &v| a.max(v))
}

#[inline(always)]
pub(crate) fn row_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// Query rows per register block: `R × 2` accumulator registers in both products (12 of AVX2's
/// 16 and of AVX-512's 32; two key vectors in the scores, two head-width vectors in the
/// context).
const R: usize = 6;

/// `p[r][jv·L..] = Σ_c qt[c][r] · kt[c][jv·L..]` for the `nv` key vectors of `L` lanes: `qt` is
/// `[head_dim][R]` (scaled queries), `kt` `[head_dim][tp]`, `p` `[R][tp]`.
#[inline(always)]
fn scores<S: pulp::Simd>(simd: S, qt: &[f32], kt: &[f32], tp: usize, nv: usize, p: &mut [f32]) {
    let (qt, _) = qt.as_chunks::<R>();
    // two key vectors at a time: 2·R accumulators, each broadcast query value used twice
    let mut jv = 0;
    while jv + 2 <= nv {
        let mut acc = [[simd.splat_f32s(0.0); 2]; R];
        for (qc, ktrow) in qt.iter().zip(kt.chunks_exact(tp)) {
            let kv = S::as_simd_f32s(ktrow).0;
            let (k0, k1) = (kv[jv], kv[jv + 1]);
            for (a, &x) in acc.iter_mut().zip(qc) {
                let x = simd.splat_f32s(x);
                a[0] = simd.mul_add_e_f32s(x, k0, a[0]);
                a[1] = simd.mul_add_e_f32s(x, k1, a[1]);
            }
        }
        for (a, prow) in acc.iter().zip(p.chunks_exact_mut(tp)) {
            let pv = S::as_mut_simd_f32s(prow).0;
            pv[jv] = a[0];
            pv[jv + 1] = a[1];
        }
        jv += 2;
    }
    if jv < nv {
        let mut acc = [simd.splat_f32s(0.0); R];
        for (qc, ktrow) in qt.iter().zip(kt.chunks_exact(tp)) {
            let kv = S::as_simd_f32s(ktrow).0[jv];
            for (a, &x) in acc.iter_mut().zip(qc) {
                *a = simd.mul_add_e_f32s(simd.splat_f32s(x), kv, *a);
            }
        }
        for (a, prow) in acc.iter().zip(p.chunks_exact_mut(tp)) {
            S::as_mut_simd_f32s(prow).0[jv] = *a;
        }
    }
}

/// `o[r][..] = Σ_j pt[j][r] · vp[j][..]` over the first `n` keys: `pt` is `[keys][R]`, `vp`
/// `[keys][hdp]` with `hdp` a multiple of two vectors, `o` `[R][hdp]`.
#[inline(always)]
fn context<S: pulp::Simd>(simd: S, pt: &[f32], vp: &[f32], n: usize, hdp: usize, o: &mut [f32]) {
    let (pt, _) = pt.as_chunks::<R>();
    let pairs = hdp / (2 * size_of::<S::f32s>() / size_of::<f32>());
    for cc in 0..pairs {
        let mut acc = [[simd.splat_f32s(0.0); 2]; R];
        for (pj, vrow) in pt[..n].iter().zip(vp.chunks_exact(hdp)) {
            let vv = S::as_simd_f32s(vrow).0;
            let (v0, v1) = (vv[2 * cc], vv[2 * cc + 1]);
            for (a, &x) in acc.iter_mut().zip(pj) {
                let x = simd.splat_f32s(x);
                a[0] = simd.mul_add_e_f32s(x, v0, a[0]);
                a[1] = simd.mul_add_e_f32s(x, v1, a[1]);
            }
        }
        for (a, orow) in acc.iter().zip(o.chunks_exact_mut(hdp)) {
            let ov = S::as_mut_simd_f32s(orow).0;
            ov[2 * cc] = a[0];
            ov[2 * cc + 1] = a[1];
        }
    }
}

impl pulp::WithSimd for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let AttnDims {
            queries: s,
            keys: t,
            heads,
            kv_heads,
            head_dim: hd,
            causal,
            ..
        } = self.dims;
        let (dq, dk) = (heads * hd, kv_heads * hd);
        let group = heads / kv_heads;
        let rows = self.out.len() / dq;
        let scale = 1.0 / (hd as f32).sqrt();
        let lanes = size_of::<S::f32s>() / size_of::<f32>();
        // keys padded to whole vectors, head width to whole pairs of vectors
        let tp = t.div_ceil(lanes) * lanes;
        let hdp = hd.div_ceil(2 * lanes) * 2 * lanes;
        let qb = &self.q[self.batch * s * dq..(self.batch + 1) * s * dq];
        let kb = &self.k[self.batch * t * dk..(self.batch + 1) * t * dk];
        let vb = &self.v[self.batch * t * dk..(self.batch + 1) * t * dk];
        // the additive mask: 0 or the most negative float (a masked score stays at it)
        let bias: Option<Vec<f32>> = self.key_mask.map(|m| {
            m[self.batch * t..(self.batch + 1) * t]
                .iter()
                .map(|&hide| if hide { f32::MIN } else { 0.0 })
                .collect()
        });
        // 1 / the softmax's sum per row of the block (applied to the context, not the weights)
        let mut inv = [0f32; R];
        // keys the query of row i may see
        let seen = |i: usize| if causal { i + 1 + t - s } else { t };
        let mut kt = vec![0f32; hd * tp];
        let mut vp = vec![0f32; t * hdp];
        let mut qt = vec![0f32; hd * R];
        let zeros = vec![0f32; hd];
        let mut p = vec![0f32; R * tp];
        let mut pt = vec![0f32; t * R];
        let mut o = vec![0f32; R * hdp];
        for h in 0..heads {
            let g = h / group;
            if h % group == 0 {
                // kt[c][j] = k[j][g·hd + c] (one key column per row of kt)
                for (c, ktrow) in kt.chunks_exact_mut(tp).enumerate() {
                    let col = g * hd + c;
                    for (x, krow) in ktrow.iter_mut().zip(kb.chunks_exact(dk)) {
                        *x = krow[col];
                    }
                }
                for (vprow, vrow) in vp.chunks_exact_mut(hdp).zip(vb.chunks_exact(dk)) {
                    vprow[..hd].copy_from_slice(&vrow[g * hd..(g + 1) * hd]);
                }
            }
            for r0 in (0..rows).step_by(R) {
                let rr = (rows - r0).min(R);
                // depth outer, rows inner: each step writes R contiguous values (the other
                // order vectorises into scatters, slower than the scores themselves); rows
                // past the block's end read zeros
                let qrows: [&[f32]; R] = std::array::from_fn(|r| {
                    if r < rr {
                        &qb[(self.row0 + r0 + r) * dq + h * hd..][..hd]
                    } else {
                        &zeros[..hd]
                    }
                });
                for (c, qc) in qt.as_chunks_mut::<R>().0.iter_mut().enumerate() {
                    for (x, qr) in qc.iter_mut().zip(&qrows) {
                        *x = qr[c] * scale;
                    }
                }
                // the block's last row sees the most keys
                let nmax = seen(self.row0 + r0 + rr - 1);
                scores(simd, &qt, &kt, tp, nmax.div_ceil(lanes), &mut p);
                for (r, prow) in p.chunks_exact_mut(tp).enumerate() {
                    let n = if r < rr { seen(self.row0 + r0 + r) } else { 0 };
                    let (live, rest) = prow.split_at_mut(n);
                    rest.fill(0.0);
                    if n == 0 {
                        continue;
                    }
                    if let Some(bias) = &bias {
                        for (x, &b) in live.iter_mut().zip(bias) {
                            *x += b;
                        }
                    }
                    let m = row_max(live);
                    for x in live.iter_mut() {
                        let d = *x - m;
                        *x = if d < -87.0 {
                            0.0
                        } else {
                            crate::kernels::exp_nonpositive(d)
                        };
                    }
                    inv[r] = 1.0 / row_sum(live);
                }
                // keys outer, rows inner (as for qt)
                let prows: [&[f32]; R] = std::array::from_fn(|r| &p[r * tp..r * tp + nmax]);
                for (j, ptj) in pt.as_chunks_mut::<R>().0.iter_mut().take(nmax).enumerate() {
                    for (x, pr) in ptj.iter_mut().zip(&prows) {
                        *x = pr[j];
                    }
                }
                context(simd, &pt, &vp, nmax, hdp, &mut o);
                for (r, &inv) in inv.iter().enumerate().take(rr) {
                    let dst = &mut self.out[(r0 + r) * dq + h * hd..][..hd];
                    for (d, &x) in dst.iter_mut().zip(&o[r * hdp..r * hdp + hd]) {
                        *d = x * inv;
                    }
                }
            }
        }
    }
}
