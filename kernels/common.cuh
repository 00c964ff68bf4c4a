// Storage types, conversions and reductions, prepended by the host to every kernel file before NVRTC
// compiles it (NVRTC is given one source string; no include paths, no CUDA headers needed).
//
// Tensors are stored as 16-bit patterns in `unsigned short`: IEEE f16 or bf16. All math is
// f32. The conversions round to nearest even, as the `half` crate does on the host, so a
// value stored by a kernel equals the host's `half::f16::from_f32` / `half::bf16::from_f32`
// of the same f32.
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ float f16_to_f32(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ u16 f32_to_f16(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 f32_to_bf16(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);  // quiet NaN
  u32 rounding = 0x7fffu + ((u >> 16) & 1u);                             // to nearest even
  return (u16)((u + rounding) >> 16);
}

// The two storage types as template parameters: `S::load` widens, `S::store` rounds.
struct F16 {
  static __device__ __forceinline__ float load(u16 x) { return f16_to_f32(x); }
  static __device__ __forceinline__ u16 store(float f) { return f32_to_f16(f); }
};
struct BF16 {
  static __device__ __forceinline__ float load(u16 x) { return bf16_to_f32(x); }
  static __device__ __forceinline__ u16 store(float f) { return f32_to_bf16(f); }
};

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

#define NEG_INF __int_as_float(0xff800000)

// Block-wide max and sum (blockDim.x a multiple of 32, at most 1024); `red` holds 32 floats.
// Every thread gets the result.
__device__ __forceinline__ float block_max(float x, float* red) {
  const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  x = warp_max(x);
  if (lane == 0) red[warp] = x;
  __syncthreads();
  float r = NEG_INF;
  for (u32 w = 0; w < (blockDim.x >> 5); ++w) r = fmaxf(r, red[w]);
  __syncthreads();
  return r;
}
__device__ __forceinline__ float block_sum(float x, float* red) {
  const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  x = warp_sum(x);
  if (lane == 0) red[warp] = x;
  __syncthreads();
  float r = 0.f;
  for (u32 w = 0; w < (blockDim.x >> 5); ++w) r += red[w];
  __syncthreads();
  return r;
}
