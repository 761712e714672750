// A 3x3 convolution from a few input channels to 64, plus bias, then LeakyReLU, in one kernel on
// the tensor cores (FlowNetSD's conv0: 6 -> 64 channels at full resolution), inference only, for
// LibTorch's CUDA f16 tensors (kernels/src/few_input_channel_conv.rs compiles this with NVRTC at
// run time and launches it on LibTorch's current stream).
//
// x (N, CI, H, W) and w (64, CI, 3, 3) with any strides, CI <= 8; bias (64); all f16; stride 1,
// padding 1:
//   y[n, c, y, x] = leaky(bias[c] + sum_{k, i, j} w[c, k, i, j] x[n, k, y + i - 1, x + j - 1])
// (values outside the image are 0), written channels-last: y + ((n H + y) W + x) 64 + c.
//
// A matrix product on the tensor cores (mma.sync m16n8k16, f16 operands, f32 accumulation):
// M = pixels (16 consecutive pixels of a row per m-tile), N = the 64 output channels (8 n-tiles),
// the reduction runs over the 9 taps x 8 channels (the input channels padded with zeros to 8),
// two taps per k-step, a zero tenth tap to make 5 k-steps (zero weights and zero image operands:
// no inf * 0 from an infinite input). The block's input tile sits in shared
// memory as 8 halves (16 bytes) per pixel, so that the image operand of a lane, two adjacent
// channels of one pixel and tap, is one aligned 32-bit shared load and a warp's 32 loads hit 32
// different banks. Each warp keeps the weights' operand registers (5 k-steps x 8 n-tiles x 2) for
// all its m-tiles. The results (plus bias, activated, f16) go through a per-warp staging buffer
// so that each pixel's 128 bytes are written by consecutive lanes as 16-byte stores.

#define FI_CO 64          // output channels
#define FI_CI 8           // input channels, padded
#define FI_TC 64          // pixels per tile row (4 m-tiles)
#define FI_TR 8           // tile rows
#define FI_WARPS 8
#define FI_THREADS (FI_WARPS * 32)
#define FI_KS 5           // k-steps: taps (9, padded to 10) / 2
#define FI_PITCH (FI_TC + 2)

// Grid (ceil(W / FI_TC), ceil(H / FI_TR), N), block FI_THREADS. Strides of x (sn ..) and w (wo ..) in
// elements.
extern "C" __global__ void __launch_bounds__(FI_THREADS) ficv_forward_bias_leaky_f16_k3(
    const half_t *x, const half_t *w, const half_t *bias, half_t *y, int CI, int H, int W,
    long long sn, long long sc, long long sh, long long sw, long long wo, long long wi, long long wh, long long ww,
    float slope) {
  // tile[(r * FI_PITCH + s) * 4 + e]: channels 2e, 2e + 1 of the pixel at row y0 - 1 + r, column
  // x0 - 1 + s (0 outside the image and for channels >= CI)
  __shared__ alignas(16) unsigned tile[(FI_TR + 2) * FI_PITCH * 4];
  // weights[(c * 10 + tap) * 4 + e]: channels 2e, 2e + 1 of output channel c at tap (0 for tap 9)
  __shared__ unsigned weights[FI_CO * 10 * 4];
  // per warp: 16 pixels x 64 channels of f16 (32 words per pixel)
  __shared__ alignas(16) unsigned stage[FI_WARPS * 16 * 32];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n = blockIdx.z, x0 = blockIdx.x * FI_TC, y0 = blockIdx.y * FI_TR;

  for (int i = tid; i < FI_CO * 10 * 4; i += FI_THREADS) {
    const int e = i & 3, tap = (i >> 2) % 10, c = i / 40;
    unsigned v = 0;
    if (tap < 9) {
      const int k0 = 2 * e, k1 = 2 * e + 1;
      const half_t *wt = w + c * wo + (tap / 3) * wh + (tap % 3) * ww;
      const unsigned lo = k0 < CI ? (unsigned)wt[k0 * wi] : 0u;
      const unsigned hi = k1 < CI ? (unsigned)wt[k1 * wi] : 0u;
      v = lo | (hi << 16);
    }
    weights[i] = v;
  }
  const half_t *img = x + (long long)n * sn;
  for (int i = tid; i < (FI_TR + 2) * FI_PITCH; i += FI_THREADS) {
    const int r = i / FI_PITCH, s = i - r * FI_PITCH;
    const int yy = y0 - 1 + r, xx = x0 - 1 + s;
    unsigned v[4] = {0u, 0u, 0u, 0u};
    if (yy >= 0 && yy < H && xx >= 0 && xx < W) {
      const half_t *p = img + yy * sh + xx * sw;
      for (int k = 0; k < CI; ++k) v[k >> 1] |= (unsigned)p[k * sc] << (16 * (k & 1));
    }
    *reinterpret_cast<uint4 *>(tile + i * 4) = make_uint4(v[0], v[1], v[2], v[3]);
  }
  __syncthreads();

  // The weights' operand: b[s][nt][0] holds taps 2s (channels 2t, 2t + 1) of output channel
  // 8 nt + g, b[s][nt][1] tap 2s + 1.
  unsigned b[FI_KS][8][2];
#pragma unroll
  for (int s = 0; s < FI_KS; ++s)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const unsigned *wc = weights + (8 * nt + g) * 40 + t;
      b[s][nt][0] = wc[(2 * s) * 4];
      b[s][nt][1] = wc[(2 * s + 1) * 4];
    }
  float bv[8][2];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    bv[nt][0] = h2f(bias[8 * nt + 2 * t]);
    bv[nt][1] = h2f(bias[8 * nt + 2 * t + 1]);
  }
  unsigned *st = stage + warp * 16 * 32;

  // Warp `warp` takes tile row `warp`: its 4 m-tiles of 16 pixels.
  const int yy = y0 + warp;
  if (yy >= H) return;
