//! Attention of a few query rows (decode steps) straight over the KV cache buffers.
//!
//! With one query row per sequence, the blocked attention's per-block matmuls, masks and
//! softmax pass are mostly overhead (tensor allocations, thread hand-offs for a few
//! thousand multiply-adds). This kernel walks the cache in place: per query row and head,
//! scores against the visible keys (`key_pos <= query_pos`), a max-subtracted softmax, and
//! the weighted sum of values — the same math as
//! [`crate::attention::causal_attention_reference`], its twin in the tests. The cache may
//! be stored in f32, f16 or bf16 ([`KvElem`]); values are widened to f32 as they are read.

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use super::kv_elem::KvElem;
use crate::Result;

/// Below this many multiply-adds the kernel runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// A `[heads, rows, d]` CPU tensor seen as rows of `d` values: `row(h, i)`.
struct Rows<'a, T> {
    data: &'a [T],
    start: usize,
    head_stride: usize,
    d: usize,
}

impl<'a, T> Rows<'a, T> {
    /// A row-contiguous view (`stride[2] == 1`, `stride[1] == d`) of `data`.
    fn of(data: &'a [T], l: &Layout) -> Self {
        Rows {
            data,
            start: l.start_offset(),
            head_stride: l.stride()[0],
            d: l.dims()[2],
        }
    }

    #[inline(always)]
    fn row(&self, h: usize, i: usize) -> &[T] {
        &self.data[self.start + h * self.head_stride + i * self.d..][..self.d]
    }
}

/// Whether rows of a `[heads, rows, d]` layout are contiguous and follow each other (the
/// stride of a size-1 dimension does not matter: candle leaves it arbitrary). Every
/// candle-contiguous layout is walkable.
fn walkable(layout: &Layout) -> bool {
    let (dims, stride) = (layout.dims(), layout.stride());
    dims.len() == 3 && stride[2] == 1 && (dims[1] <= 1 || stride[1] == dims[2])
}

/// `t` itself when [`walkable`], else a contiguous copy (always walkable).
fn walkable_copy(t: &Tensor) -> Result<Tensor> {
    Ok(if walkable(t.layout()) {
        t.clone()
    } else {
        t.contiguous()?
    })
}

/// Keys and values of one cache as rows, in their stored element type.
enum KvRows<'a> {
    F32(Rows<'a, f32>, Rows<'a, f32>),
    F16(Rows<'a, f16>, Rows<'a, f16>),
    BF16(Rows<'a, bf16>, Rows<'a, bf16>),
}

/// The CPU data of `k`, `v` `[heads, rows, d]` as rows when both are stored in the same
/// element type and walkable (a cache view); `None` for other layouts, dtypes or devices.
fn kv_rows<'a>(k: (&'a Storage, &Layout), v: (&'a Storage, &Layout)) -> Option<KvRows<'a>> {
    if !walkable(k.1) || !walkable(v.1) {
        return None;
    }
    Some(match (k.0, v.0) {
        (Storage::Cpu(CpuStorage::F32(kd)), Storage::Cpu(CpuStorage::F32(vd))) => {
            KvRows::F32(Rows::of(kd, k.1), Rows::of(vd, v.1))
        }
        (Storage::Cpu(CpuStorage::F16(kd)), Storage::Cpu(CpuStorage::F16(vd))) => {
            KvRows::F16(Rows::of(kd, k.1), Rows::of(vd, v.1))
        }
        (Storage::Cpu(CpuStorage::BF16(kd)), Storage::Cpu(CpuStorage::BF16(vd))) => {
            KvRows::BF16(Rows::of(kd, k.1), Rows::of(vd, v.1))
        }
        _ => return None,
    })
}

impl KvRows<'_> {
    /// [`attend_group`] on whichever element type the cache holds.
    #[allow(clippy::too_many_arguments)]
    fn attend_group(
        &self,
        q: &[f32],
        g: usize,
        kvh: usize,
        vis: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        match self {
            KvRows::F32(k, v) => attend_group(q, g, k, v, kvh, vis, scale, out),
            KvRows::F16(k, v) => attend_group(q, g, k, v, kvh, vis, scale, out),
            KvRows::BF16(k, v) => attend_group(q, g, k, v, kvh, vis, scale, out),
        }
    }
}

