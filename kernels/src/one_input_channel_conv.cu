// Convolutions from one input channel (VSRNet's conv1: 1 -> 64 channels, 9x9) on tensor cores,
// forward and weight gradient, for LibTorch's CUDA f16 tensors and, on TF32 tensor cores, its f32
// ones (kernels/src/one_input_channel_conv.rs compiles this with NVRTC at run time and launches it
// on LibTorch's current stream). The f16 kernels are described here; the f32 ones (forward_f32,
// grad_weight_f32) follow the same plan with one value per operand register (see there).
//
// x (N, 1, H, W), w (C, 1, K, K) with K odd, stride 1, padding p = (K - 1) / 2 (same size):
//   y[n, c, y, x] = sum_ij w[c, i, j] x[n, y + i - p, x + j - p]
//   dw[c, i, j]   = sum_n sum_yx dy[n, c, y, x] x[n, y + i - p, x + j - p]
// (values outside the image are 0). No input gradient: these kernels serve an input that needs
// none. Both are matrix products on the tensor cores (mma.sync m16n8k16, f16 operands, f32
// accumulation) whose image operand is read from a shared-memory tile of *pairs*:
// tile[r * PITCH + s] holds the halves at image columns s and s + 1 of tile row r in one 32-bit
// word, so that two horizontally adjacent values, whatever the parity of their column, are one
// aligned shared load, the operand register of the mma.
//
// Forward: M = output channels, N = pixels (8 consecutive pixels of a row per n-tile), the
// reduction runs over K rows of (K + 1) / 2 pairs: (kx, kx + 1) for kx = 0, 2, .., K - 3, then
// (K - 2, K - 1) whose first value repeats one of the previous pair and has weight 0 (the
// padding stays inside the window, so that no value outside it enters the sum), padded with
// zero-weight pairs up to a multiple of 16 (9x9: 90 -> 96). Tiles of TR x TC pixels (one warp
// per row of TC pixels, TPB tiles per block stacked vertically); the weights (C x KP halves,
// reordered as above) stay in shared memory for the block. A warp computes 32 channels x 64
// pixels at a time, converts to f16 and writes through a per-warp staging buffer, 32 channels x
// 32 pixels, so that global stores are 16-byte runs of a channel's row.
//
// Weight gradient: M = output channels (dy, read straight from global memory into the operand
// registers: 16 bytes per lane and row), N = the K K taps (plain order, padded to a multiple of
// 8), the reduction runs over the pixels, in an order chosen so that each lane's 4 values of dy
// per k-step are consecutive pixels (the image operand reads the same pixels). The work items
// (RC rows x TC columns of one image) are split into contiguous ranges, one per block (a grid of
// at most 264 blocks, 2 per multiprocessor of a Hopper GPU: one wave); warp (mt, rg) of a block
// sums 16 channels over the rows rg, rg + RG, .. of each item; the row groups are added in
// shared memory in a fixed order and each block writes its C x K K sums in f32 to part[block];
// oicv_grad_weight_finish adds the blocks' partial sums in f64 in a fixed order (no atomics: the
// same inputs give the same bits).
//
// K (3, 5, 7, 9) is a template parameter; C, a multiple of 16 up to 128, is not.
//
// f32 (TF32 m16n8k8: k = 8 per mma, one value per register, so no pairs): the forward's
// reduction runs over the K K taps in plain order padded to a multiple of 8 (9x9: 81 -> 88, 11
// k-steps), its tile holds single values (pitch chosen against bank conflicts), the weights of
// 64 channels at a time stay in shared memory, and results go from the accumulators straight to
// global memory (8-byte stores, 32 bytes per channel row and n-tile: no staging needed). The
// weight gradient reads dy as 16-byte runs of 4 pixels per lane, a row in two halves of 32
// pixels, 8 k-steps per row (k-step (u, e): index t -> pixel 16 u + 4 t + 2 e, t + 4 -> the next
// pixel); blocks, row groups, partial sums and their finish as in f16.

#define OI_TC 64        // pixels per tile row (forward and weight gradient)
#define OI_TR 8         // forward: tile rows, one per warp
#define OI_TPB 4        // forward: tiles per block, stacked vertically
#define OI_RC 8         // weight gradient: rows per work item
#define OI_WARPS 8
#define OI_THREADS (OI_WARPS * 32)
#define OI_CMAX 128     // output channels, at most
#define OI_STAGE 512    // forward: staging words per warp (32 channels x 32 pixels)

