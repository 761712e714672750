// Convolutions to one output channel (VSRNet's conv3: 32 -> 1 channel, 5x5), forward and both
// backward passes, for LibTorch's CUDA tensors (kernels/src/one_channel_conv.rs compiles this with
// NVRTC at run time and launches it on LibTorch's current stream).
//
// x (N, C, H, W), w (1, C, K, K) with K odd, stride 1, padding p = (K - 1) / 2 (same size):
//   y[n, y, x]     = sum_c sum_ij w[c, i, j] x[n, c, y + i - p, x + j - p]
//   dx[n, c, y, x] = sum_ij w[c, i, j] dy[n, y - i + p, x - j + p]
//   dw[c, i, j]    = sum_n sum_yx dy[n, y, x] x[n, c, y + i - p, x + j - p]
// (values outside the image are 0). cuDNN has no good kernel for one output channel: on an H200
// in fp16 its forward, input and weight gradients took 0.6, 1.6 and 1.5 ms at batch 3, 512x960,
// for 2.4 GFLOP each. Here the forward and the input gradient stage a (TY RPT + K - 1) x
// (TX + K - 1) image tile in shared memory (per input channel for the forward, once for the input
// gradient), the weights too (C K K <= 4096 values), and each thread computes RPT rows of one
// column, reading every tile value it needs once into registers. The weight gradient stages the
// output gradient of a TX x (TY ROWS) region once and the input CB channels at a time; each
// thread slides a K-wide window along one tile row. Arithmetic is f32 whatever the storage (f32
// or f16); the weight gradient sums per block in f32, then over blocks in f64 (no atomics: the
// same inputs give the same bits). K is a template parameter (3, 5, 7, 9) so that the windows
// live in registers.

#define TX 32
#define TY 8
#define RPT 4   // output rows per thread in the forward and the input gradient (tiles of TX x TY*RPT)
#define WMAX 4096
#define ROWS 8  // tiles of TX x TY per weight-gradient block

// tile[r * pitch + s] = plane[y0 - p + r, x0 - p + s] (0 outside the image) for r < rows,
// s < cols, by all TX x TY threads.
template <class S>
__device__ __forceinline__ void load_tile(float *tile, int pitch, const typename S::T *plane, int H, int W, int y0,
                                          int x0, int p, int rows, int cols) {
  for (int r = threadIdx.y; r < rows; r += TY) {
    const int yy = y0 - p + r;
    const bool row_in = yy >= 0 && yy < H;
    for (int s = threadIdx.x; s < cols; s += TX) {
      const int xx = x0 - p + s;
      tile[r * pitch + s] = (row_in && xx >= 0 && xx < W) ? S::load(plane, (long long)yy * W + xx) : 0.f;
    }
  }
}

template <class S>
__device__ __forceinline__ void load_weights(float *ws, const typename S::T *w, int n) {
  for (int i = threadIdx.y * TX + threadIdx.x; i < n; i += TX * TY) ws[i] = S::load(w, i);
}

// out[o] += sum_ij wk[i][j] tile[(r0 + o + i) * pitch + c0 + j] for the RPT rows o of a thread,
// each tile value read once.
template <int K>
__device__ __forceinline__ void rows_product(float (&out)[RPT], const float (&wk)[K][K], const float *tile, int pitch,
                                             int r0, int c0) {
#pragma unroll
  for (int rr = 0; rr < RPT + K - 1; ++rr) {
    float v[K];
#pragma unroll
    for (int j = 0; j < K; ++j) v[j] = tile[(r0 + rr) * pitch + c0 + j];
#pragma unroll
    for (int o = 0; o < RPT; ++o) {
      const int i = rr - o;
      if (i >= 0 && i < K) {
#pragma unroll
        for (int j = 0; j < K; ++j) out[o] = fmaf(wk[i][j], v[j], out[o]);
      }
    }
  }
}