// Plain index loops, no closures and no `mul_add`: everything inlines into the
// `#[target_feature]` copy below and vectorises there (a closure or `mul_add` outside it
// would compile for baseline x86-64, `mul_add` as a libm call).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexed loops are the shape that vectorises (above)
fn dot<T: KvElem>(a: &[f32], b: &[T]) -> f32 {
    let b = &b[..a.len()];
    // 16 independent lanes: the loop vectorises without reassociating one running sum.
    let mut acc = [0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..][..16], &b[c * 16..][..16]);
        for l in 0..16 {
            acc[l] += x[l] * y[l].to_f32();
        }
    }
    let mut sum = 0f32;
    for l in 0..16 {
        sum += acc[l];
    }
    for j in chunks * 16..a.len() {
        sum += a[j] * b[j].to_f32();
    }
    sum
}

/// One query row of one head: `out = softmax(scale · K q) V` over the first `visible` keys
/// (`scores` holds at least `visible` values of scratch).
#[inline(always)]
// Indexed loops are the shape that vectorises (above).
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn attend<T: KvElem>(
    scores: &mut [f32],
    q: &[f32],
    k: &Rows<T>,
    v: &Rows<T>,
    kvh: usize,
    visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    let scores = &mut scores[..visible];
    let mut max = f32::NEG_INFINITY;
    for j in 0..visible {
        let s = dot(q, k.row(kvh, j)) * scale;
        scores[j] = s;
        max = max.max(s);
    }
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for j in 0..visible {
        let (p, row) = (scores[j], v.row(kvh, j));
        let row = &row[..out.len()];
        for l in 0..out.len() {
            out[l] += p * row[l].to_f32();
        }
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2<T: KvElem>(
    scores: &mut [f32],
    q: &[f32],
    k: &Rows<T>,
    v: &Rows<T>,
    kvh: usize,
    visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    attend(scores, q, k, v, kvh, visible, scale, out)
}

fn attend_best<T: KvElem>(
    q: &[f32],
    k: &Rows<T>,
    v: &Rows<T>,
    kvh: usize,
    visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    thread_local! {
        // Score buffer reused across calls: one allocation per thread, not per head.
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCORES.with_borrow_mut(|scores| {
        if scores.len() < visible {
            scores.resize(visible, 0.0);
        }
        #[cfg(target_arch = "x86_64")]
        if super::avx2::available() {
            // SAFETY: the CPU supports AVX2 and FMA.
            return unsafe { attend_avx2(scores, q, k, v, kvh, visible, scale, out) };
        }
        attend(scores, q, k, v, kvh, visible, scale, out)
    })
}

/// The `g` query heads that share KV head `kvh`: `q` holds their rows (`g · d` values,
/// head-major), `out` receives theirs. With `d = 64` and `g <= 3` (SmolLM2, Qwen2.5-0.5B)
/// on AVX-512 the heads go together (each key row loaded once for all of them, four keys'
/// dot products reduced at once); otherwise one head at a time.
#[allow(clippy::too_many_arguments)]
fn attend_group<T: KvElem>(
    q: &[f32],
    g: usize,
    k: &Rows<T>,
    v: &Rows<T>,
    kvh: usize,
    visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = k.d;
    #[cfg(target_arch = "x86_64")]
    if d == 64 && g <= 3 && super::avx512::available() {
        thread_local! {
            // Score buffer reused across calls: one allocation per thread.
            static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        return SCORES.with_borrow_mut(|scores| {
            if scores.len() < g * visible {
                scores.resize(g * visible, 0.0);
            }
            // SAFETY: AVX-512 F/BW/VL present; d = 64 and g <= 3 as the kernel needs.
            unsafe {
                match g {
                    1 => attend_group_avx512::<T, 1>(scores, q, k, v, kvh, visible, scale, out),
                    2 => attend_group_avx512::<T, 2>(scores, q, k, v, kvh, visible, scale, out),
                    _ => attend_group_avx512::<T, 3>(scores, q, k, v, kvh, visible, scale, out),
                }
            }
        });
    }
    for (t, o) in out.chunks_mut(d).enumerate().take(g) {
        attend_best(&q[t * d..][..d], k, v, kvh, visible, scale, o);
    }
}

/// [`super::flash::exp2`] on 16 lanes (same steps, same results): `2^x` for `x <= 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn exp2_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let round = _mm512_set1_ps(12_582_912.0);
    let x = _mm512_max_ps(x, _mm512_set1_ps(-126.0));
    let t = _mm512_add_ps(x, round);
    let f = _mm512_sub_ps(x, _mm512_sub_ps(t, round));
    let poly = super::flash::EXP2_POLY;
    let mut p = _mm512_set1_ps(poly[0]);
    for &c in &poly[1..] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    let n_bits = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(round));
    let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(n_bits, _mm512_set1_epi32(127)));
    _mm512_mul_ps(p, _mm512_castsi512_ps(scale))
}

/// [`attend_group`] for `G` heads of dimension 64 on AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn attend_group_avx512<T: KvElem, const G: usize>(
    scores: &mut [f32],
    q: &[f32],
    k: &Rows<T>,
    v: &Rows<T>,
    kvh: usize,
    visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let z = _mm512_setzero_ps();
    let mut qv = [[z; 4]; G];
    for t in 0..G {
        for c in 0..4 {
            qv[t][c] = _mm512_loadu_ps(q.as_ptr().add(t * 64 + c * 16));
        }
    }
    // Scores in base-2 units (`scale · log2 e`), so the softmax below is `exp2`: the
    // vectorising polynomial of the flash kernel, where `f32::exp` is a libm call per score
    // (~3% of a 16-sequence decode step at a few hundred cached rows).
    let sc = _mm512_castps512_ps128(_mm512_set1_ps(scale * super::flash::LOG2_E));
    let mut j = 0;
    while j + 4 <= visible {
        let mut acc = [[z; 4]; G];
        for kk in 0..4 {
            let kr = k.row(kvh, j + kk).as_ptr();
            let kv = [
                T::load16(kr),
                T::load16(kr.add(16)),
                T::load16(kr.add(32)),
                T::load16(kr.add(48)),
            ];
            for t in 0..G {
                let mut a = _mm512_mul_ps(qv[t][0], kv[0]);
                a = _mm512_fmadd_ps(qv[t][1], kv[1], a);
                a = _mm512_fmadd_ps(qv[t][2], kv[2], a);
                acc[t][kk] = _mm512_fmadd_ps(qv[t][3], kv[3], a);
            }
        }
        for t in 0..G {
            let s4 = super::avx512::reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
            _mm_storeu_ps(scores.as_mut_ptr().add(t * visible + j), _mm_mul_ps(s4, sc));
        }
        j += 4;
    }
    while j < visible {
        let kr = k.row(kvh, j).as_ptr();
        for t in 0..G {
            let mut a = _mm512_mul_ps(qv[t][0], T::load16(kr));
            for c in 1..4 {
                a = _mm512_fmadd_ps(qv[t][c], T::load16(kr.add(16 * c)), a);
            }
            scores[t * visible + j] = _mm512_reduce_add_ps(a) * (scale * super::flash::LOG2_E);
        }
        j += 1;
    }
    // Softmax per head (max-subtracted).
    let mut inv = [0f32; G];
    for t in 0..G {
        let s = &mut scores[t * visible..][..visible];
        let mut max = f32::NEG_INFINITY;
        for &x in s.iter() {
            max = max.max(x);
        }
        let mut sum = 0f32;
        let (mv, mut sv) = (_mm512_set1_ps(max), z);
        let mut chunks = s.chunks_exact_mut(16);
        for c in &mut chunks {
            let e = exp2_avx512(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), mv));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            sv = _mm512_add_ps(sv, e);
        }
        for x in chunks.into_remainder() {
            *x = super::flash::exp2::<true>(*x - max);
            sum += *x;
        }
        inv[t] = 1.0 / (sum + _mm512_reduce_add_ps(sv));
    }
    // Weighted sum of values: each value row loaded once for all heads.
    let mut o = [[z; 4]; G];
    for j in 0..visible {
        let vr = v.row(kvh, j).as_ptr();
        let vv = [
            T::load16(vr),
            T::load16(vr.add(16)),
            T::load16(vr.add(32)),
            T::load16(vr.add(48)),
        ];
        for t in 0..G {
            let p = _mm512_set1_ps(scores[t * visible + j]);
            for c in 0..4 {
                o[t][c] = _mm512_fmadd_ps(p, vv[c], o[t][c]);
            }
        }
    }
    for t in 0..G {
        let iv = _mm512_set1_ps(inv[t]);
        for c in 0..4 {
            _mm512_storeu_ps(
                out.as_mut_ptr().add(t * 64 + c * 16),
                _mm512_mul_ps(o[t][c], iv),
            );
        }
    }
}

