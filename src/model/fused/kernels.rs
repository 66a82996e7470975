//! The fused kernels on plain `f32` slices: one pass over memory per step, rows split over
//! the rayon pool, loops written so that LLVM vectorises them (AVX-512 or AVX2 + FMA where
//! the CPU has them, chosen at run time: [`super::simd`]).
//!
//! Each kernel computes the same maths as its reference form in [`super::reference`]; `exp`
//! and `erf` are polynomial approximations accurate to a few ulp (`exp`) and 2·10⁻⁷
//! absolute (`erf`), far inside the 10⁻⁵ the tests allow.

use rayon::prelude::*;

use super::simd::SimdLevel;

/// Rows handed to one rayon task: enough work to amortise the task, small enough to balance.
const MIN_ELEMENTS_PER_TASK: usize = 1 << 14;

/// Runs `body` compiled for the [`SimdLevel`] chosen at run time (`SimdLevel::active`):
/// with AVX-512 the loops it inlines are vectorised 16 wide, with AVX2 + FMA 8 wide, else
/// for the x86-64 baseline. The code is the same at every level and none of it asks for a
/// fused multiply-add (Rust never contracts `a * b + c`), so each level computes the same
/// IEEE operations on each element; only the register width differs.
macro_rules! with_simd {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
            fn avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            #[target_feature(enable = "avx2,fma")]
            fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            match SimdLevel::active() {
                // SAFETY: `active` never exceeds what the CPU was detected to support.
                SimdLevel::Avx512 => unsafe { avx512(|| $body) },
                // SAFETY: as above.
                SimdLevel::Avx2 => unsafe { avx2(|| $body) },
                SimdLevel::Baseline => $body,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}

/// Rows per rayon task for rows of `row_len` elements.
fn rows_per_task(row_len: usize) -> usize {
    (MIN_ELEMENTS_PER_TASK / row_len.max(1)).max(1)
}

/// e^x for f32, 0 below -87 (where e^x leaves the normal range), saturating above 88.
///
/// Cody–Waite reduction x = n ln2 + r, |r| ≤ ln2/2, then Cephes' degree-6 polynomial for
/// e^r and 2^n assembled in the exponent bits. Relative error about 2·10⁻⁷.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to the nearest integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let clamped = if x > 88.0 { 88.0 } else { x };
    let clamped = if clamped < -87.0 { -87.0 } else { clamped };
    let k = clamped * LOG2E + ROUND;
    let n = k - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * (r * r) + r + 1.0;
    let n_int = k.to_bits() as i32 - ROUND.to_bits() as i32;
    let two_n = f32::from_bits(((n_int + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        e_r * two_n
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5·10⁻⁷), given e^{-x²}.
#[inline(always)]
fn erf_with(x: f32, exp_neg_x2: f32) -> f32 {
    let a = if x < 0.0 { -x } else { x };
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let magnitude = 1.0 - poly * exp_neg_x2;
    if x < 0.0 {
        -magnitude
    } else {
        magnitude
    }
}

/// erf(x).
#[cfg(test)]
fn erf(x: f32) -> f32 {
    erf_with(x, exp(-x * x))
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// GELU(x) = x Φ(x) = ½ x (1 + erf(x/√2)).
#[inline(always)]
fn gelu_scalar(x: f32) -> f32 {
    let z = x * FRAC_1_SQRT_2;
    0.5 * x * (1.0 + erf_with(z, exp(-z * z)))
}

/// dGELU/dx · g = (Φ(x) + x φ(x)) g, sharing e^{-x²/2} between Φ and φ.
#[inline(always)]
fn gelu_grad_scalar(x: f32, g: f32) -> f32 {
    let z = x * FRAC_1_SQRT_2;
    let e = exp(-z * z);
    let cdf = 0.5 * (1.0 + erf_with(z, e));
    g * (cdf + x * FRAC_1_SQRT_2PI * e)
}

/// `y = GELU(x)` elementwise.
pub fn gelu(x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(MIN_ELEMENTS_PER_TASK)
        .zip(x.par_chunks(MIN_ELEMENTS_PER_TASK))
        .for_each(|(y, x)| with_simd!(y.iter_mut().zip(x).for_each(|(y, &x)| *y = gelu_scalar(x))));
}

/// `dx = GELU'(x) ⊙ dy` elementwise.
pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(MIN_ELEMENTS_PER_TASK)
        .zip(x.par_chunks(MIN_ELEMENTS_PER_TASK))
        .zip(dy.par_chunks(MIN_ELEMENTS_PER_TASK))
        .for_each(|((dx, x), dy)| {
            with_simd!(dx
                .iter_mut()
                .zip(x)
                .zip(dy)
                .for_each(|((dx, &x), &g)| *dx = gelu_grad_scalar(x, g)))
        });
}

/// Where the additive mask row of each score row lives.
///
/// Score rows are ordered (batch, head, query); the mask is `[batch, 1, mask_queries, keys]`
/// with `mask_queries` either the number of queries or 1 (one row for all queries).
#[derive(Debug, Clone, Copy)]
pub struct MaskLayout {
    pub heads: usize,
    pub queries: usize,
    pub mask_queries: usize,
    pub keys: usize,
}

impl MaskLayout {
    fn mask_row(&self, score_row: usize) -> usize {
        let batch = score_row / (self.heads * self.queries);
        let query = score_row % self.queries;
        batch * self.mask_queries + if self.mask_queries == 1 { 0 } else { query }
    }
}

/// `p = softmax(s + m)` over each row of `keys` scores, m the additive mask.
pub fn masked_softmax(scores: &[f32], mask: &[f32], layout: MaskLayout, probs: &mut [f32]) {
    let t = layout.keys;
    let rows = rows_per_task(t);
    probs
        .par_chunks_mut(rows * t)
        .zip(scores.par_chunks(rows * t))
        .enumerate()
        .for_each(|(task, (p_rows, s_rows))| {
            with_simd!({
                for (i, (p, s)) in p_rows.chunks_mut(t).zip(s_rows.chunks(t)).enumerate() {
                    let at = layout.mask_row(task * rows + i) * t;
                    p.copy_from_slice(s);
                    softmax_row(p, &mask[at..at + t]);
                }
            })
        });
}

/// Lanes of the running max and sum in [`softmax_row`]: one AVX2 register, at every
/// [`SimdLevel`], so that every level sums a row in the same order (and gives the same bits).
const LANES: usize = 8;

/// max(xs) over [`LANES`] independent running maxima, so that the loop vectorises.
#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let (chunks, rest) = xs.as_chunks::<LANES>();
    let mut max = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for l in 0..LANES {
            max[l] = if c[l] > max[l] { c[l] } else { max[l] };
        }
    }
    max.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// Σ xs over [`LANES`] independent running sums: a single f32 sum is a serial chain that
/// LLVM may not reorder, so it would not vectorise.
#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let (chunks, rest) = xs.as_chunks::<LANES>();
    let mut sum = [0.0f32; LANES];
    for c in chunks {
        for l in 0..LANES {
            sum[l] += c[l];
        }
    }
    sum.iter().chain(rest).sum()
}

/// Σ a_i b_i over [`LANES`] independent running sums (see [`lane_sum`]).
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lane_dot: lengths differ");
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut sum = [0.0f32; LANES];
    for (a, b) in a_chunks.iter().zip(b_chunks) {
        for l in 0..LANES {
            sum[l] += a[l] * b[l];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(a, b)| a * b).sum();
    sum.iter().sum::<f32>() + rest
}

/// `p ← softmax(p + m)` for one row of scores `p` and its additive mask row `m`: one
/// vectorised pass per step (the row stays in L1).
#[inline(always)]
fn softmax_row(p: &mut [f32], m: &[f32]) {
    for (p, &m) in p.iter_mut().zip(m) {
        *p += m;
    }
    let max = lane_max(p);
    for p in p.iter_mut() {
        *p = exp(*p - max);
    }
    let inv = 1.0 / lane_sum(p);
    p.iter_mut().for_each(|p| *p *= inv);
}

/// The shapes of one multi-head attention over `[B, T, d]` projections, d = heads · d_head,
/// with the additive mask `[B, 1, mask_queries, T]` (`mask_queries` is T or 1).
#[derive(Debug, Clone, Copy)]
pub struct AttentionLayout {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub d_head: usize,
    pub mask_queries: usize,
}

/// A strided f32 matrix as the `gemm` crate addresses it: element (i, j) at
/// `ptr + i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
struct MatRef {
    ptr: *const f32,
    row_stride: isize,
    col_stride: isize,
}

impl MatRef {
    /// A row-major matrix whose rows are `ld` elements apart.
    fn rows(ptr: *const f32, ld: usize) -> Self {
        MatRef {
            ptr,
            row_stride: ld as isize,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `ld` elements apart.
    fn transposed(ptr: *const f32, ld: usize) -> Self {
        MatRef {
            ptr,
            row_stride: 1,
            col_stride: ld as isize,
        }
    }
}

/// `dst = scale · lhs · rhs`, or `dst += scale · lhs · rhs` when `accumulate`: `dst` is
/// m × n, row-major with rows `ld_dst` apart; `lhs` is m × k and `rhs` k × n.
///
/// # Safety
/// Every element the shapes and strides address must lie inside its buffer, and `dst`
/// must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    ld_dst: usize,
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's bounds; gemm computes dst = α·dst + β·lhs·rhs (α read only when
    // `read_dst`), with no conjugation for real numbers.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ld_dst as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out` as a pointer that rayon tasks may share: each task writes its own head's columns.
#[derive(Clone, Copy)]
struct HeadColumns(*mut f32);
// SAFETY: tasks write disjoint (sequence, head) blocks of the buffer behind the pointer.
unsafe impl Send for HeadColumns {}
unsafe impl Sync for HeadColumns {}

impl HeadColumns {
    /// The element `offset` places into the buffer (a method, so closures capture the whole
    /// `Send` wrapper rather than its raw pointer field).
    ///
    /// # Safety
    /// `offset` must lie inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

impl AttentionLayout {
    /// Checks the buffers of one attention: `q`, `k`, `v` and `out` `[B, T, d]`, the mask
    /// `[B, mask_queries, T]`; `what` names the kernel in the panic message.
    fn check(self, what: &str, q: &[f32], k: &[f32], v: &[f32], mask: &[f32], out: &[f32]) {
        let (t, d) = (self.tokens, self.heads * self.d_head);
        assert!(
            q.len() == self.batch * t * d && k.len() == q.len() && v.len() == q.len(),
            "{what}: q, k, v must be [B, T, d]"
        );
        assert_eq!(out.len(), q.len(), "{what}: out must be [B, T, d]");
        assert_eq!(
            mask.len(),
            self.batch * self.mask_queries * t,
            "{what}: mask shape"
        );
    }

    /// Where the [T, d_k] block of sequence `b` and head `h` starts in a `[B, T, d]` buffer.
    fn head_offset(self, b: usize, h: usize) -> usize {
        b * self.tokens * self.heads * self.d_head + h * self.d_head
    }
}

/// P = softmax(Q_h K_hᵀ / √d_k + M) of sequence `b` and head `h`, into the T × T `p`
/// (the scores are computed there, then each row is normalised in place).
fn head_probabilities(
    q: &[f32],
    k: &[f32],
    mask: &[f32],
    layout: AttentionLayout,
    (b, h): (usize, usize),
    p: &mut [f32],
) {
    let (t, d) = (layout.tokens, layout.heads * layout.d_head);
    let at = layout.head_offset(b, h);
    let scale = 1.0 / (layout.d_head as f32).sqrt();
    // SAFETY: the [T, d_k] blocks of sequence b and head h inside q and k (row stride d;
    // the caller checked their lengths with `AttentionLayout::check`) and the T × T `p`.
    unsafe {
        // S = (Q_h K_hᵀ) · 1/√d_k: K_hᵀ read as [d_k, T] with column stride d.
        matmul(
            (t, t, layout.d_head),
            p.as_mut_ptr(),
            t,
            false,
            MatRef::rows(q.as_ptr().add(at), d),
            MatRef::transposed(k.as_ptr().add(at), d),
            scale,
            gemm::Parallelism::None,
        );
    }
    let mask_queries = layout.mask_queries;
    with_simd!({
        for (i, row) in p.chunks_mut(t).enumerate() {
            let m = b * mask_queries + if mask_queries == 1 { 0 } else { i };
            softmax_row(row, &mask[m * t..(m + 1) * t]);
        }
    });
}

/// O_h = A V_h for the T × T weights `a` of sequence `b` and head `h`, written into head
/// h's columns of `out`.
///
/// # Safety
/// `v` and `out` are `[B, T, d]` buffers (checked with `AttentionLayout::check`), and no
/// other task writes head h of sequence b of `out` meanwhile.
unsafe fn head_output(
    a: &[f32],
    v: &[f32],
    layout: AttentionLayout,
    (b, h): (usize, usize),
    out: HeadColumns,
) {
    let (t, d) = (layout.tokens, layout.heads * layout.d_head);
    let at = layout.head_offset(b, h);
    // SAFETY: the caller's bounds; `a` is T × T.
    unsafe {
        matmul(
            (t, layout.d_head, t),
            out.at(at),
            d,
            false,
            MatRef::rows(a.as_ptr(), t),
            MatRef::rows(v.as_ptr().add(at), d),
            1.0,
            gemm::Parallelism::None,
        );
    }
}

/// P̃ = (P ⊙ Z) · 1/(1 − p), burn's dropout arithmetic, for the mask Z (0/1) and
/// `keep_scale` = 1/(1 − p).
fn apply_dropout(p: &[f32], z: &[f32], keep_scale: f32, dropped: &mut [f32]) {
    with_simd!(for ((y, &p), &z) in dropped.iter_mut().zip(p).zip(z) {
        *y = (p * z) * keep_scale;
    });
}

/// Scaled dot-product attention of every head, without gradients (inference):
/// S = Q_h K_hᵀ / √d_k, P = softmax(S + M), O_h = P V_h (Vaswani et al. 2017, eq. 1).
///
/// `q`, `k`, `v` and `out` are `[B, T, d]`, heads side by side in d: each (sequence, head)
/// is one task that reads its head's columns in place and writes O_h into the same columns
/// of `out`, so the heads are never split into `[B, h, T, d_k]` nor merged back, and the
/// T × T scores of one task stay in cache.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    layout: AttentionLayout,
    out: &mut [f32],
) {
    layout.check("attention", q, k, v, mask, out);
    let (t, heads) = (layout.tokens, layout.heads);
    let out = HeadColumns(out.as_mut_ptr());
    (0..layout.batch * heads).into_par_iter().for_each_init(
        || vec![0.0f32; t * t],
        |p, task| {
            let head = (task / heads, task % heads);
            head_probabilities(q, k, mask, layout, head, p);
            // SAFETY: buffers checked above; each task writes its own head's block.
            unsafe { head_output(p, v, layout, head, out) };
        },
    );
}

/// Attention while training, with dropout on the probabilities:
/// S = Q_h K_hᵀ / √d_k, P = softmax(S + M), O_h = (P ⊙ Z / (1 − p)) V_h, Z the dropout
/// mask `keep` (0/1, `[B, h, T, T]`) and `keep_scale` = 1/(1 − p), in burn's order
/// ((P ⊙ Z) · 1/(1 − p)).
///
/// As [`attention`], one task per (sequence, head) reads and writes its head's columns of
/// `[B, T, d]` in place; it also writes P into `probs` (`[B, h, T, T]`) for
/// [`attention_backward`].
#[allow(clippy::too_many_arguments)]
pub fn attention_train(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    keep: &[f32],
    keep_scale: f32,
    layout: AttentionLayout,
    probs: &mut [f32],
    out: &mut [f32],
) {
    layout.check("attention_train", q, k, v, mask, out);
    let (t, heads) = (layout.tokens, layout.heads);
    assert!(
        probs.len() == layout.batch * heads * t * t && keep.len() == probs.len(),
        "attention_train: probs and keep must be [B, h, T, T]"
    );
    let out = HeadColumns(out.as_mut_ptr());
    probs
        .par_chunks_mut(t * t)
        .zip(keep.par_chunks(t * t))
        .enumerate()
        .for_each_init(
            || vec![0.0f32; t * t],
            |dropped, (task, (p, z))| {
                let head = (task / heads, task % heads);
                head_probabilities(q, k, mask, layout, head, p);
                apply_dropout(p, z, keep_scale, dropped);
                // SAFETY: buffers checked above; each task writes its own head's block.
                unsafe { head_output(dropped, v, layout, head, out) };
            },
        );
}

/// The gradients of [`attention_train`] given dL/dO (`d_out`, `[B, T, d]`), per (sequence,
/// head), with P̃ = (P ⊙ Z)/(1 − p):
/// dV_h = P̃ᵀ dO_h; dP = (dO_h V_hᵀ · 1/(1 − p)) ⊙ Z; dS = P ⊙ (dP − Σ_j P_j dP_j) (the
/// softmax backward of [`softmax_backward`]); dQ_h = dS K_h / √d_k; dK_h = dSᵀ Q_h / √d_k.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    keep: &[f32],
    keep_scale: f32,
    d_out: &[f32],
    layout: AttentionLayout,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let AttentionLayout {
        batch,
        tokens: t,
        heads,
        d_head,
        ..
    } = layout;
    let d = heads * d_head;
    let n = batch * t * d;
    assert!(
        [
            q.len(),
            k.len(),
            v.len(),
            d_out.len(),
            dq.len(),
            dk.len(),
            dv.len()
        ]
        .iter()
        .all(|&len| len == n),
        "attention_backward: q, k, v, d_out and the gradients must be [B, T, d]"
    );
    assert!(
        probs.len() == batch * heads * t * t && keep.len() == probs.len(),
        "attention_backward: probs and keep must be [B, h, T, T]"
    );
    let scale = 1.0 / (d_head as f32).sqrt();
    let (dq, dk, dv) = (
        HeadColumns(dq.as_mut_ptr()),
        HeadColumns(dk.as_mut_ptr()),
        HeadColumns(dv.as_mut_ptr()),
    );
    probs
        .par_chunks(t * t)
        .zip(keep.par_chunks(t * t))
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; t * t], vec![0.0f32; t * t]),
            |(dropped, ds), (task, (p, z))| {
                let at = layout.head_offset(task / heads, task % heads);
                apply_dropout(p, z, keep_scale, dropped);
                // SAFETY: every pointer addresses the [T, d_k] block of sequence b and head
                // h (row stride d) inside a buffer of length B·T·d (checked above), or a
                // T × T scratch; tasks write disjoint blocks of dq, dk and dv.
                unsafe {
                    // dV_h = P̃ᵀ dO_h
                    matmul(
                        (t, d_head, t),
                        dv.at(at),
                        d,
                        false,
                        MatRef::transposed(dropped.as_ptr(), t),
                        MatRef::rows(d_out.as_ptr().add(at), d),
                        1.0,
                        gemm::Parallelism::None,
                    );
                    // dP̃ = dO_h V_hᵀ
                    matmul(
                        (t, t, d_head),
                        ds.as_mut_ptr(),
                        t,
                        false,
                        MatRef::rows(d_out.as_ptr().add(at), d),
                        MatRef::transposed(v.as_ptr().add(at), d),
                        1.0,
                        gemm::Parallelism::None,
                    );
                }
                with_simd!({
                    // dP = (dP̃ · 1/(1 − p)) ⊙ Z, then dS = P ⊙ (dP − Σ_j P_j dP_j)
                    for (g, &z) in ds.iter_mut().zip(z) {
                        *g = (*g * keep_scale) * z;
                    }
                    for (g, p) in ds.chunks_mut(t).zip(p.chunks(t)) {
                        let dot = lane_dot(p, g);
                        for (g, &p) in g.iter_mut().zip(p) {
                            *g = p * (*g - dot);
                        }
                    }
                });
                // SAFETY: as above.
                unsafe {
                    // dQ_h = dS K_h / √d_k
                    matmul(
                        (t, d_head, t),
                        dq.at(at),
                        d,
                        false,
                        MatRef::rows(ds.as_ptr(), t),
                        MatRef::rows(k.as_ptr().add(at), d),
                        scale,
                        gemm::Parallelism::None,
                    );
                    // dK_h = dSᵀ Q_h / √d_k
                    matmul(
                        (t, d_head, t),
                        dk.at(at),
                        d,
                        false,
                        MatRef::transposed(ds.as_ptr(), t),
                        MatRef::rows(q.as_ptr().add(at), d),
                        scale,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
}

/// `ds = p ⊙ (dp − Σ_j p_j dp_j)` per row: the gradient of softmax at its output `p`.
pub fn softmax_backward(probs: &[f32], dp: &[f32], keys: usize, ds: &mut [f32]) {
    let t = keys;
    let rows = rows_per_task(t);
    ds.par_chunks_mut(rows * t)
        .zip(probs.par_chunks(rows * t))
        .zip(dp.par_chunks(rows * t))
        .for_each(|((ds_rows, p_rows), g_rows)| {
            with_simd!({
                for ((ds, p), g) in ds_rows
                    .chunks_mut(t)
                    .zip(p_rows.chunks(t))
                    .zip(g_rows.chunks(t))
                {
                    let dot = lane_dot(p, g);
                    for ((ds, &p), &g) in ds.iter_mut().zip(p).zip(g) {
                        *ds = p * (g - dot);
                    }
                }
            })
        });
}

/// LayerNorm over rows of `d`: `x̂ = (x − μ)/√(σ² + ε)`, `y = γ ⊙ x̂ + β`. Writes `x̂` and
/// 1/√(σ² + ε) per row for the backward pass.
pub fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    epsilon: f32,
    y: &mut [f32],
    x_hat: &mut [f32],
    inv_std: &mut [f32],
) {
    let d = gamma.len();
    let rows = rows_per_task(d);
    y.par_chunks_mut(rows * d)
        .zip(x_hat.par_chunks_mut(rows * d))
        .zip(inv_std.par_chunks_mut(rows))
        .zip(x.par_chunks(rows * d))
        .for_each(|(((y_rows, xh_rows), r_rows), x_rows)| {
            with_simd!({
                for (((y, xh), r), x) in y_rows
                    .chunks_mut(d)
                    .zip(xh_rows.chunks_mut(d))
                    .zip(r_rows.iter_mut())
                    .zip(x_rows.chunks(d))
                {
                    let mean = lane_sum(x) / d as f32;
                    for (xh, &v) in xh.iter_mut().zip(x) {
                        *xh = v - mean;
                    }
                    let var = lane_dot(xh, xh) / d as f32;
                    let rstd = 1.0 / (var + epsilon).sqrt();
                    *r = rstd;
                    xh.iter_mut().for_each(|xh| *xh *= rstd);
                    match beta {
                        Some(beta) => {
                            for (((y, &xh), &g), &b) in
                                y.iter_mut().zip(xh.iter()).zip(gamma).zip(beta)
                            {
                                *y = xh * g + b;
                            }
                        }
                        None => {
                            for ((y, &xh), &g) in y.iter_mut().zip(xh.iter()).zip(gamma) {
                                *y = xh * g;
                            }
                        }
                    }
                }
            })
        });
}

/// The LayerNorm backward pass from the saved `x̂` and 1/σ:
/// `dx = (1/σ)(ĝ − mean(ĝ) − x̂ mean(ĝ ⊙ x̂))` with `ĝ = γ ⊙ dy`, and the parameter
/// gradients `dγ = Σ_rows dy ⊙ x̂`, `dβ = Σ_rows dy`.
pub fn layer_norm_backward(
    x_hat: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let rows = rows_per_task(d).max(16);
    let partial = dx
        .par_chunks_mut(rows * d)
        .zip(x_hat.par_chunks(rows * d))
        .zip(inv_std.par_chunks(rows))
        .zip(dy.par_chunks(rows * d))
        .map(|(((dx_rows, xh_rows), r_rows), g_rows)| {
            let mut d_gamma = vec![0.0f32; d];
            let mut d_beta = vec![0.0f32; d];
            with_simd!({
                for (((dx, xh), &rstd), g) in dx_rows
                    .chunks_mut(d)
                    .zip(xh_rows.chunks(d))
                    .zip(r_rows)
                    .zip(g_rows.chunks(d))
                {
                    // ĝ = γ ⊙ dy, kept in dx until dx is computed from it
                    for ((g_hat, &g), &gamma) in dx.iter_mut().zip(g).zip(gamma) {
                        *g_hat = g * gamma;
                    }
                    let mean_g = lane_sum(dx) / d as f32;
                    let mean_gx = lane_dot(dx, xh) / d as f32;
                    for (((dg, db), &xh), &g) in
                        d_gamma.iter_mut().zip(d_beta.iter_mut()).zip(xh).zip(g)
                    {
                        *dg += g * xh;
                        *db += g;
                    }
                    for (dx, &xh) in dx.iter_mut().zip(xh) {
                        *dx = rstd * (*dx - mean_g - xh * mean_gx);
                    }
                }
            });
            (d_gamma, d_beta)
        })
        .collect::<Vec<_>>();
    let mut d_gamma = vec![0.0f32; d];
    let mut d_beta = vec![0.0f32; d];
    for (dg, db) in partial {
        d_gamma.iter_mut().zip(&dg).for_each(|(a, b)| *a += b);
        d_beta.iter_mut().zip(&db).for_each(|(a, b)| *a += b);
    }
    (d_gamma, d_beta)
}

/// σ(x) = 1 / (1 + e^{-x}).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh(x) = 2σ(2x) − 1 (absolute error about 10⁻⁷).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 * sigmoid(2.0 * x) - 1.0
}

/// Sizes of an LSTM recurrence: B sequences, T steps, hidden width d (4d gates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LstmShape {
    pub batch: usize,
    pub steps: usize,
    pub hidden: usize,
}

