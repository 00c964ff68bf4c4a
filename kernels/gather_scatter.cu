// Gather and scatter of selected rows of a [heads, rows, d] KV tensor (DESIGN.md §1.2 step 4:
// the recomputed k/v of rows I are scattered over the cached rows; the selected rows' cached
// values are gathered, e.g. for CacheBlend's deviation). Pure 16-bit copies: dtype-agnostic.
// CPU twins: a3kv_cuda::reference::{gather_rows, scatter_rows}.
//
// gather_rows: dst[h, i, :] = src[h, idx[i], :]   src [heads, m, d], dst [heads, n, d]
// scatter_rows: dst[h, idx[i], :] = src[h, i, :]  src [heads, n, d], dst [heads, m, d]
// idx: n row indices < m (the host checks; scatter indices are distinct, so no races).
// Launch: 1-D grid-stride over heads * n * d elements (layout::rows_launch).
extern "C" __global__ void gather_rows(const u16* __restrict__ src, u16* __restrict__ dst,
                                       const u32* __restrict__ idx, u32 heads, u32 m, u32 n,
                                       u32 d) {
  const u64 total = (u64)heads * n * d;
  for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (u64)gridDim.x * blockDim.x) {
    const u32 x = (u32)(t % d);
    const u64 hi = t / d;
    const u32 i = (u32)(hi % n);
    const u64 h = hi / n;
    dst[t] = src[(h * m + idx[i]) * d + x];
  }
}

extern "C" __global__ void scatter_rows(const u16* __restrict__ src, u16* __restrict__ dst,
                                        const u32* __restrict__ idx, u32 heads, u32 n, u32 m,
                                        u32 d) {
  const u64 total = (u64)heads * n * d;
  for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (u64)gridDim.x * blockDim.x) {
    const u32 x = (u32)(t % d);
    const u64 hi = t / d;
    const u32 i = (u32)(hi % n);
    const u64 h = hi / n;
    dst[(h * m + idx[i]) * d + x] = src[t];
  }
}