// tile[r * pitch + s] = (x[y0 - p + r, x0 - p + s], x[y0 - p + r, x0 - p + s + 1]) of image
// `plane` (0 outside it) for r < rows, s < pitch, by all threads of the block.
__device__ __forceinline__ void load_pairs(unsigned *tile, int rows, int pitch, const half_t *plane, int H, int W,
                                           int y0, int x0, int p) {
  for (int i = threadIdx.x; i < rows * pitch; i += OI_THREADS) {
    const int r = i / pitch, s = i - r * pitch;
    const int yy = y0 - p + r, xx = x0 - p + s;
    unsigned lo = 0, hi = 0;
    if (yy >= 0 && yy < H) {
      const half_t *row = plane + (long long)yy * W;
      if (xx >= 0 && xx < W) lo = row[xx];
      if (xx + 1 >= 0 && xx + 1 < W) hi = row[xx + 1];
    }
    tile[i] = lo | (hi << 16);
  }
}

// The forward's reduction order (see the top).
template <int K>
struct Fwd {
  static constexpr int RPR = (K + 1) / 2;                     // pairs per kernel row
  static constexpr int KP = ((2 * K * RPR + 15) / 16) * 16;   // reduction length, padded
  static constexpr int KS = KP / 16;                          // k-steps
  static constexpr int WP = KP / 2 + 4;                       // weight row pitch (words; = 4 mod 8)
  static constexpr int ROWS = OI_TR + K - 1;
  // tile pitch (words): >= OI_TC + K - 2, chosen so that the operand loads meet no bank conflict
  static constexpr int PITCH = K == 3 ? 73 : K == 5 ? 75 : K == 7 ? 69 : 81;

  // Tile offset of pair q (tap row ky, first column kx); the padding's pairs read (0, 0).
  static __device__ __forceinline__ int offset(int q) {
    const int ky = q / RPR, j = q - ky * RPR;
    if (ky >= K) return 0;
    return ky * PITCH + (j < RPR - 1 ? 2 * j : K - 2);
  }
  // The weight of value e (0, 1) of pair q, as f16 bits (0 for the repeated value and the padding).
  static __device__ __forceinline__ unsigned weight(const half_t *w, int c, int q, int e) {
    const int ky = q / RPR, j = q - ky * RPR;
    if (ky >= K) return 0;
    const int kx = j < RPR - 1 ? 2 * j + e : (e == 0 ? -1 : K - 1);
    return kx < 0 ? 0u : (unsigned)w[(c * K + ky) * K + kx];
  }
};

// The forwards' matrix product for one group of up to 32 output channels (c0 ..; mtn m-tiles of
// 16) and the warp's 64 pixels: acc[mt][nt] = (channel c0 + 16 mt + g, pixels 8 nt + 2 t, + 1),
// (channel + 8, the same pixels), over F::KS k-steps of 8 operand words (f16 pairs on
// m16n8k16, or TF32 values on m16n8k8), reading the weights `ws` (rows of F::WP words) and the
// tile row `trow` at the offsets `offset(q)` of reduction index q.
template <class F, bool TF32, class Offset>
__device__ __forceinline__ void channel_group(float (&acc)[2][8][4], const unsigned *ws, const unsigned *trow, int c0,
                                              int mtn, int g, int t, Offset offset) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;
#pragma unroll
  for (int s = 0; s < F::KS; ++s) {
    const int o0 = offset(8 * s + t), o1 = offset(8 * s + t + 4);
    unsigned a[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const unsigned *wr = ws + (c0 + 16 * mt + g) * F::WP + 8 * s + t;
      const bool on = mt < mtn;
      a[mt][0] = on ? wr[0] : 0u;
      a[mt][1] = on ? wr[8 * F::WP] : 0u;
      a[mt][2] = on ? wr[4] : 0u;
      a[mt][3] = on ? wr[8 * F::WP + 4] : 0u;
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const unsigned b0 = trow[8 * nt + o0], b1 = trow[8 * nt + o1];
      if (TF32) {
        mma1688(acc[0][nt], a[0][0], a[0][1], a[0][2], a[0][3], b0, b1);
        if (mtn > 1) mma1688(acc[1][nt], a[1][0], a[1][1], a[1][2], a[1][3], b0, b1);
      } else {
        mma16816(acc[0][nt], a[0][0], a[0][1], a[0][2], a[0][3], b0, b1);
        if (mtn > 1) mma16816(acc[1][nt], a[1][0], a[1][1], a[1][2], a[1][3], b0, b1);
      }
    }
  }
}