/// gemm parallelism for an m × n × k product, as burn-flex chooses it (one thread under
/// 192³ multiply-adds).
fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m.saturating_mul(n).saturating_mul(k) >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// `dst [b, a, w] = src [a, b, w]`: swaps the two leading axes (batch-major ↔ time-major).
pub fn swap_leading(src: &[f32], a: usize, b: usize, w: usize, dst: &mut [f32]) {
    assert!(
        src.len() == a * b * w && dst.len() == src.len(),
        "swap_leading: sizes"
    );
    dst.par_chunks_mut(w.max(1))
        .enumerate()
        .for_each(|(row, out)| {
            let (j, i) = (row / a.max(1), row % a.max(1));
            out.copy_from_slice(&src[(i * b + j) * w..(i * b + j + 1) * w]);
        });
}

/// The LSTM recurrence forward from zero state (Hochreiter & Schmidhuber 1997), time-major:
/// `gates [T, B, 4d]` holds `W_ih x_t + b` on entry and the activated gates (i, f, g̃, o)
/// on return; with `w_hh [d, 4d]` (h W_hh, burn's `Linear` layout), for each t
///
/// ```text
/// [i; f; g; o] = gates_t + h_{t-1} W_hh,   c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g),
/// h_t = σ(o) ⊙ tanh(c_t)
/// ```
///
/// into `cells [T, B, d]` and `states [T, B, d]`.
pub fn lstm_forward(
    gates: &mut [f32],
    w_hh: &[f32],
    shape: LstmShape,
    cells: &mut [f32],
    states: &mut [f32],
) {
    let LstmShape {
        batch: b,
        steps,
        hidden: d,
    } = shape;
    let (g4, block, gate_block) = (4 * d, b * d, b * 4 * d);
    assert!(
        gates.len() == steps * gate_block
            && w_hh.len() == d * g4
            && cells.len() == steps * block
            && states.len() == steps * block,
        "lstm_forward: sizes"
    );
    let zeros = vec![0.0f32; block];
    let rows = rows_per_task(g4);
    for t in 0..steps {
        let g_t = &mut gates[t * gate_block..(t + 1) * gate_block];
        let (h_done, h_rest) = states.split_at_mut(t * block);
        let (c_done, c_rest) = cells.split_at_mut(t * block);
        let (h_prev, c_prev) = if t == 0 {
            (&zeros[..], &zeros[..])
        } else {
            (&h_done[(t - 1) * block..], &c_done[(t - 1) * block..])
        };
        if t > 0 {
            // SAFETY: g_t is [B, 4d], h_prev [B, d] and w_hh [d, 4d], all row-major with the
            // lengths asserted above.
            unsafe {
                matmul(
                    (b, g4, d),
                    g_t.as_mut_ptr(),
                    g4,
                    true,
                    MatRef::rows(h_prev.as_ptr(), d),
                    MatRef::rows(w_hh.as_ptr(), g4),
                    1.0,
                    parallelism(b, g4, d),
                );
            }
        }
        g_t.par_chunks_mut(rows * g4)
            .zip(c_rest[..block].par_chunks_mut(rows * d))
            .zip(h_rest[..block].par_chunks_mut(rows * d))
            .zip(c_prev[..block].par_chunks(rows * d))
            .for_each(|(((g_rows, c_rows), h_rows), cp_rows)| {
                with_simd!({
                    for (((g, c), h), cp) in g_rows
                        .chunks_mut(g4)
                        .zip(c_rows.chunks_mut(d))
                        .zip(h_rows.chunks_mut(d))
                        .zip(cp_rows.chunks(d))
                    {
                        let (gi, rest) = g.split_at_mut(d);
                        let (gf, rest) = rest.split_at_mut(d);
                        let (gg, go) = rest.split_at_mut(d);
                        for ((((((i, f), g), o), &cp), c), h) in gi
                            .iter_mut()
                            .zip(gf.iter_mut())
                            .zip(gg.iter_mut())
                            .zip(go.iter_mut())
                            .zip(cp)
                            .zip(c.iter_mut())
                            .zip(h.iter_mut())
                        {
                            *i = sigmoid(*i);
                            *f = sigmoid(*f);
                            *g = tanh(*g);
                            *o = sigmoid(*o);
                            *c = *f * cp + *i * *g;
                            *h = *o * tanh(*c);
                        }
                    }
                })
            });
    }
}