#pragma unroll 1
  for (int mt = 0; mt < FI_TC / 16; ++mt) {
    const int px = 16 * mt;  // first pixel of the m-tile, in the tile
    if (x0 + px >= W) break;
    float acc[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
    for (int s = 0; s < FI_KS; ++s) {
      // taps 2s and 2s + 1 (tap 9: zero weights and zero operands, so that an infinite input
      // at tap 8 cannot give inf * 0 = NaN where cuDNN gives inf)
      const int t0 = 2 * s, t1 = 2 * s + 1;
      const int o0 = ((warp + t0 / 3) * FI_PITCH + px + t0 % 3) * 4 + t;
      unsigned a[4] = {tile[o0 + 4 * g], tile[o0 + 4 * (g + 8)], 0u, 0u};
      if (t1 < 9) {
        const int o1 = ((warp + t1 / 3) * FI_PITCH + px + t1 % 3) * 4 + t;
        a[2] = tile[o1 + 4 * g];
        a[3] = tile[o1 + 4 * (g + 8)];
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma16816(acc[nt], a[0], a[1], a[2], a[3], b[s][nt][0], b[s][nt][1]);
    }
    // acc[nt]: (pixel g, channels 8 nt + 2t, + 1) and (pixel g + 8, the same channels).
    __syncwarp();
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      float v[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float z = acc[nt][e] + bv[nt][e & 1];
        v[e] = z > 0.f ? z : z * slope;
      }
      // word of pixel q, channel pair cp = 4 nt + t: q * 32 + (cp ^ 4 (q % 8)) spreads the eight
      // pixels g of one store over the banks
      const int cp = 4 * nt + t;
      st[g * 32 + (cp ^ (4 * (g & 7)))] = pack2(v[0], v[1]);
      st[(g + 8) * 32 + (cp ^ (4 * (g & 7)))] = pack2(v[2], v[3]);
    }
    __syncwarp();
    // 16 pixels x 128 bytes: lane l writes 16 bytes (4 channel pairs, chunk l % 8) of pixels
    // l / 8 + 4 i.
    const int chunk = lane & 7;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int q = (lane >> 3) + 4 * i, xx = x0 + px + q;
      if (xx >= W) continue;
      // the chunk's 4 words are contiguous after the swizzle (the xor moves groups of 4)
      const uint4 v = *reinterpret_cast<const uint4 *>(st + q * 32 + ((4 * chunk) ^ (4 * (q & 7))));
      half_t *o = y + (((long long)n * H + yy) * W + xx) * FI_CO + 8 * chunk;
      asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(o), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                   : "memory");
    }
  }
}
