// The A^3 check-layer score and its top-k (DESIGN.md §1.2 step 3), f32 throughout.
// CPU twins: a3kv_cuda::reference::{a3_scores, top_k} (tested against
// a3kv_fusion::a3::a3_scores and a3kv_fusion::selection::top_k).
//
// Shapes: q [H, Q, d] post-RoPE queries of the question rows; k [H_kv, T, d] post-RoPE keys
// of all rows; P prefix rows; ncols = T - P keys scored (documents then question);
// n_doc = ncols - Q. Query head h pairs with KV head h / g (g = H / H_kv), heads concatenated:
// logit[i, j] = scale * sum_h q[h, i, :] . k[h / g, P + j, :], scale = 1 / sqrt(H d); the
// group's queries are summed once (sum_h q_h . k_{h/g} = sum_kv (sum_{h in kv} q_h) . k_kv).
// Question row i sees every document key and question keys 0..=i (causal inside the
// question block); the prefix is outside the softmax.
//
// Four launches (layout::a3_launches): a3_logits -> a3_row_stats -> a3_column_scores ->
// moving_average, then topk_rows on the smoothed scores.

#define A3_KEYS_PER_WARP 8

// logits [Q, ncols] f32 (hidden entries -inf). Grid (ceil(ncols / (warps * 8)), Q); each
// warp computes 8 keys, lanes split the H_kv * d concatenated dims. Dynamic shared memory:
// H_kv * d floats (the group-summed query row).
template <typename S>
__device__ void a3_logits_impl(const u16* __restrict__ q, const u16* __restrict__ k,
                               float* __restrict__ logits, u32 heads, u32 kv_heads, u32 nq,
                               u32 t, u32 p, u32 d, float scale) {
  extern __shared__ float qs[];
  const u32 i = blockIdx.y;
  const u32 g = heads / kv_heads;
  const u32 width = kv_heads * d;
  for (u32 e = threadIdx.x; e < width; e += blockDim.x) {
    const u32 kvh = e / d, x = e % d;
    float s = 0.f;
    for (u32 hg = 0; hg < g; ++hg) s += S::load(q[((u64)(kvh * g + hg) * nq + i) * d + x]);
    qs[e] = s;
  }
  __syncthreads();
  const u32 ncols = t - p;
  const u32 visible = ncols - nq + i + 1;
  const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31u, warps = blockDim.x >> 5;
  const u32 per_block = warps * A3_KEYS_PER_WARP;
  for (u32 jj = warp; jj < per_block; jj += warps) {
    const u32 j = blockIdx.x * per_block + jj;
    if (j >= ncols) break;  // warp-uniform
    float acc = 0.f;
    if (j < visible) {
      for (u32 e = lane; e < width; e += 32) {
        const u32 kvh = e / d, x = e % d;
        acc += qs[e] * S::load(k[((u64)kvh * t + p + j) * d + x]);
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) logits[(u64)i * ncols + j] = j < visible ? acc * scale : NEG_INF;
  }
}

extern "C" __global__ void a3_logits_f16(const u16* q, const u16* k, float* logits, u32 heads,
                                         u32 kv_heads, u32 nq, u32 t, u32 p, u32 d,
                                         float scale) {
  a3_logits_impl<F16>(q, k, logits, heads, kv_heads, nq, t, p, d, scale);
}
extern "C" __global__ void a3_logits_bf16(const u16* q, const u16* k, float* logits, u32 heads,
                                          u32 kv_heads, u32 nq, u32 t, u32 p, u32 d,
                                          float scale) {
  a3_logits_impl<BF16>(q, k, logits, heads, kv_heads, nq, t, p, d, scale);
}

// Softmax statistics of each question row over its visible keys. Grid (Q), 256 threads.
extern "C" __global__ void a3_row_stats(const float* __restrict__ logits,
                                        float* __restrict__ row_max,
                                        float* __restrict__ row_sum, u32 nq, u32 ncols) {
  __shared__ float red[32];
  const u32 i = blockIdx.x;
  const u32 visible = ncols - nq + i + 1;
  const float* row = logits + (u64)i * ncols;
  float m = NEG_INF;
  for (u32 j = threadIdx.x; j < visible; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_max(m, red);
  float s = 0.f;
  for (u32 j = threadIdx.x; j < visible; j += blockDim.x) s += expf(row[j] - m);
  s = block_sum(s, red);
  if (threadIdx.x == 0) {
    row_max[i] = m;
    row_sum[i] = s;
  }
}

// s[j] = sum_i softmax_i[j] over question rows, for document keys j < n_doc (every row sees
// them all). One thread per key, rows summed in order (as the CPU does).
extern "C" __global__ void a3_column_scores(const float* __restrict__ logits,
                                            const float* __restrict__ row_max,
                                            const float* __restrict__ row_sum,
                                            float* __restrict__ scores, u32 nq, u32 ncols) {
  const u32 n_doc = ncols - nq;
  const u32 j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n_doc) return;
  float s = 0.f;
  for (u32 i = 0; i < nq; ++i) s += expf(logits[(u64)i * ncols + j] - row_max[i]) / row_sum[i];
  scores[j] = s;
}

// Zero-padded centred moving average of width w (always divided by w): out[j] =
// sum(s[j - (w-1)/2 .. j + w - (w-1)/2) clipped to [0, n)) / w. One thread per element.
extern "C" __global__ void moving_average(const float* __restrict__ s, float* __restrict__ out,
                                          u32 n, u32 w) {
  const u32 j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n) return;
  if (w <= 1) {
    out[j] = s[j];
    return;
  }
  const u32 left = (w - 1) / 2;
  const u32 lo = j > left ? j - left : 0;
  const u32 hi = min(j + w - left, n);
  float acc = 0.f;
  for (u32 x = lo; x < hi; ++x) acc += s[x];
  out[j] = acc / (float)w;
}