/// Attention of query rows `q` `[H, n, d]` (RoPE applied) over `k`/`v` `[H_kv, m, d]`,
/// row `i` seeing key `j` iff `k_pos[j] <= q_pos[i]`: `[n, H·d]`. The caller checked the
/// shapes and that every query sees a key (as [`crate::attention::causal_attention`] does).
/// `None` when `q` is not f32 on the CPU or K and V are not both f32, f16 or bf16 there (the
/// caller takes the general path).
pub fn few_rows_attention(
    q: &Tensor,
    q_pos: &[u32],
    k: &Tensor,
    v: &Tensor,
    k_pos: &[u32],
) -> Result<Option<Tensor>> {
    if q.dtype() != DType::F32 || !q.device().is_cpu() {
        return Ok(None);
    }
    let (h, n, d) = q.dims3()?;
    let hkv = k.dims3()?.0;
    let g = h / hkv;
    let scale = 1.0 / (d as f32).sqrt();
    let q = q.contiguous()?;
    let qv: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let visible: Vec<usize> = q_pos
        .iter()
        .map(|&p| k_pos.partition_point(|&kp| kp <= p))
        .collect();
    let macs = 2 * h * d * visible.iter().sum::<usize>();
    // The kernel walks row-contiguous views (cache buffers are); copy anything else.
    let (k, v) = (walkable_copy(k)?, walkable_copy(v)?);
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let Some(rows) = kv_rows((&ks, kl), (&vs, vl)) else {
        // Not on the CPU, or K and V in different types: the general path takes it.
        return Ok(None);
    };
    let mut out = vec![0f32; n * h * d];
    // Output row `i`, KV head `kh`'s `g` query heads are chunk `i·H_kv + kh` of `out`
    // (`g·d` values); their query rows are gathered head-major.
    let one = |(c, o): (usize, &mut [f32])| {
        let (i, kh) = (c / hkv, c % hkv);
        let mut qg = Vec::with_capacity(g * d);
        for t in 0..g {
            qg.extend_from_slice(&qv[((kh * g + t) * n + i) * d..][..d]);
        }
        rows.attend_group(&qg, g, kh, visible[i], scale, o);
    };
    if macs >= PARALLEL_MIN_MACS {
        out.par_chunks_mut(g * d).enumerate().for_each(one);
    } else {
        out.chunks_mut(g * d).enumerate().for_each(one);
    }
    Ok(Some(Tensor::from_vec(out, (n, h * d), q.device())?))
}