// Grid (ceil(W / TX), ceil(H / (TY RPT)), N), block (TX, TY): RPT output rows per thread.
template <class S, int K>
__device__ void forward(const typename S::T *x, const typename S::T *w, typename S::T *y, int C, int H, int W) {
  constexpr int TH = TY * RPT + K - 1, TW = TX + K - 1;
  __shared__ float ws[WMAX];
  __shared__ float tile[TH * TW];
  load_weights<S>(ws, w, C * K * K);
  const int n = blockIdx.z, y0 = blockIdx.y * TY * RPT, x0 = blockIdx.x * TX, r0 = threadIdx.y * RPT;
  float acc[RPT];
#pragma unroll
  for (int o = 0; o < RPT; ++o) acc[o] = 0.f;
  for (int c = 0; c < C; ++c) {
    __syncthreads();
    load_tile<S>(tile, TW, x + ((long long)n * C + c) * H * W, H, W, y0, x0, K / 2, TH, TW);
    __syncthreads();
    float wk[K][K];
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int j = 0; j < K; ++j) wk[i][j] = ws[(c * K + i) * K + j];
    rows_product<K>(acc, wk, tile, TW, r0, threadIdx.x);
  }
  const int xx = x0 + threadIdx.x;
#pragma unroll
  for (int o = 0; o < RPT; ++o) {
    const int yy = y0 + r0 + o;
    if (yy < H && xx < W) S::store(y, ((long long)n * H + yy) * W + xx, acc[o]);
  }
}

// Grid and block as `forward`: all C input-gradient values of RPT pixels per thread. The
// input gradient is the correlation of dy with the kernel turned by 180 degrees.
template <class S, int K>
__device__ void grad_input(const typename S::T *dy, const typename S::T *w, typename S::T *dx, int C, int H, int W) {
  constexpr int TH = TY * RPT + K - 1, TW = TX + K - 1;
  __shared__ float ws[WMAX];
  __shared__ float tile[TH * TW];
  load_weights<S>(ws, w, C * K * K);
  const int n = blockIdx.z, y0 = blockIdx.y * TY * RPT, x0 = blockIdx.x * TX, r0 = threadIdx.y * RPT;
  load_tile<S>(tile, TW, dy + (long long)n * H * W, H, W, y0, x0, K / 2, TH, TW);
  __syncthreads();
  const int xx = x0 + threadIdx.x;
  for (int c = 0; c < C; ++c) {
    float wk[K][K];
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int j = 0; j < K; ++j) wk[i][j] = ws[(c * K + (K - 1 - i)) * K + (K - 1 - j)];
    float acc[RPT];
#pragma unroll
    for (int o = 0; o < RPT; ++o) acc[o] = 0.f;
    rows_product<K>(acc, wk, tile, TW, r0, threadIdx.x);
#pragma unroll
    for (int o = 0; o < RPT; ++o) {
      const int yy = y0 + r0 + o;
      if (yy < H && xx < W) S::store(dx, (((long long)n * C + c) * H + yy) * W + xx, acc[o]);
    }
  }
}