// Total-order key of an f32 (as f32::total_cmp): larger key = larger float.
__device__ __forceinline__ u32 order_key(float f) {
  const u32 u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Block-wide exclusive prefix sum of one u32 per thread; *total gets the block's sum.
// `warp_sums` holds 32 u32 in shared memory.
__device__ u32 block_exclusive_scan(u32 v, u32* warp_sums, u32* total) {
  const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  u32 x = v;
  for (u32 o = 1; o < 32; o <<= 1) {
    const u32 y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    u32 w = lane < warps ? warp_sums[lane] : 0;
    for (u32 o = 1; o < 32; o <<= 1) {
      const u32 y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    warp_sums[lane] = w;
  }
  __syncthreads();
  const u32 before = warp == 0 ? 0 : warp_sums[warp - 1];
  *total = warp_sums[warps - 1];
  __syncthreads();
  return before + x - v;
}

// Indices of the k largest of scores[0..n), ties to the lower index, written ascending into
// out[0..k) (k <= n, checked by the host). One block (1024 threads): a 4-pass 8-bit radix
// select finds the k-th largest key and how many of its equals to take, then one ordered
// pass compacts the selected indices with block prefix sums. Exact: equal inputs give the
// same set as a3kv_fusion::selection::top_k.
extern "C" __global__ void topk_rows(const float* __restrict__ scores, u32 n, u32 k,
                                     u32* __restrict__ out) {
  __shared__ u32 hist[256];
  __shared__ u32 warp_sums[32];
  __shared__ u32 s_prefix, s_mask, s_remaining;
  if (k == 0) return;
  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_mask = 0;
    s_remaining = k;
  }
  __syncthreads();
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (u32 b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    const u32 prefix = s_prefix, mask = s_mask;
    for (u32 j = threadIdx.x; j < n; j += blockDim.x) {
      const u32 key = order_key(scores[j]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      const u32 remaining = s_remaining;
      u32 above = 0;
      int b = 255;
      for (; b > 0; --b) {
        if (above + hist[b] >= remaining) break;
        above += hist[b];
      }
      s_remaining = remaining - above;
      s_prefix = prefix | ((u32)b << shift);
      s_mask = mask | (255u << shift);
    }
    __syncthreads();
  }
  const u32 threshold = s_prefix;
  const u32 ties = s_remaining;  // how many keys equal to the threshold to take, lowest first
  u32 eq_before = 0, sel_before = 0;
  for (u32 base = 0; base < n; base += blockDim.x) {
    const u32 j = base + threadIdx.x;
    const u32 key = j < n ? order_key(scores[j]) : 0;
    const u32 eq = (j < n && key == threshold) ? 1u : 0u;
    u32 eq_total, sel_total;
    const u32 eq_rank = eq_before + block_exclusive_scan(eq, warp_sums, &eq_total);
    const u32 sel = (j < n && (key > threshold || (eq && eq_rank < ties))) ? 1u : 0u;
    const u32 at = sel_before + block_exclusive_scan(sel, warp_sums, &sel_total);
    if (sel) out[at] = j;
    eq_before += eq_total;
    sel_before += sel_total;
  }
}