// Grid (ceil(W / TC), ceil(H / (TR TPB)), N), block OI_THREADS.
template <int K>
__device__ void forward(const half_t *x, const half_t *w, half_t *y, int C, int H, int W) {
  typedef Fwd<K> F;
  static_assert(F::PITCH >= OI_TC + K - 2, "tile pitch");
  __shared__ unsigned ws[OI_CMAX * F::WP];
  __shared__ unsigned tile[F::ROWS * F::PITCH];
  __shared__ alignas(16) unsigned stage[OI_WARPS * OI_STAGE];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n = blockIdx.z, x0 = blockIdx.x * OI_TC;
  for (int i = tid; i < C * (F::KP / 2); i += OI_THREADS) {
    const int c = i / (F::KP / 2), q = i - c * (F::KP / 2);
    ws[c * F::WP + q] = F::weight(w, c, q, 0) | (F::weight(w, c, q, 1) << 16);
  }
  const half_t *plane = x + (long long)n * H * W;
  unsigned *st = stage + warp * OI_STAGE;
  const bool vec = (W & 7) == 0;
  const long long plane8 = 8LL * H * W;  // 8 channels of the output
  for (int tt = 0; tt < OI_TPB; ++tt) {
    const int y0 = (blockIdx.y * OI_TPB + tt) * OI_TR;
    if (y0 >= H) break;
    __syncthreads();  // the previous tile's reads done (and the weights stored)
    load_pairs(tile, F::ROWS, F::PITCH, plane, H, W, y0, x0, K / 2);
    __syncthreads();
    const int yy = y0 + warp;
    if (yy >= H) continue;
    const unsigned *trow = tile + warp * F::PITCH + g;
    for (int c0 = 0; c0 < C; c0 += 32) {
      const int mtn = C - c0 >= 32 ? 2 : 1;  // m-tiles of 16 channels in this group
      float acc[2][8][4];
      channel_group<F, false>(acc, ws, trow, c0, mtn, g, t, [](int q) { return F::offset(q); });
      // Out through the staging buffer, 32 pixels at a time: word (channel cl, pixel pair pp) at
      // cl * 16 + ((pp / 4) ^ ((cl / 2) % 4)) * 4 + pp % 4 (the swizzle spares bank conflicts
      // on both sides). Lane l then reads and stores 8 pixels (chunk l % 4) of the channels
      // l / 4 + 8 i: the swizzle term (cl / 2) % 4 = (l / 8) % 4 is the same for every i.
      const int cr = lane >> 2, ch = lane & 3;
      const unsigned *rd = st + cr * 16 + ((ch ^ ((lane >> 3) & 3)) << 2);
      half_t *out = y + (((long long)n * C + c0 + cr) * H + yy) * W + x0 + 8 * ch;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        __syncwarp();
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          if (mt < mtn) {
#pragma unroll
            for (int u = 0; u < 4; ++u) {
              const int cl = 16 * mt + g, wd = ((u ^ (g >> 1)) << 2) + t;
              st[cl * 16 + wd] = pack2(acc[mt][4 * h + u][0], acc[mt][4 * h + u][1]);
              st[(cl + 8) * 16 + wd] = pack2(acc[mt][4 * h + u][2], acc[mt][4 * h + u][3]);
            }
          }
        }
        __syncwarp();
        const int xx = x0 + 32 * h + 8 * ch;
        if (xx >= W) continue;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if (i >= 2 * mtn) break;
          const uint4 v = *reinterpret_cast<const uint4 *>(rd + 128 * i);
          half_t *o = out + 32 * h + i * plane8;
          if (vec) {
            // (streaming: the output is not read again soon)
            asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(o), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                         : "memory");
          } else {
            const unsigned vw[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 8; ++e)
              if (xx + e < W) o[e] = (half_t)(vw[e >> 1] >> (16 * (e & 1)));
          }
        }
      }
    }
  }
}

