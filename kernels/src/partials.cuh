// The finish of vsr's deterministic weight gradients (prepended after storage.cuh to the .cu files
// that use it): their kernels write per-block (or per-warp) f32 partial sums, this adds them.

// dw[q] = sum over the `sets` partial sums part[set * count + q] in f64, in a fixed order, stored
// through `S` (storage.cuh: F16 or F32). Block (32, 8), grid ceil(count / 32): thread (q, j) adds
// the sets j, j + 8, ..; then the 8 sums are added in order.
template <typename S>
__device__ __forceinline__ void sum_partials(const float *part, int sets, int count, typename S::T *dw) {
  __shared__ double s[8][32];
  const int q = blockIdx.x * 32 + threadIdx.x, j = threadIdx.y;
  double v = 0.0;
  if (q < count)
    for (int b = j; b < sets; b += 8) v += part[(long long)b * count + q];
  s[j][threadIdx.x] = v;
  __syncthreads();
  if (j == 0 && q < count) {
    double sum = 0.0;
    for (int i = 0; i < 8; ++i) sum += s[i][threadIdx.x];
    S::store(dw, q, (float)sum);
  }
}

__device__ __forceinline__ void sum_partials_f16(const float *part, int sets, int count, half_t *dw) {
  sum_partials<F16>(part, sets, count, dw);
}