// Grid (ceil(W / TX), ceil(H / (TY ROWS)), N), block (TX, TY): the weight gradient of a region of
// ROWS tiles (TX x TY), written to part[block * C K K + c K K + i K + j]. The region's dy is
// staged once; the channels go CB at a time, and thread (cb, i, row) of a group sweeps tile row
// `row` of channel cb with a sliding window, accumulating dw[c, i, 0..K).
template <class S, int K>
__device__ void grad_weight(const typename S::T *x, const typename S::T *dy, float *part, int C, int H, int W) {
  constexpr int CB = (TX * TY) / (K * TY), TH = TY + K - 1, TW = TX + K - 1;
  __shared__ float g[TY * ROWS][TX + 1];  // (+1: the TY rows of a warp in distinct banks)
  __shared__ float tile[CB * TH * TW];
  __shared__ float red[CB * K * TY][K];
  const int tid = threadIdx.y * TX + threadIdx.x, n = blockIdx.z, x0 = blockIdx.x * TX;
  const int ry0 = blockIdx.y * TY * ROWS;
  for (int q = tid; q < TY * ROWS * TX; q += TX * TY) {
    const int r = q / TX, s = q % TX, yy = ry0 + r, xx = x0 + s;
    g[r][s] = (yy < H && xx < W) ? S::load(dy, ((long long)n * H + yy) * W + xx) : 0.f;
  }
  const int row = tid % TY, i = (tid / TY) % K, cb = tid / (TY * K);
  const bool active = cb < CB;
  const long long block = ((long long)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  for (int c0 = 0; c0 < C; c0 += CB) {
    float acc[K];
#pragma unroll
    for (int j = 0; j < K; ++j) acc[j] = 0.f;
    for (int t = 0; t < ROWS; ++t) {
      const int y0 = ry0 + t * TY;
      if (y0 >= H) break;
      __syncthreads();
      for (int u = 0; u < CB && c0 + u < C; ++u)
        load_tile<S>(tile + u * TH * TW, TW, x + ((long long)n * C + c0 + u) * H * W, H, W, y0, x0, K / 2, TH, TW);
      __syncthreads();
      if (active && c0 + cb < C) {
        const float *tr = tile + cb * TH * TW + (row + i) * TW;
        const float *gr = g[t * TY + row];
        float v[K];
#pragma unroll
        for (int j = 0; j < K - 1; ++j) v[j] = tr[j];
        for (int s = 0; s < TX; ++s) {
          v[K - 1] = tr[s + K - 1];
          const float gv = gr[s];
#pragma unroll
          for (int j = 0; j < K; ++j) acc[j] = fmaf(gv, v[j], acc[j]);
#pragma unroll
          for (int j = 0; j < K - 1; ++j) v[j] = v[j + 1];
        }
      }
    }
    __syncthreads();
    if (active) {
#pragma unroll
      for (int j = 0; j < K; ++j) red[tid][j] = acc[j];
    }
    __syncthreads();
    // One thread per (cb, i, j): the sum over the TY rows.
    for (int q = tid; q < CB * K * K; q += TX * TY) {
      const int qc = q / (K * K), qi = (q / K) % K, qj = q % K;
      if (c0 + qc >= C) continue;
      float s = 0.f;
      for (int r = 0; r < TY; ++r) s += red[(qc * K + qi) * TY + r][qj];
      part[block * C * K * K + (long long)(c0 + qc) * K * K + qi * K + qj] = s;
    }
  }
}

// dw[q] = sum over the blocks of part[block * count + q], in f64; one thread per q.
extern "C" __global__ void ocv_grad_weight_finish(const float *part, int blocks, int count, float *dw) {
  const int q = blockIdx.x * blockDim.x + threadIdx.x;
  if (q >= count) return;
  double s = 0.0;
  for (int b = 0; b < blocks; ++b) s += part[(long long)b * count + q];
  dw[q] = (float)s;
}

#define ENTRY(S, NAME, K)                                                                                 \
  extern "C" __global__ void __launch_bounds__(TX * TY)                                                 \
      ocv_forward_##NAME##_k##K(const S::T *x, const S::T *w, S::T *y, int C, int H, int W) {              \
    forward<S, K>(x, w, y, C, H, W);                                                                    \
  }                                                                                                      \
  extern "C" __global__ void __launch_bounds__(TX * TY)                                                 \
      ocv_grad_input_##NAME##_k##K(const S::T *dy, const S::T *w, S::T *dx, int C, int H, int W) {         \
    grad_input<S, K>(dy, w, dx, C, H, W);                                                               \
  }                                                                                                      \
  extern "C" __global__ void __launch_bounds__(TX * TY)                                                 \
      ocv_grad_weight_##NAME##_k##K(const S::T *x, const S::T *dy, float *part, int C, int H, int W) {     \
    grad_weight<S, K>(x, dy, part, C, H, W);                                                            \
  }

ENTRY(F32, f32, 3)
ENTRY(F32, f32, 5)
ENTRY(F32, f32, 7)
ENTRY(F32, f32, 9)
ENTRY(F16, f16, 3)
ENTRY(F16, f16, 5)
ENTRY(F16, f16, 7)
ENTRY(F16, f16, 9)