// The weight gradient's tiles: rows RC + K - 1, pitch >= TC + K - 2 and = K mod 8 (the image
// operand loads then meet no bank conflict).
template <int K>
struct Wgt {
  static constexpr int KK = K * K;
  static constexpr int KN = (KK + 7) / 8;  // n-tiles of taps
  static constexpr int ROWS = OI_RC + K - 1;
  static constexpr int PITCH = OI_TC + K - 2 + ((K - (OI_TC + K - 2)) % 8 + 8) % 8;
};

// 8 halves of dy at `p` (pixels xx..xx+7 of an image row), 0 beyond W. `vec`: one 16-byte load,
// read-only and not kept in L1 (each value of dy is read once).
__device__ __forceinline__ uint4 load8(const half_t *p, int xx, int W, bool vec) {
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (xx >= W) return v;
  if (vec) {
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
  }
  unsigned u[4] = {0u, 0u, 0u, 0u};
#pragma unroll
  for (int e = 0; e < 8; ++e)
    if (xx + e < W) u[e >> 1] |= (unsigned)p[e] << (16 * (e & 1));
  return make_uint4(u[0], u[1], u[2], u[3]);
}

// The end of both weight gradients: acc[nt] = (channel c, taps 8 nt + 2 t, + 1), (channel c + 8,
// the same taps) of this warp's row group rg; row groups RG - 1, .., 1 add into `red` (shared)
// in turn, row group 0 adds it and writes the block's C x KK sums to part[block].
template <class G>
__device__ __forceinline__ void block_sums(const float (&acc)[G::KN][4], float *red, float *part, int C, int c, int t,
                                           int rg, int RG, bool active) {
  const int cw = 8 * G::KN;
  for (int round = RG - 1; round >= 1; --round) {
    if (active && rg == round) {
#pragma unroll
      for (int nt = 0; nt < G::KN; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = (c + 8 * (e >> 1)) * cw + 8 * nt + 2 * t + (e & 1);
          red[i] = round == RG - 1 ? acc[nt][e] : red[i] + acc[nt][e];
        }
    }
    __syncthreads();
  }
  if (active && rg == 0) {
    float *out = part + (long long)blockIdx.x * C * G::KK;
#pragma unroll
    for (int nt = 0; nt < G::KN; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int k = 8 * nt + 2 * t + (e & 1), cc = c + 8 * (e >> 1);
        const float v = RG > 1 ? acc[nt][e] + red[cc * cw + k] : acc[nt][e];
        if (k < G::KK) out[cc * G::KK + k] = v;
      }
  }
}