/// Back-propagation through time of [`lstm_forward`]: from `d_states [T, B, d]` (∂L/∂h_t)
/// and what the forward pass kept, the gradient of the gate pre-activations
/// `d_gates [T, B, 4d]` (= ∂L/∂(W_ih x_t + b)) and `d_w_hh [d, 4d]` = Σ_t h_{t-1}ᵀ d_gates_t.
///
/// Per step, with dh = ∂L/∂h_t + (d_gates_{t+1} W_hhᵀ) and dc carried from t+1:
/// do = dh ⊙ tanh(c_t), dc += dh ⊙ o ⊙ (1 − tanh²(c_t)), di = dc ⊙ g̃, dg̃ = dc ⊙ i,
/// df = dc ⊙ c_{t-1}, then dc ← dc ⊙ f for step t−1, and each gate's derivative through
/// its σ or tanh.
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward(
    d_states: &[f32],
    gates: &[f32],
    cells: &[f32],
    states: &[f32],
    w_hh: &[f32],
    shape: LstmShape,
    d_gates: &mut [f32],
    d_w_hh: &mut [f32],
) {
    let LstmShape {
        batch: b,
        steps,
        hidden: d,
    } = shape;
    let (g4, block, gate_block) = (4 * d, b * d, b * 4 * d);
    assert!(
        d_states.len() == steps * block
            && gates.len() == steps * gate_block
            && cells.len() == steps * block
            && states.len() == steps * block
            && w_hh.len() == d * g4
            && d_gates.len() == steps * gate_block
            && d_w_hh.len() == d * g4,
        "lstm_backward: sizes"
    );
    let zeros = vec![0.0f32; block];
    let mut dh_next = vec![0.0f32; block];
    let mut dc = vec![0.0f32; block];
    let rows = rows_per_task(g4);
    for t in (0..steps).rev() {
        let ds_t = &d_states[t * block..(t + 1) * block];
        let g_t = &gates[t * gate_block..(t + 1) * gate_block];
        let c_t = &cells[t * block..(t + 1) * block];
        let c_prev = if t == 0 {
            &zeros[..]
        } else {
            &cells[(t - 1) * block..t * block]
        };
        let dg_t = &mut d_gates[t * gate_block..(t + 1) * gate_block];
        dg_t.par_chunks_mut(rows * g4)
            .zip(dc.par_chunks_mut(rows * d))
            .zip(ds_t.par_chunks(rows * d))
            .zip(dh_next.par_chunks(rows * d))
            .zip(g_t.par_chunks(rows * g4))
            .zip(c_t.par_chunks(rows * d))
            .zip(c_prev.par_chunks(rows * d))
            .for_each(
                |((((((dg_rows, dc_rows), ds_rows), dhn_rows), g_rows), c_rows), cp_rows)| {
                    with_simd!({
                        for ((((((dg, dc), ds), dhn), g), c), cp) in dg_rows
                            .chunks_mut(g4)
                            .zip(dc_rows.chunks_mut(d))
                            .zip(ds_rows.chunks(d))
                            .zip(dhn_rows.chunks(d))
                            .zip(g_rows.chunks(g4))
                            .zip(c_rows.chunks(d))
                            .zip(cp_rows.chunks(d))
                        {
                            let (gi, rest) = g.split_at(d);
                            let (gf, rest) = rest.split_at(d);
                            let (gg, go) = rest.split_at(d);
                            let (di, rest) = dg.split_at_mut(d);
                            let (df, rest) = rest.split_at_mut(d);
                            let (dgg, d_o) = rest.split_at_mut(d);
                            for j in 0..d {
                                let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
                                let dh = ds[j] + dhn[j];
                                let tc = tanh(c[j]);
                                let dcj = dc[j] + dh * o * (1.0 - tc * tc);
                                di[j] = dcj * g * i * (1.0 - i);
                                df[j] = dcj * cp[j] * f * (1.0 - f);
                                dgg[j] = dcj * i * (1.0 - g * g);
                                d_o[j] = dh * tc * o * (1.0 - o);
                                dc[j] = dcj * f;
                            }
                        }
                    })
                },
            );
        if t > 0 {
            // dh_{t-1} += d_gates_t W_hhᵀ (from the recurrence; ∂L/∂h_{t-1} is added above).
            // SAFETY: dh_next is [B, d], dg_t [B, 4d]; W_hhᵀ is read from w_hh [d, 4d] as
            // [4d, d] with row stride 1 and column stride 4d; lengths asserted above.
            unsafe {
                matmul(
                    (b, d, g4),
                    dh_next.as_mut_ptr(),
                    d,
                    false,
                    MatRef::rows(dg_t.as_ptr(), g4),
                    MatRef::transposed(w_hh.as_ptr(), g4),
                    1.0,
                    parallelism(b, d, g4),
                );
            }
        }
    }
    if steps > 1 {
        // d_w_hh = Σ_{t ≥ 1} h_{t-1}ᵀ d_gates_t: the states of steps 0..T−1 ([(T−1)B, d],
        // read transposed) times the gate gradients of steps 1..T ([(T−1)B, 4d]).
        let k = (steps - 1) * b;
        // SAFETY: d_w_hh is [d, 4d]; states[..k·d] read as [d, k] (row stride 1, column
        // stride d); d_gates[B·4d..] as [k, 4d]; lengths asserted above.
        unsafe {
            matmul(
                (d, g4, k),
                d_w_hh.as_mut_ptr(),
                g4,
                false,
                MatRef::transposed(states.as_ptr(), d),
                MatRef::rows(d_gates[gate_block..].as_ptr(), g4),
                1.0,
                parallelism(d, g4, k),
            );
        }
    } else {
        d_w_hh.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_libm() {
        let mut worst_exp = 0.0f32;
        let mut worst_erf = 0.0f32;
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.005;
            if x > -87.0 && x < 88.0 {
                let rel = ((exp(x) - x.exp()) / x.exp()).abs();
                worst_exp = worst_exp.max(rel);
            }
            let expected = libm_erf(x);
            worst_erf = worst_erf.max((erf(x) - expected).abs());
        }
        assert!(worst_exp < 1e-6, "exp relative error {worst_exp}");
        assert!(worst_erf < 5e-7, "erf absolute error {worst_erf}");
        assert_eq!(exp(-1.0e4), 0.0);
        assert_eq!(exp(-88.0), 0.0);
    }

    /// erf by its Taylor series (|x| < 3) or continued fraction, in f64.
    fn libm_erf(x: f32) -> f32 {
        let x = f64::from(x);
        let a = x.abs();
        let value = if a < 3.0 {
            let mut term = a;
            let mut sum = a;
            let mut n = 0.0;
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = e^{-a²}/(a√π) · 1/(1 + 1/(2a²)/(1 + 2/(2a²)/(1 + …)))
            let mut fraction = 0.0;
            for k in (1..60).rev() {
                fraction = (k as f64 / 2.0) / (a + fraction);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction)
        };
        (value.copysign(x)) as f32
    }
}