/// Decode attention of `B` sequences at once: query row `b` of `q` `[H, B, d]` (RoPE applied,
/// at `q_pos[b]`) attends over its own sequence's `kv[b]` = (`k`, `v`) `[H_kv, m_b, d]` with
/// key positions `k_pos[b]` (non-decreasing), causal by position. Returns `[B, H·d]`; the
/// (sequence, head) pairs run in parallel. Errors on inconsistent shapes or a query that
/// sees no key; `None` when `q` is not f32 on the CPU or a cache is not f32, f16 or bf16.
pub fn batched_decode_attention(
    q: &Tensor,
    q_pos: &[u32],
    kv: &[(Tensor, Tensor)],
    k_pos: &[&[u32]],
) -> Result<Option<Tensor>> {
    let (h, bsz, d) = q.dims3()?;
    if bsz == 0 || kv.len() != bsz || q_pos.len() != bsz || k_pos.len() != bsz {
        return Err(crate::ModelError::BadArgument(format!(
            "batched attention: {bsz} query rows, {} caches, {} positions",
            kv.len(),
            q_pos.len()
        )));
    }
    if q.dtype() != DType::F32 || !q.device().is_cpu() {
        return Ok(None);
    }
    let mut kv_c = Vec::with_capacity(bsz);
    let mut visible = Vec::with_capacity(bsz);
    for (b, (k, v)) in kv.iter().enumerate() {
        let (hkv, m, dk) = k.dims3()?;
        let same_heads = kv[0].0.dims3()?.0 == hkv;
        if v.dims3()? != (hkv, m, dk)
            || dk != d
            || hkv == 0
            || !h.is_multiple_of(hkv)
            || !same_heads
        {
            return Err(crate::ModelError::BadArgument(format!(
                "batched attention: q {:?}, k {:?}, v {:?}",
                q.dims(),
                k.dims(),
                v.dims()
            )));
        }
        if k_pos[b].len() != m {
            return Err(crate::ModelError::BadArgument(format!(
                "batched attention: {} key positions for {m} keys",
                k_pos[b].len()
            )));
        }
        let vis = k_pos[b].partition_point(|&p| p <= q_pos[b]);
        if vis == 0 {
            return Err(crate::ModelError::BadArgument(format!(
                "batched attention: query at position {} sees no key",
                q_pos[b]
            )));
        }
        visible.push(vis);
        kv_c.push((walkable_copy(k)?, walkable_copy(v)?, h / hkv));
    }
    let qv: Vec<f32> = q.contiguous()?.flatten_all()?.to_vec1()?;
    let guards: Vec<_> = kv_c
        .iter()
        .map(|(k, v, _)| (k.storage_and_layout(), v.storage_and_layout()))
        .collect();
    let mut rows = Vec::with_capacity(bsz);
    for ((ks, kl), (vs, vl)) in &guards {
        let Some(r) = kv_rows((ks, kl), (vs, vl)) else {
            return Ok(None);
        };
        rows.push(r);
    }
    let scale = 1.0 / (d as f32).sqrt();
    let macs = 2 * h * d * visible.iter().sum::<usize>();
    let mut out = vec![0f32; bsz * h * d];
    // Sequence `b`, KV head `kh`'s `g` query heads are chunk `b·H_kv + kh` of `out`
    // (`g·d` values); their query rows are gathered head-major.
    let (g, hkv) = (kv_c[0].2, h / kv_c[0].2);
    let one = |(c, o): (usize, &mut [f32])| {
        let (b, kh) = (c / hkv, c % hkv);
        let mut qg = Vec::with_capacity(g * d);
        for t in 0..g {
            qg.extend_from_slice(&qv[((kh * g + t) * bsz + b) * d..][..d]);
        }
        rows[b].attend_group(&qg, g, kh, visible[b], scale, o);
    };
    if macs >= PARALLEL_MIN_MACS || bsz > 1 {
        out.par_chunks_mut(g * d).enumerate().for_each(one);
    } else {
        out.chunks_mut(g * d).enumerate().for_each(one);
    }
    Ok(Some(Tensor::from_vec(out, (bsz, h * d), q.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::causal_attention_reference;
    use candle_core::Device;

    #[test]
    fn matches_the_reference_on_cache_views() {
        let dev = Device::Cpu;
        let (h, hkv, d, cap) = (6, 2, 64, 700);
        // A cache buffer with spare capacity, viewed through `narrow` like `LayerKv::k`.
        let kb = Tensor::randn(0f32, 1.0, (hkv, cap, d), &dev).unwrap();
        let vb = Tensor::randn(0f32, 1.0, (hkv, cap, d), &dev).unwrap();
        for (m, q_pos) in [(1usize, vec![0u32]), (600, vec![599, 17, 300, 599])] {
            let (k, v) = (kb.narrow(1, 0, m).unwrap(), vb.narrow(1, 0, m).unwrap());
            let k_pos: Vec<u32> = (0..m as u32).collect();
            let q = Tensor::randn(0f32, 1.0, (h, q_pos.len(), d), &dev).unwrap();
            let got = few_rows_attention(&q, &q_pos, &k, &v, &k_pos)
                .unwrap()
                .unwrap();
            let want = causal_attention_reference(&q, &q_pos, &k, &v, &k_pos).unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "m={m}: {diff}");
        }
        // One key whose row dimension has candle's arbitrary size-1 stride (what a
        // transposed one-token projection looks like): walked, no copy loop.
        let k = Tensor::randn(0f32, 1.0, (1, hkv, d), &dev)
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, hkv, d), &dev)
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        let q = Tensor::randn(0f32, 1.0, (h, 1, d), &dev).unwrap();
        let got = few_rows_attention(&q, &[4], &k, &v, &[4]).unwrap().unwrap();
        let want = causal_attention_reference(&q, &[4], &k, &v, &[4]).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }

    /// The 16-lane `exp2` gives the scalar one's bits (same steps, fused the same way).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp2_equals_the_scalar_one() {
        if !crate::kernels::cpu::avx512::available() {
            return;
        }
        let xs: Vec<f32> = (0..16 * 40)
            .map(|i| -(i as f32) * 0.23 + if i % 7 == 0 { -200.0 } else { 0.0 })
            .collect();
        for c in xs.chunks(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512 F/BW/VL checked above.
            unsafe {
                use std::arch::x86_64::*;
                _mm512_storeu_ps(got.as_mut_ptr(), exp2_avx512(_mm512_loadu_ps(c.as_ptr())));
            }
            for (g, &x) in got.iter().zip(c) {
                assert_eq!(
                    g.to_bits(),
                    crate::kernels::cpu::flash::exp2::<true>(x).to_bits(),
                    "{x}"
                );
            }
        }
    }

    #[test]
    fn batched_matches_per_sequence_reference() {
        let dev = Device::Cpu;
        let (h, hkv, d) = (6, 2, 64);
        let lens = [1usize, 37, 300];
        let kv: Vec<(Tensor, Tensor)> = lens
            .iter()
            .map(|&m| {
                let buf = |s| Tensor::randn(0f32, s, (hkv, m + 9, d), &dev).unwrap();
                (
                    buf(1.0).narrow(1, 0, m).unwrap(),
                    buf(2.0).narrow(1, 0, m).unwrap(),
                )
            })
            .collect();
        let k_pos: Vec<Vec<u32>> = lens
            .iter()
            .map(|&m| (10..10 + m as u32).collect())
            .collect();
        let q_pos: Vec<u32> = k_pos.iter().map(|p| *p.last().unwrap()).collect();
        let q = Tensor::randn(0f32, 1.0, (h, lens.len(), d), &dev).unwrap();
        let refs: Vec<&[u32]> = k_pos.iter().map(|p| p.as_slice()).collect();
        let got = batched_decode_attention(&q, &q_pos, &kv, &refs)
            .unwrap()
            .unwrap();
        for (b, (k, v)) in kv.iter().enumerate() {
            let qb = q.narrow(1, b, 1).unwrap();
            let want = causal_attention_reference(&qb, &q_pos[b..b + 1], k, v, &k_pos[b]).unwrap();
            let diff = (got.narrow(0, b, 1).unwrap() - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "sequence {b}: {diff}");
        }
        // A query before its first key is an error.
        assert!(batched_decode_attention(&q, &[0, 0, 0], &kv, &refs).is_err());
    }

    /// Caches stored in 16 bits: the kernel widens them as it reads; the twin gets the same
    /// rounded values in f32.
    #[test]
    fn sixteen_bit_caches_match_the_reference_on_their_values() {
        let dev = Device::Cpu;
        for (h, hkv, d) in [(9usize, 3usize, 64usize), (4, 2, 32)] {
            let m = 300;
            let k_pos: Vec<u32> = (0..m as u32).collect();
            let q_pos = vec![299u32, 5];
            let q = Tensor::randn(0f32, 1.0, (h, 2, d), &dev).unwrap();
            let kb = Tensor::randn(0f32, 1.0, (hkv, m + 7, d), &dev).unwrap();
            let vb = Tensor::randn(0f32, 1.0, (hkv, m + 7, d), &dev).unwrap();
            for dt in [DType::F16, DType::BF16] {
                let k = kb.to_dtype(dt).unwrap().narrow(1, 0, m).unwrap();
                let v = vb.to_dtype(dt).unwrap().narrow(1, 0, m).unwrap();
                let (k32, v32) = (
                    k.to_dtype(DType::F32).unwrap(),
                    v.to_dtype(DType::F32).unwrap(),
                );
                let want = causal_attention_reference(&q, &q_pos, &k32, &v32, &k_pos).unwrap();
                let got = few_rows_attention(&q, &q_pos, &k, &v, &k_pos)
                    .unwrap()
                    .unwrap();
                let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
                assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "{dt:?} d={d}");
                // One row per sequence through the batched kernel.
                let kv = vec![(k.clone(), v.clone()); 2];
                let refs = [k_pos.as_slice(), k_pos.as_slice()];
                let qb = q.contiguous().unwrap();
                let got = batched_decode_attention(&qb, &q_pos, &kv, &refs)
                    .unwrap()
                    .unwrap();
                let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
                assert!(
                    diff.to_scalar::<f32>().unwrap() < 1e-4,
                    "batched {dt:?} d={d}"
                );
            }
            // K and V in different types: not this kernel's case.
            let k = kb.to_dtype(DType::F16).unwrap();
            assert!(few_rows_attention(
                &q,
                &[0, 0],
                &k,
                &vb,
                &(0..m as u32 + 7).collect::<Vec<_>>()
            )
            .unwrap()
            .is_none());
        }
    }
}