// Grid (blocks, 1, 1), block OI_THREADS: block b takes the work items [b I / G, (b + 1) I / G)
// of the I = N ceil(W / TC) ceil(H / RC) items (image-major, then column strip, then rows) and
// writes its sums to part[b * C K K + c K K + tap]. `vec`: dy's rows start 16-byte aligned and
// W is a multiple of 8.
template <int K>
__device__ void grad_weight(const half_t *x, const half_t *dy, float *part, int N, int C, int H, int W, int vec) {
  typedef Wgt<K> G;
  static_assert(G::PITCH >= OI_TC + K - 2 && G::PITCH % 8 == K % 8, "tile pitch");
  __shared__ unsigned tile[G::ROWS * G::PITCH];
  __shared__ float red[64 * G::KN * 8];  // row groups' sums (C <= 64 when there are several)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int MT = C / 16, RG = OI_WARPS / MT;
  const int mt = warp % MT, rg = warp / MT;
  const bool active = rg < RG;
  const int SX = (W + OI_TC - 1) / OI_TC, RCH = (H + OI_RC - 1) / OI_RC;
  const long long items = (long long)N * SX * RCH;
  const int i0 = (int)(items * blockIdx.x / gridDim.x), i1 = (int)(items * (blockIdx.x + 1) / gridDim.x);
  int off[G::KN];  // tap 8 nt + g at the tile offset of (ky, kx); the padding anywhere in the tile
#pragma unroll
  for (int nt = 0; nt < G::KN; ++nt) {
    const int k = 8 * nt + g;
    off[nt] = k < G::KK ? (k / K) * G::PITCH + k % K : (k & 7);
  }
  float acc[G::KN][4];
#pragma unroll
  for (int nt = 0; nt < G::KN; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
  const int c = 16 * mt + g;
  const long long plane = (long long)H * W;
  for (int it = i0; it < i1; ++it) {
    const int n = it / (SX * RCH), rem = it - n * (SX * RCH), sx = rem / RCH, rc = rem - sx * RCH;
    const int x0 = sx * OI_TC, y0 = rc * OI_RC, rows = min(OI_RC, H - y0);
    // this lane's dy: channels c and c + 8, pixels x0 + 8 t .. + 7 and x0 + 32 + 8 t .. + 7
    const half_t *drow = dy + ((long long)n * C + c) * plane + (long long)y0 * W + x0 + 8 * t;
    const int xa = x0 + 8 * t, xb = xa + 32;
    uint4 nxt[4];
    int r = rg;
    if (active && r < rows) {
      const half_t *p = drow + (long long)r * W;
      nxt[0] = load8(p, xa, W, vec);
      nxt[1] = load8(p + 8 * plane, xa, W, vec);
      nxt[2] = load8(p + 32, xb, W, vec);
      nxt[3] = load8(p + 8 * plane + 32, xb, W, vec);
    }
    __syncthreads();  // the previous item's reads of the tile done
    load_pairs(tile, G::ROWS, G::PITCH, x + (long long)n * plane, H, W, y0, x0, K / 2);
    __syncthreads();
    if (!active) continue;
    for (; r < rows; r += RG) {
      const uint4 cur[4] = {nxt[0], nxt[1], nxt[2], nxt[3]};
      if (r + RG < rows) {
        const half_t *p = drow + (long long)(r + RG) * W;
        nxt[0] = load8(p, xa, W, vec);
        nxt[1] = load8(p + 8 * plane, xa, W, vec);
        nxt[2] = load8(p + 32, xb, W, vec);
        nxt[3] = load8(p + 8 * plane + 32, xb, W, vec);
      }
      const unsigned *trow = tile + r * G::PITCH + 8 * t;
      // k-step (hh, sub): reduction index 2t + e -> pixel 32 hh + 8 t + 4 sub + e and 2t + 8 + e
      // -> pixel 32 hh + 8 t + 4 sub + 2 + e (e = 0, 1), for the channel operand (a) and the
      // image operand (b) alike.
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int sub = 0; sub < 2; ++sub) {
          const uint4 &lo = cur[2 * hh], &hi = cur[2 * hh + 1];
          const unsigned a0 = sub ? lo.z : lo.x, a2 = sub ? lo.w : lo.y;
          const unsigned a1 = sub ? hi.z : hi.x, a3 = sub ? hi.w : hi.y;
          const unsigned *tp = trow + 32 * hh + 4 * sub;
#pragma unroll
          for (int nt = 0; nt < G::KN; ++nt) mma16816(acc[nt], a0, a1, a2, a3, tp[off[nt]], tp[off[nt] + 2]);
        }
      }
    }
  }
  block_sums<G>(acc, red, part, C, c, t, rg, RG, active);
}

// ---- f32 storage on TF32 tensor cores (mma.sync m16n8k8: one value per operand register) ----
//
// Fragments of mma.sync.m16n8k8 with TF32 operands (PTX ISA; g = lane / 4, t = lane % 4): A (16 x
// 8, row) a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); B (8 x 8, col) b0 (t, g),
// b1 (t + 4, g); C c0, c1 (g, 2t, 2t + 1), c2, c3 (g + 8, the same). Values are rounded to TF32
// (cvt.rna) as they enter the tile, the weights' shared copy or the registers.

// tile[r * pitch + s] = x[y0 - p + r, x0 - p + s] of image `plane` in TF32 (0 outside it) for
// r < rows, s < pitch, by all threads of the block.
__device__ __forceinline__ void load_tf32(unsigned *tile, int rows, int pitch, const float *plane, int H, int W,
                                          int y0, int x0, int p) {
  for (int i = threadIdx.x; i < rows * pitch; i += OI_THREADS) {
    const int r = i / pitch, s = i - r * pitch;
    const int yy = y0 - p + r, xx = x0 - p + s;
    tile[i] = yy >= 0 && yy < H && xx >= 0 && xx < W ? tf32(plane[(long long)yy * W + xx]) : 0u;
  }
}