/// The scalars of one AdamW update (Loshchilov & Hutter 2019, Algorithm 2), in f32 as
/// burn's `AdamW::step` converts them.
#[derive(Debug, Clone, Copy)]
pub struct AdamWScalars {
    /// β₁ and 1 − β₁.
    pub beta_1: f32,
    pub one_minus_beta_1: f32,
    /// β₂ and 1 − β₂.
    pub beta_2: f32,
    pub one_minus_beta_2: f32,
    /// The bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    /// 1 − ηλ, the decoupled weight decay's factor; `None` when ηλ = 0 (θ is not scaled).
    pub decay_keep: Option<f32>,
    /// The learning rate η.
    pub lr: f32,
    /// t = 1: the moments start from g alone (m and v are overwritten, not read).
    pub first: bool,
}

/// One AdamW update of a parameter θ in place, with its gradient g and moments m, v:
/// m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², θ ← θ(1 − ηλ) − η · (m/c₁) / (√(v/c₂) + ε).
///
/// Each element goes through the same f32 operations in the same order as burn's chain of
/// tensor ops in `AdamW::step` (one pass over memory instead of fifteen), so the result is
/// bit-identical to it.
pub fn adamw(theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWScalars) {
    let update = |theta: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
        if s.first {
            *m = g * s.one_minus_beta_1;
            *v = (g * g) * s.one_minus_beta_2;
        } else {
            *m = *m * s.beta_1 + g * s.one_minus_beta_1;
            *v = *v * s.beta_2 + (g * g) * s.one_minus_beta_2;
        }
        let delta = (*m / s.correction_1) / ((*v / s.correction_2).sqrt() + s.epsilon);
        let decayed = match s.decay_keep {
            Some(keep) => *theta * keep,
            None => *theta,
        };
        *theta = decayed - delta * s.lr;
    };
    theta
        .par_chunks_mut(MIN_ELEMENTS_PER_TASK)
        .zip(g.par_chunks(MIN_ELEMENTS_PER_TASK))
        .zip(m.par_chunks_mut(MIN_ELEMENTS_PER_TASK))
        .zip(v.par_chunks_mut(MIN_ELEMENTS_PER_TASK))
        .for_each(|(((theta, g), m), v)| {
            with_simd!(theta
                .iter_mut()
                .zip(g)
                .zip(m.iter_mut())
                .zip(v.iter_mut())
                .for_each(|(((theta, &g), m), v)| update(theta, g, m, v)))
        });
}
