// Masked attention of scattered query rows over the fused cache (DESIGN.md §1.2 step 4):
// flash-style, one pass over the keys with an online softmax, f32 accumulation.
// CPU twin: a3kv_cuda::reference::attention (tested against
// a3kv_model::attention::causal_attention).
//
// q [H, n, d] (rows at positions q_pos[n], any order), k, v [H_kv, m, d] with non-decreasing
// positions k_pos[m]; out [n, H * d] (the layout the output projection takes). Row i of head
// h attends to the keys of KV head h / g whose position is <= q_pos[i] — a prefix of the
// keys, found by binary search. scale = 1 / sqrt(d). Every row must see at least one key
// (the host checks q_pos >= k_pos[0]); d is a multiple of 32, at most 128.
//
// Launch (layout::attention_launch): grid (ceil(n * g / 4), H_kv), 4 warps; warp w of block
// b takes (row, head) pair b * 4 + w, pairs ordered row-major over (row, head in group), so
// a block's warps share one KV head and its K/V tiles. Per tile of 32 keys the block stages
// K and V in shared memory as f32 (rows padded to d + 1 floats: no bank conflicts); lane j
// scores key j of the tile, the warp updates its running max / sum, and each lane
// accumulates d / 32 output dims. Dynamic shared memory: (2 * 32 * (d + 1) + 4 * d) floats.
#define ATT_WARPS 4
#define ATT_TILE 32

template <typename S>
__device__ void attention_impl(const u16* __restrict__ q, const u32* __restrict__ q_pos,
                               const u16* __restrict__ k, const u16* __restrict__ v,
                               const u32* __restrict__ k_pos, u16* __restrict__ out,
                               u32 heads, u32 kv_heads, u32 n, u32 m, u32 d, float scale) {
  extern __shared__ float smem[];
  __shared__ u32 s_vis[ATT_WARPS];
  const u32 dp = d + 1;
  float* ks = smem;
  float* vs = ks + ATT_TILE * dp;
  float* qs = vs + ATT_TILE * dp;
  const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31u;
  const u32 g = heads / kv_heads;
  const u32 kvh = blockIdx.y;
  const u64 pair = (u64)blockIdx.x * ATT_WARPS + warp;
  const bool active = pair < (u64)n * g;
  const u32 row = active ? (u32)(pair / g) : 0;
  const u32 h = kvh * g + (active ? (u32)(pair % g) : 0);
  u32 vis = 0;
  if (active) {
    const u32 qp = q_pos[row];
    u32 lo = 0, hi = m;
    while (lo < hi) {
      const u32 mid = (lo + hi) / 2;
      if (k_pos[mid] <= qp) lo = mid + 1; else hi = mid;
    }
    vis = lo;
    for (u32 x = lane; x < d; x += 32) qs[warp * d + x] = S::load(q[((u64)h * n + row) * d + x]);
  }
  if (lane == 0) s_vis[warp] = vis;
  __syncthreads();
  u32 block_vis = 0;
  for (u32 w = 0; w < ATT_WARPS; ++w) block_vis = max(block_vis, s_vis[w]);
  const u32 dt = d / 32;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  float mx = NEG_INF, l = 0.f;
  for (u32 t0 = 0; t0 < block_vis; t0 += ATT_TILE) {
    __syncthreads();  // the previous tile is consumed
    for (u32 e = threadIdx.x; e < ATT_TILE * d; e += blockDim.x) {
      const u32 j = e / d, x = e % d;
      const u32 key = t0 + j;
      float kv = 0.f, vv = 0.f;
      if (key < m) {
        const u64 off = ((u64)kvh * m + key) * d + x;
        kv = S::load(k[off]);
        vv = S::load(v[off]);
      }
      ks[j * dp + x] = kv;
      vs[j * dp + x] = vv;
    }
    __syncthreads();
    if (t0 < vis) {  // warp-uniform; the tile holds at least one visible key
      const u32 key = t0 + lane;
      float s = NEG_INF;
      if (key < vis) {
        float dot = 0.f;
        for (u32 x = 0; x < d; ++x) dot += qs[warp * d + x] * ks[lane * dp + x];
        s = dot * scale;
      }
      const float m_new = fmaxf(mx, warp_max(s));
      const float p = key < vis ? expf(s - m_new) : 0.f;
      const float corr = expf(mx - m_new);  // 0 on the first tile (mx = -inf, m_new finite)
      l = l * corr + warp_sum(p);
#pragma unroll
      for (u32 t = 0; t < 4; ++t) acc[t] *= corr;
      for (u32 jj = 0; jj < ATT_TILE; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
        for (u32 t = 0; t < 4; ++t)
          if (t < dt) acc[t] += pj * vs[jj * dp + lane + 32 * t];
      }
      mx = m_new;
    }
  }
  if (active) {
    const float inv = 1.f / l;
#pragma unroll
    for (u32 t = 0; t < 4; ++t)
      if (t < dt) out[((u64)row * heads + h) * d + lane + 32 * t] = S::store(acc[t] * inv);
  }
}

extern "C" __global__ void attention_f16(const u16* q, const u32* q_pos, const u16* k,
                                         const u16* v, const u32* k_pos, u16* out, u32 heads,
                                         u32 kv_heads, u32 n, u32 m, u32 d, float scale) {
  attention_impl<F16>(q, q_pos, k, v, k_pos, out, heads, kv_heads, n, m, d, scale);
}
extern "C" __global__ void attention_bf16(const u16* q, const u32* q_pos, const u16* k,
                                          const u16* v, const u32* k_pos, u16* out, u32 heads,
                                          u32 kv_heads, u32 n, u32 m, u32 d, float scale) {
  attention_impl<BF16>(q, q_pos, k, v, k_pos, out, heads, kv_heads, n, m, d, scale);
}