// o[0], o[1] = a, b (o[1] only if `both`); `vec`: one 8-byte streaming store (o 8-byte aligned).
__device__ __forceinline__ void store2(float *o, float a, float b, bool vec, bool both) {
  if (vec) {
    asm volatile("st.global.cs.v2.f32 [%0], {%1, %2};" ::"l"(o), "f"(a), "f"(b) : "memory");
  } else {
    o[0] = a;
    if (both) o[1] = b;
  }
}

#define OI_CW 64  // f32 forward: output channels whose weights a block holds at a time

// The f32 forward's reduction: the K K taps in plain order (tap q at (q / K, q % K)), padded to a
// multiple of 8 with taps of weight 0 that read the last tap's values.
template <int K>
struct Fwd32 {
  static constexpr int KK = K * K;
  static constexpr int KP = (KK + 7) / 8 * 8;  // reduction length, padded
  static constexpr int KS = KP / 8;            // k-steps
  static constexpr int WP = KP + 4;            // weight row pitch (words; = 4 mod 8)
  static constexpr int ROWS = OI_TR + K - 1;
  // tile pitch (words): >= OI_TC + K - 1 and = K + 7 mod 32, so that a k-step's 4 taps (lanes
  // t), even across two tap rows, and 8 pixels (lanes g) fall in distinct banks or on one word
  // (checked by enumeration for K = 3, 5, 7, 9)
  static constexpr int PITCH = OI_TC + K + 7;

  static __device__ __forceinline__ int offset(int q) {
    if (q >= KK) q = KK - 1;
    const int ky = q / K;
    return ky * PITCH + q - ky * K;
  }
};

// Grid (ceil(W / TC), ceil(H / (TR TPB)), N), block OI_THREADS. M = output channels, N = 8
// consecutive pixels of a row per n-tile, the reduction over the taps; one warp per tile row, as
// the f16 forward, the weights of OI_CW channels at a time in shared memory. The results go
// straight from the accumulators to global memory: lanes 4 g .. 4 g + 3 write 8 consecutive
// pixels (32 bytes) of one channel.
template <int K>
__device__ void forward_f32(const float *x, const float *w, float *y, int C, int H, int W) {
  typedef Fwd32<K> F;
  static_assert(F::PITCH >= OI_TC + K - 1, "tile pitch");
  __shared__ unsigned ws[OI_CW * F::WP];
  __shared__ unsigned tile[F::ROWS * F::PITCH];
  // the taps' tile offsets (read per k-step: 2 KS offsets held in registers would spill)
  __shared__ int offs[F::KP];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n = blockIdx.z, x0 = blockIdx.x * OI_TC;
  for (int q = tid; q < F::KP; q += OI_THREADS) offs[q] = F::offset(q);
  const float *plane = x + (long long)n * H * W;
  const bool vec = (W & 1) == 0;
  const long long hw = (long long)H * W;
  for (int cb = 0; cb < C; cb += OI_CW) {
    const int cn = min(OI_CW, C - cb);
    __syncthreads();  // the previous channels' reads of the weights done
    for (int i = tid; i < cn * F::KP; i += OI_THREADS) {
      const int c = i / F::KP, q = i - c * F::KP;
      ws[c * F::WP + q] = q < F::KK ? tf32(w[(cb + c) * F::KK + q]) : 0u;
    }
    for (int tt = 0; tt < OI_TPB; ++tt) {
      const int y0 = (blockIdx.y * OI_TPB + tt) * OI_TR;
      if (y0 >= H) break;
      __syncthreads();  // the previous tile's reads done (and the weights stored)
      load_tf32(tile, F::ROWS, F::PITCH, plane, H, W, y0, x0, K / 2);
      __syncthreads();
      const int yy = y0 + warp;
      if (yy >= H) continue;
      const unsigned *trow = tile + warp * F::PITCH + g;
      for (int c0 = 0; c0 < cn; c0 += 32) {
        const int mtn = cn - c0 >= 32 ? 2 : 1;  // m-tiles of 16 channels in this group
        float acc[2][8][4];
        channel_group<F, true>(acc, ws, trow, c0, mtn, g, t, [&](int q) { return offs[q]; });
        // acc[mt][nt] = (channel c0 + 16 mt + g, pixels 8 nt + 2 t, + 1), (channel + 8, the same)
        float *out = y + (((long long)n * C + cb + c0 + g) * H + yy) * W + x0 + 2 * t;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          if (mt >= mtn) break;
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            const int xx = x0 + 8 * nt + 2 * t;
            if (xx >= W) break;
            float *o = out + 16 * mt * hw + 8 * nt;
            store2(o, acc[mt][nt][0], acc[mt][nt][1], vec, xx + 1 < W);
            store2(o + 8 * hw, acc[mt][nt][2], acc[mt][nt][3], vec, xx + 1 < W);
          }
        }
      }
    }
  }
}

