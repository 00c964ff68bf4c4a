// RoPE re-positioning of cached pre-RoPE keys (DESIGN.md §1.2 step 1).
// CPU twin: a3kv_cuda::reference::rope (tested against a3kv_model::Rope::apply).
//
// x, y: [rows, d] with rows = heads * n (a [heads, n, d] tensor); row r sits at global
// position pos[r % n]. Pair (a, b) of row r, frequency index i < d/2, rotates by
// angle = (float)pos * inv_freq[i]:  y[a] = x[a] cos - x[b] sin;  y[b] = x[a] sin + x[b] cos,
// with (a, b) = (2i, 2i+1) when `interleaved` (GGUF Llama layout, candle `rope_i`), else
// (i, i + d/2) (candle `rope`). inv_freq[i] = 1 / theta^(2i/d) is computed by the host in
// f64 and rounded to f32, exactly as a3kv_model::Rope builds its tables. y may equal x.
// Launch: 1-D grid-stride over heads * n * d/2 pairs (layout::rope_launch).
template <typename S>
__device__ void rope_impl(const u16* x, u16* y, const u32* __restrict__ pos,
                          const float* __restrict__ inv_freq, u32 heads, u32 n, u32 d,
                          u32 interleaved) {
  const u32 half = d / 2;
  const u64 total = (u64)heads * n * half;
  for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (u64)gridDim.x * blockDim.x) {
    const u32 i = (u32)(t % half);
    const u64 row = t / half;
    const float angle = (float)pos[row % n] * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    const u64 base = row * d;
    const u64 a = interleaved ? base + 2 * i : base + i;
    const u64 b = interleaved ? a + 1 : base + i + half;
    const float xa = S::load(x[a]);
    const float xb = S::load(x[b]);
    y[a] = S::store(xa * c - xb * s);
    y[b] = S::store(xa * s + xb * c);
  }
}

extern "C" __global__ void rope_f16(const u16* x, u16* y, const u32* pos, const float* inv_freq,
                                    u32 heads, u32 n, u32 d, u32 interleaved) {
  rope_impl<F16>(x, y, pos, inv_freq, heads, n, d, interleaved);
}
extern "C" __global__ void rope_bf16(const u16* x, u16* y, const u32* pos, const float* inv_freq,
                                     u32 heads, u32 n, u32 d, u32 interleaved) {
  rope_impl<BF16>(x, y, pos, inv_freq, heads, n, d, interleaved);
}
