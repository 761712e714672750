// Training BatchNorm (batch statistics) + LeakyReLU over contiguous NCHW tensors, forward and
// backward, for LibTorch's CUDA tensors (kernels/src/batch_norm.rs compiles this with NVRTC at
// run time and launches it on LibTorch's current stream).
//
// Notation: x (N, C, L = H*W), M = N*L values per channel; per channel c the batch mean mu and
// biased variance var; a = gamma * invstd with invstd = 1/sqrt(var + eps);
//   z = a (x - mu) + beta,   y = z > 0 ? z : slope z   (slope 1: no activation).
// Backward, for dy: dz = z > 0 ? dy : slope dy (z recomputed from x, the same expression);
//   dbeta = sum dz, dgamma = invstd sum dz (x - mu),
//   dx = a dz - a dbeta / M - a invstd^2 (x - mu) sum dz (x - mu) / M
//      = a dz + k2 (x - mu) + k3,  k2 = -a invstd dgamma / M,  k3 = -a dbeta / M.
// The backward reads what the forward saved: x (FromX), or the output y (FromY, as InPlace-ABN,
// Rota Bulo et al. 2018): with slope > 0 LeakyReLU is invertible, z = y > 0 ? y : y / slope, and
// x - mu = (z - beta) / a. Saving y, which the next layer keeps anyway, frees x after the forward;
// the caller saves y only where a != 0 and beta is small against gamma (the recovered x - mu is
// then as precise as y's storage allows).
// Every pass reads whole (n, c) planes in chunks of CHUNK values, one block per chunk, so the
// grid is (chunks per plane, N*C); values are stored as f32 or f16 and computed in f32;
// per-block partial sums are combined per channel in f64. The statistics are sums of x minus a
// per-channel shift (the channel's first value), which keeps E[(x-k)^2] - E[x-k]^2 accurate when
// the mean is large against the spread.

#define CHUNK 8192
#define THREADS 256