// The f32 weight gradient's tiles: rows RC + K - 1; pitch >= TC + K - 1 and = K + 12 mod 32, so
// that the image operand loads meet no bank conflict for K = 5, 7, 9 (checked by enumeration;
// K = 3, whose n-tiles span 3 or 4 tap rows, meets 2-way conflicts). N = the K K taps in plain
// order, padded to a multiple of 8 with taps that continue the last tap row (their sums are
// dropped).
template <int K>
struct Wgt32 {
  static constexpr int KK = K * K;
  static constexpr int KN = (KK + 7) / 8;  // n-tiles of taps
  static constexpr int ROWS = OI_RC + K - 1;
  static constexpr int PITCH = OI_TC + K + 12;

  static __device__ __forceinline__ int offset(int k) {
    const int ky = min(k / K, K - 1);
    return ky * PITCH + k - ky * K;
  }
};

// 4 floats of dy at `p` (pixels xx..xx+3 of an image row), 0 beyond W. `vec`: one 16-byte load,
// read-only and not kept in L1 (each value of dy is read once).
__device__ __forceinline__ float4 load4(const float *p, int xx, int W, bool vec) {
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
  if (xx >= W) return v;
  if (vec) {
    asm volatile("ld.global.nc.L1::no_allocate.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "l"(p));
    return v;
  }
  v.x = p[0];
  if (xx + 1 < W) v.y = p[1];
  if (xx + 2 < W) v.z = p[2];
  if (xx + 3 < W) v.w = p[3];
  return v;
}

// As grad_weight (the same work items, blocks, warps and sums), in f32 on TF32 tensor cores: a
// row of an item is taken in halves of 32 pixels (the next half's dy loaded during this one's
// products); in a half, lane t holds dy at pixels 16 u + 4 t .. + 3 (u = 0, 1) of channels c and
// c + 8, and k-step (u, e) maps reduction index t to pixel 16 u + 4 t + 2 e and t + 4 to the
// pixel after it, for the channel operand (a) and the image operand (b) alike. `vec`: dy's rows
// start 16-byte aligned and W is a multiple of 4.
template <int K>
__device__ void grad_weight_f32(const float *x, const float *dy, float *part, int N, int C, int H, int W, int vec) {
  typedef Wgt32<K> G;
  static_assert(G::PITCH >= OI_TC + K - 1, "tile pitch");
  __shared__ unsigned tile[G::ROWS * G::PITCH];
  __shared__ float red[64 * G::KN * 8];  // row groups' sums (C <= 64 when there are several)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int MT = C / 16, RG = OI_WARPS / MT;
  const int mt = warp % MT, rg = warp / MT;
  const bool active = rg < RG;
  const int SX = (W + OI_TC - 1) / OI_TC, RCH = (H + OI_RC - 1) / OI_RC;
  const long long items = (long long)N * SX * RCH;
  const int i0 = (int)(items * blockIdx.x / gridDim.x), i1 = (int)(items * (blockIdx.x + 1) / gridDim.x);
  int off[G::KN];  // tap 8 nt + g at the tile offset of (ky, kx)
#pragma unroll
  for (int nt = 0; nt < G::KN; ++nt) off[nt] = G::offset(8 * nt + g);
  float acc[G::KN][4];
#pragma unroll
  for (int nt = 0; nt < G::KN; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
  const int c = 16 * mt + g;
  const long long plane = (long long)H * W;
  for (int it = i0; it < i1; ++it) {
    const int n = it / (SX * RCH), rem = it - n * (SX * RCH), sx = rem / RCH, rc = rem - sx * RCH;
    const int x0 = sx * OI_TC, y0 = rc * OI_RC, rows = min(OI_RC, H - y0);
    // this lane's dy: channels c and c + 8, pixels 32 h + 16 u + 4 t .. + 3 of row r's half h
    const float *drow = dy + ((long long)n * C + c) * plane + (long long)y0 * W + x0 + 4 * t;
    float4 nxt[4];
    auto load = [&](int r, int h) {
      const float *p = drow + (long long)r * W + 32 * h;
      const int xa = x0 + 32 * h + 4 * t;
      nxt[0] = load4(p, xa, W, vec);
      nxt[1] = load4(p + 8 * plane, xa, W, vec);
      nxt[2] = load4(p + 16, xa + 16, W, vec);
      nxt[3] = load4(p + 8 * plane + 16, xa + 16, W, vec);
    };
    int r = rg, h = 0;
    if (active && r < rows) load(r, 0);
    __syncthreads();  // the previous item's reads of the tile done
    load_tf32(tile, G::ROWS, G::PITCH, x + (long long)n * plane, H, W, y0, x0, K / 2);
    __syncthreads();
    if (!active) continue;
    while (r < rows) {
      const float4 cur[4] = {nxt[0], nxt[1], nxt[2], nxt[3]};
      const int rn = h ? r + RG : r, hn = h ^ 1;
      if (rn < rows) load(rn, hn);
      const unsigned *trow = tile + r * G::PITCH + 32 * h + 4 * t;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float4 &lo = cur[2 * u], &hi = cur[2 * u + 1];
          const unsigned a0 = tf32(e ? lo.z : lo.x), a2 = tf32(e ? lo.w : lo.y);
          const unsigned a1 = tf32(e ? hi.z : hi.x), a3 = tf32(e ? hi.w : hi.y);
          const unsigned *tp = trow + 16 * u + 2 * e;
#pragma unroll
          for (int nt = 0; nt < G::KN; ++nt) mma1688(acc[nt], a0, a1, a2, a3, tp[off[nt]], tp[off[nt] + 1]);
        }
      }
      r = rn;
      h = hn;
    }
  }
  block_sums<G>(acc, red, part, C, c, t, rg, RG, active);
}

