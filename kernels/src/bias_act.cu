// y = LeakyReLU(x + bias[c]) in one pass over LibTorch's CUDA tensors (kernels/src/bias_act.rs
// compiles this with NVRTC at run time and launches it on LibTorch's current stream): FlowNetSD's
// 25 convolutions and deconvolutions each add a per-channel bias and apply LeakyReLU(0.1), which
// LibTorch runs as two passes (its convolution's bias add, then PReLU), two reads and two writes
// of every activation. x and y share one dense layout, walked in memory order: NCHW (channel =
// (i / HW) mod C) or channels-last (channel = i mod C). The bias is stored as x is; f32 arithmetic
// whatever the storage.

// n values; hw = H W (NCHW) or 0 (channels-last). With V4, n is a multiple of 4.
template <class S, bool V4>
__device__ void bias_act(const typename S::T *x, const typename S::T *bias, typename S::T *y, long long n, long long hw, int C,
                         float slope) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  auto f = [&](long long i, float v) {
    const int c = hw ? (int)((i / hw) % C) : (int)(i % C);
    const float z = v + S::load(bias, c);
    return z > 0.f ? z : z * slope;
  };
  if (V4) {
    for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < n / 4; q += stride) {
      float v[4];
      S::load4(x, q, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = f(4 * q + j, v[j]);
      S::store4(y, q, v);
    }
  } else {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) S::store(y, i, f(i, S::load(x, i)));
  }
}

#define ENTRY(S, NAME, V4, VN)                                                                            \
  extern "C" __global__ void ba_##NAME##_##VN(const S::T *x, const S::T *bias, S::T *y, long long n, long long hw, \
                                            int C, float slope) {                                       \
    bias_act<S, V4>(x, bias, y, n, hw, C, slope);                                                       \
  }

// Channels-last, into a channel slice: y[(i / C) * Cy + off + i % C] = LeakyReLU(x[i] + bias[i % C])
// for the n values of x (C channels), y having Cy channels: a concatenation's part (the CUDA
// backend's channels-last FlowNetSD, kernels/src/cube/net.rs), or in place (y = x, Cy = C, off = 0:
// each value read and written by one thread). bias null: none; slope 1: no activation. With V4, C,
// Cy and off are multiples of 4: four values of one pixel at a time. (In place on FlowNetSD's
// conv0 output, 6 x 512 x 960 x 64 halves, it runs at 2.7 TB/s: memory-bound; H100.)
template <class S, bool V4>
__device__ void bias_act_slice(const typename S::T *x, const typename S::T *bias, typename S::T *y, long long n, int C, int Cy,
                               int off, float slope) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  auto f = [&](int c, float v) {
    const float z = bias ? v + S::load(bias, c) : v;
    return z > 0.f ? z : z * slope;
  };
  auto dst = [&](long long i) { return (i / C) * Cy + off + i % C; };
  if (V4) {
    for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < n / 4; q += stride) {
      float v[4];
      S::load4(x, q, v);
      const int c = (int)((4 * q) % C);
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = f(c + j, v[j]);
      S::store4(y, dst(4 * q) / 4, v);
    }
  } else {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
      S::store(y, dst(i), f((int)(i % C), S::load(x, i)));
  }
}

#define SLICE_ENTRY(S, NAME, V4, VN)                                                                              \
  extern "C" __global__ void bas_##NAME##_##VN(const S::T *x, const S::T *bias, S::T *y, long long n, int C, int Cy, \
                                             int off, float slope) {                                            \
    bias_act_slice<S, V4>(x, bias, y, n, C, Cy, off, slope);                                                    \
  }

SLICE_ENTRY(F32, f32, true, v4)
SLICE_ENTRY(F32, f32, false, v1)
SLICE_ENTRY(F16, f16, true, v4)
SLICE_ENTRY(F16, f16, false, v1)

ENTRY(F32, f32, true, v4)
ENTRY(F32, f32, false, v1)
ENTRY(F16, f16, true, v4)
ENTRY(F16, f16, false, v1)