// Sum of a value over the block (THREADS threads); the result is valid in thread 0.
template <typename V> __device__ __forceinline__ V block_sum(V v) {
  __shared__ V warp_sums[THREADS / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = 0;
  if (warp == 0) {
    if (lane < THREADS / 32) v = warp_sums[lane];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

// The chunk of this block: plane (n, c) = blockIdx.y, values [begin, end) of the plane.
struct Chunk {
  int n, c;
  long long plane, begin, end;
  __device__ Chunk(int C, long long L) {
    c = blockIdx.y % C;
    n = blockIdx.y / C;
    plane = (long long)blockIdx.y * L;
    begin = (long long)blockIdx.x * CHUNK;
    end = min(begin + CHUNK, L);
  }
};

// Calls f(index in the plane, value) for every value of the block's chunk, four at a time when
// V4 (L a multiple of 4 and the tensors' starts aligned, checked by the caller: every plane is
// aligned then).
template <class S, bool V4, class F>
__device__ __forceinline__ void each(const typename S::T *plane, const Chunk &k, F f) {
  if (V4) {
    for (long long i = k.begin / 4 + threadIdx.x; i < k.end / 4; i += THREADS) {
      float v[4];
      S::load4(plane, i, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) f(4 * i + j, v[j]);
    }
  } else {
    for (long long i = k.begin + threadIdx.x; i < k.end; i += THREADS) f(i, S::load(plane, i));
  }
}

// The block's two sums (valid in thread 0) to part[(c N + n) chunks + chunk], where the finish
// passes read them per channel.
__device__ __forceinline__ void write_partial(float s1, float s2, const Chunk &k, int C, float *part) {
  if (threadIdx.x == 0) {
    const long long slot = ((long long)k.c * (gridDim.y / C) + k.n) * gridDim.x + blockIdx.x;
    part[2 * slot] = s1;
    part[2 * slot + 1] = s2;
  }
}

// The sums of channel c's `count` partials (as write_partial wrote them), in f64 and in a fixed
// order; valid in thread 0. For the finish passes: one block per channel.
__device__ __forceinline__ void read_partials(const float *part, int c, int count, double &s1, double &s2) {
  s1 = 0.0;
  s2 = 0.0;
  for (int i = threadIdx.x; i < count; i += THREADS) {
    s1 += part[2 * ((long long)c * count + i)];
    s2 += part[2 * ((long long)c * count + i) + 1];
  }
  s1 = block_sum(s1);
  s2 = block_sum(s2);
}

// Forward statistics, pass 1: per block sum (x - k) and sum (x - k)^2 with k = x[0, c, 0];
// part[(c N + n) chunks + chunk] = (s1, s2); shift[c] = k.
template <class S, bool V4>
__device__ void stats(const typename S::T *x, int C, long long L, float *part, float *shift) {
  const Chunk k(C, L);
  const float s = S::load(x, (long long)k.c * L);
  float s1 = 0.f, s2 = 0.f;
  each<S, V4>(x + k.plane, k, [&](long long, float v) {
    const float d = v - s;
    s1 += d;
    s2 = fmaf(d, d, s2);
  });
  write_partial(block_sum(s1), block_sum(s2), k, C, part);
  if (threadIdx.x == 0 && k.n == 0 && blockIdx.x == 0) shift[k.c] = s;
}

// Forward statistics, pass 2: one block per channel. Writes mean, invstd, a = gamma invstd and
// the running statistics updated as PyTorch does (momentum; the unbiased variance).
extern "C" __global__ void bn_stats_finish(const float *part, const float *shift, int count, double m,
                                           const float *gamma, const float *running_mean,
                                           const float *running_var, double momentum, double eps,
                                           float *mean, float *invstd, float *scale,
                                           float *new_running_mean, float *new_running_var) {
  const int c = blockIdx.x;
  double s1, s2;
  read_partials(part, c, count, s1, s2);
  if (threadIdx.x == 0) {
    const double d = s1 / m;
    const double mu = shift[c] + d;
    const double var = fmax(s2 / m - d * d, 0.0);
    const double is = 1.0 / sqrt(var + eps);
    mean[c] = (float)mu;
    invstd[c] = (float)is;
    scale[c] = (float)(gamma[c] * is);
    const double unbiased = m > 1.0 ? var * m / (m - 1.0) : var;
    new_running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
    new_running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
  }
}

// z of the module comment; the forward and the backward use this one expression.
__device__ __forceinline__ float bn_z(float x, float mu, float a, float beta) { return fmaf(a, x - mu, beta); }

// Forward output y = LeakyReLU(z).
template <class S, bool V4>
__device__ void apply(const typename S::T *x, typename S::T *y, int C, long long L, const float *mean,
                      const float *scale, const float *beta, float slope) {
  const Chunk k(C, L);
  const float mu = mean[k.c], a = scale[k.c], b = beta[k.c];
  const typename S::T *xp = x + k.plane;
  typename S::T *yp = y + k.plane;
  if (V4) {
    for (long long i = k.begin / 4 + threadIdx.x; i < k.end / 4; i += THREADS) {
      float v[4];
      S::load4(xp, i, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float z = bn_z(v[j], mu, a, b);
        v[j] = z > 0.f ? z : z * slope;
      }
      S::store4(yp, i, v);
    }
  } else {
    for (long long i = k.begin + threadIdx.x; i < k.end; i += THREADS) {
      const float z = bn_z(S::load(xp, i), mu, a, b);
      S::store(yp, i, z > 0.f ? z : z * slope);
    }
  }
}

// What the backward reads of a saved value v of channel c: x - mu, and whether z > 0.
// From x: z recomputed as the forward did.
struct FromX {
  float mu, a, b;
  __device__ FromX(int c, const float *mean, const float *scale, const float *beta, float)
      : mu(mean[c]), a(scale[c]), b(beta[c]) {}
  __device__ __forceinline__ float centred(float v, bool &positive) const {
    positive = bn_z(v, mu, a, b) > 0.f;
    return v - mu;
  }
};

// From the output y (slope > 0, a != 0: the caller's conditions): y > 0 where z > 0, up to f16
// underflow of a z within 2^-25 of 0 (a kink value, whose derivative is undecided anyway).
struct FromY {
  float inv_a, b, inv_slope;
  __device__ FromY(int c, const float *, const float *scale, const float *beta, float slope)
      : inv_a(1.f / scale[c]), b(beta[c]), inv_slope(1.f / slope) {}
  __device__ __forceinline__ float centred(float v, bool &positive) const {
    positive = v > 0.f;
    return ((positive ? v : v * inv_slope) - b) * inv_a;
  }
};

// Backward, pass 1: per block sum dz and sum dz (x - mu), into part as in `stats`; `saved` is x
// or y as `Src` says.
template <class S, bool V4, class Src>
__device__ void grad_stats(const typename S::T *saved, const typename S::T *dy, int C, long long L,
                           const float *mean, const float *scale, const float *beta, float slope,
                           float *part) {
  const Chunk k(C, L);
  const Src src(k.c, mean, scale, beta, slope);
  const typename S::T *dyp = dy + k.plane;
  float s1 = 0.f, s2 = 0.f;
  each<S, V4>(saved + k.plane, k, [&](long long i, float v) {
    const float g = S::load(dyp, i);
    bool positive;
    const float xm = src.centred(v, positive);
    const float dz = positive ? g : g * slope;
    s1 += dz;
    s2 = fmaf(dz, xm, s2);
  });
  write_partial(block_sum(s1), block_sum(s2), k, C, part);
}

// Backward, pass 2: one block per channel: dgamma, dbeta and the coefficients k2, k3 of dx.
extern "C" __global__ void bn_grad_finish(const float *part, int count, double m, const float *invstd,
                                          const float *scale, float *dgamma, float *dbeta, float *k2,
                                          float *k3) {
  const int c = blockIdx.x;
  double s1, s2;
  read_partials(part, c, count, s1, s2);
  if (threadIdx.x == 0) {
    const double is = invstd[c], a = scale[c];
    const double dg = s2 * is;
    dgamma[c] = (float)dg;
    dbeta[c] = (float)s1;
    k2[c] = (float)(-a * is * dg / m);
    k3[c] = (float)(-a * s1 / m);
  }
}

// Backward, pass 3: dx = a dz + k2 (x - mu) + k3.
template <class S, bool V4, class Src>
__device__ void grad_apply(const typename S::T *saved, const typename S::T *dy, typename S::T *dx, int C,
                           long long L, const float *mean, const float *scale, const float *beta,
                           float slope, const float *k2, const float *k3) {
  const Chunk k(C, L);
  const Src src(k.c, mean, scale, beta, slope);
  const float a = scale[k.c], q2 = k2[k.c], q3 = k3[k.c];
  const typename S::T *sp = saved + k.plane, *dyp = dy + k.plane;
  typename S::T *dxp = dx + k.plane;
  auto grad = [&](float v, float g) {
    bool positive;
    const float xm = src.centred(v, positive);
    const float dz = positive ? g : g * slope;
    return fmaf(a, dz, fmaf(q2, xm, q3));
  };
  if (V4) {
    for (long long i = k.begin / 4 + threadIdx.x; i < k.end / 4; i += THREADS) {
      float v[4], g[4];
      S::load4(sp, i, v);
      S::load4(dyp, i, g);
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = grad(v[j], g[j]);
      S::store4(dxp, i, v);
    }
  } else {
    for (long long i = k.begin + threadIdx.x; i < k.end; i += THREADS) S::store(dxp, i, grad(S::load(sp, i), S::load(dyp, i)));
  }
}

// Entry points, named <pass>_<f32|f16>_<v4|v1>, the backward's with _x or _y for what it reads.
#define GRAD_ENTRY(S, NAME, V4, VN, SRC, SN)                                                              \
  extern "C" __global__ void __launch_bounds__(THREADS)                                               \
      bn_grad_stats_##NAME##_##VN##_##SN(const S::T *saved, const S::T *dy, int C, long long L,           \
                                         const float *mean, const float *scale, const float *beta,       \
                                         float slope, float *part) {                                     \
    grad_stats<S, V4, SRC>(saved, dy, C, L, mean, scale, beta, slope, part);                          \
  }                                                                                                    \
  extern "C" __global__ void __launch_bounds__(THREADS)                                               \
      bn_grad_apply_##NAME##_##VN##_##SN(const S::T *saved, const S::T *dy, S::T *dx, int C, long long L, \
                                         const float *mean, const float *scale, const float *beta,       \
                                         float slope, const float *k2, const float *k3) {                \
    grad_apply<S, V4, SRC>(saved, dy, dx, C, L, mean, scale, beta, slope, k2, k3);                    \
  }
#define ENTRY(S, NAME, V4, VN)                                                                            \
  extern "C" __global__ void __launch_bounds__(THREADS)                                               \
      bn_stats_##NAME##_##VN(const S::T *x, int C, long long L, float *part, float *shift) {             \
    stats<S, V4>(x, C, L, part, shift);                                                               \
  }                                                                                                    \
  extern "C" __global__ void __launch_bounds__(THREADS)                                               \
      bn_apply_##NAME##_##VN(const S::T *x, S::T *y, int C, long long L, const float *mean,               \
                             const float *scale, const float *beta, float slope) {                      \
    apply<S, V4>(x, y, C, L, mean, scale, beta, slope);                                               \
  }                                                                                                    \
  GRAD_ENTRY(S, NAME, V4, VN, FromX, x)                                                                \
  GRAD_ENTRY(S, NAME, V4, VN, FromY, y)

ENTRY(F32, f32, true, v4)
ENTRY(F32, f32, false, v1)
ENTRY(F16, f16, true, v4)
ENTRY(F16, f16, false, v1)