// dw[q] = sum over the blocks' sums (partials.cuh), stored as f16 or f32.
extern "C" __global__ void __launch_bounds__(256) oicv_grad_weight_finish_f16(const float *part, int blocks, int count, half_t *dw) {
  sum_partials<F16>(part, blocks, count, dw);
}

extern "C" __global__ void __launch_bounds__(256) oicv_grad_weight_finish_f32(const float *part, int blocks, int count, float *dw) {
  sum_partials<F32>(part, blocks, count, dw);
}

#define ENTRY(K)                                                                                               \
  extern "C" __global__ void __launch_bounds__(OI_THREADS, 2)                                                 \
      oicv_forward_f16_k##K(const half_t *x, const half_t *w, half_t *y, int C, int H, int W) {                \
    forward<K>(x, w, y, C, H, W);                                                                             \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(OI_THREADS, 2) oicv_grad_weight_f16_k##K(                       \
      const half_t *x, const half_t *dy, float *part, int N, int C, int H, int W, int vec) {                  \
    grad_weight<K>(x, dy, part, N, C, H, W, vec);                                                             \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(OI_THREADS, 2)                                                 \
      oicv_forward_f32_k##K(const float *x, const float *w, float *y, int C, int H, int W) {                  \
    forward_f32<K>(x, w, y, C, H, W);                                                                         \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(OI_THREADS, 2) oicv_grad_weight_f32_k##K(                       \
      const float *x, const float *dy, float *part, int N, int C, int H, int W, int vec) {                    \
    grad_weight_f32<K>(x, dy, part, N, C, H, W, vec);                                                         \
  }

ENTRY(3)
ENTRY(5)
ENTRY(7)
ENTRY(9)
