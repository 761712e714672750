// Weight gradient of a many-channel convolution (VSRNet's conv2: 192 -> 32 channels, 5x5) on
// tensor cores, for LibTorch's CUDA f16 NCHW tensors and, further down, f32 ones on TF32
// (kernels/src/tensor_core_conv.rs compiles this with NVRTC at run time and launches it on
// LibTorch's current stream).
//
// x (N, CI, H, W), dy (N, 32, H, W), K odd, stride 1, padding p = (K - 1) / 2 (same size):
//   dw[co, ci, ky, kx] = sum_n sum_yx dy[n, co, y, x] x[n, ci, y + ky - p, x + kx - p]
// (values outside the image are 0). A matrix product on the tensor cores (mma.sync m16n8k16, f16
// operands, f32 accumulation): M = the 32 output channels (dy, read straight from global memory
// into the operand registers: 16 bytes per lane and channel row), N = (input channel, tap) for a
// group of TCC_CIB input channels (no padding: an n-tile is 8 input channels at one tap), the
// reduction over the pixels. The image operand comes from a shared-memory tile of x as it is
// (word s of a tile row: the halves at columns x0 - 8 + 2 s and + 1, copied by cp.async, 16 bytes
// a copy, zeros outside the image): a pair of horizontally adjacent values is one aligned 32-bit
// word where its first column is even, else it is built from two words by one __byte_perm. The
// pixels of a k-step are ordered so that each lane's dy values are 8 consecutive pixels:
// reduction index 2t + e -> pixel 8 t + 4 sub + e, 2t + 8 + e -> pixel 8 t + 4 sub + 2 + e (sub =
// 0, 1: the two k-steps of a 32-pixel row). Lane (g, t) holds input channel g of its n-tiles; a
// warp's n-tiles are the K taps kx of one tap row ky (two such groups per warp), so that the
// pairs of a row step, at columns 8 t + 8 - p + i, i < K + 6, come from the 6 words 4 t + 3 ..
// 4 t + 8 (two 32-bit loads and one 16-byte load; channel stride = 16 mod 32 words: the 16-byte
// load has no bank conflict, the 32-bit ones 4-way, 12 wavefronts for 20 mma) and (K + 5) / 2
// __byte_perm, each pair serving up to 4 (tap, k-step) operands.
//
// Work items: TCC_RC16 rows x TCC_TC columns of one image (image-major, then column strip, then
// row chunk); blockIdx.y picks the input-channel group, blockIdx.x a contiguous range of items.
// Warp (ng, rg): tap groups 2 ng, 2 ng + 1 (both m-tiles: the image operand serves two mma),
// rows rg, rg + RG, .. of each item. Three tiles (stages) in dynamic shared memory: the tile of
// item it + 2 is copied (cp.async) while item it is computed, one barrier per item. Each warp
// writes its f32 sums to part[(blockIdx.x RG + rg) 32 CI K K + dw index] (no atomics);
// tcc_grad_weight_finish adds the partial sums in f64 in a fixed order: the same inputs give the
// same bits.
//
// Measured on an H100 (x (3, 192, 512, 960), 5x5; Nsight Compute, --clock-control none, 1.79
// GHz): 2.37 ms for this kernel, against 2.95 ms (a one-step profile) for the previous version,
// which built a tile of pairs (word s = columns s, s + 1, any parity) through registers from
// 4-row items: about 20 instructions per 16 bytes of image staged, about one such chunk per mma,
// and the halo rows doubled the image read. 158 registers a thread, no spills, 95 KB of shared
// memory, 10 warps a multiprocessor; still latency-bound (SM throughput 32 %, memory 30 %).
// Not tried yet: dy through shared memory as well (cp.async; its 16 prefetch registers and the
// L2 latency of its loads would go, and the 5 warps of a row group would not each load the same
// dy), more warps with fewer accumulators each.

#define TCC_TC 32   // pixels per tile row
#ifndef TCC_RC
#define TCC_RC 4    // rows per work item (f32)
#endif
#ifndef TCC_RC16
#define TCC_RC16 16 // rows per work item (f16)
#endif
#define TCC_CIB 16  // input channels per block
#define TCC_CO 32   // output channels (two m-tiles)

template <int K>
struct Tcw {
  static constexpr int KK = K * K;
  static constexpr int P = K / 2;
  static constexpr int RC = TCC_RC16;                   // rows per item
  static constexpr int GROUPS = K * (TCC_CIB / 8);      // tap groups (ky, 8 input channels)
  static constexpr int NG = GROUPS / 2;                 // warps per row group (two tap groups each)
  static constexpr int RG = 2;                          // row groups
  static constexpr int THREADS = 32 * NG * RG;
  static constexpr int ROWS = RC + K - 1;
  static constexpr int NW = K + 6;                      // pair words per lane and tap row: kx + 4 sub + 2 e
  // tile row: image columns x0 - 8 .. x0 + 39 as they are (6 chunks of 8 halves, 24 words)
  static constexpr int NCH = 6;
  static constexpr int PITCH = 4 * NCH;
  // channel stride (words): >= ROWS PITCH, = 16 mod 32 (16-byte reads without bank conflicts)
  static constexpr int CS = (ROWS * PITCH + 15) / 32 * 32 + 16;
  static constexpr int STAGES = 3;
  static constexpr int STAGE = TCC_CIB * CS;            // words
  static constexpr int SMEM = STAGES * STAGE * 4;       // bytes, dynamic
  static constexpr int TASKS = TCC_CIB * ROWS * NCH;    // 16-byte copies an item
  static constexpr int STEPS = (RC + RG - 1) / RG;      // row steps per warp and item
};

__device__ __forceinline__ unsigned smem_addr(const void *p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

// 16 bytes from global `src` to shared `dst` (cp.async), the first `bytes` of them (0 or 16) read,
// the rest zero.
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes) : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// 8 halves of `row` at columns a .. a + 7 (0 outside [0, W)); one 16-byte load where `vec` (rows
// 16-byte aligned, W a multiple of 8; a is a multiple of 8) and all are inside.
__device__ __forceinline__ uint4 load8h(const half_t *row, int a, int W, bool vec) {
  if (vec && a >= 0 && a + 8 <= W) return *reinterpret_cast<const uint4 *>(row + a);
  unsigned u[4] = {0u, 0u, 0u, 0u};
#pragma unroll
  for (int i = 0; i < 8; ++i)
    if (a + i >= 0 && a + i < W) u[i >> 1] |= (unsigned)row[a + i] << (16 * (i & 1));
  return make_uint4(u[0], u[1], u[2], u[3]);
}

// 8 halves of dy at `p` (pixels xx .. xx + 7 of an image row), 0 beyond W.
__device__ __forceinline__ uint4 load8(const half_t *p, int xx, int W, bool vec) {
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (xx >= W) return v;
  if (vec) return *reinterpret_cast<const uint4 *>(p);
  unsigned u[4] = {0u, 0u, 0u, 0u};
#pragma unroll
  for (int e = 0; e < 8; ++e)
    if (xx + e < W) u[e >> 1] |= (unsigned)p[e] << (16 * (e & 1));
  return make_uint4(u[0], u[1], u[2], u[3]);
}

struct Item {
  int n, x0, y0;
};

// Item `it` of RC-row items, RCH of them down an image and SX across.
__device__ __forceinline__ Item item_of(int it, int SX, int RCH, int RC) {
  const int n = it / (SX * RCH), rem = it - n * (SX * RCH), sx = rem / RCH;
  return Item{n, sx * TCC_TC, (rem - sx * RCH) * RC};
}

// The image tile of item m into `tile` (a stage): word (ci, rr, s) = x at channel ci0 + ci, row
// y0 - P + rr, columns x0 - 8 + 2 s, + 1 (zeros outside the image). `vec`: by cp.async (the
// caller commits), else by plain loads and stores.
template <int K>
__device__ __forceinline__ void stage_x(const half_t *x, const Item &m, int CI, int ci0, int H, int W, long long plane,
                                        bool vec, unsigned *tile) {
  typedef Tcw<K> T;
  for (int task = threadIdx.x; task < T::TASKS; task += T::THREADS) {
    const int ci = task / (T::ROWS * T::NCH), rem = task - ci * (T::ROWS * T::NCH);
    const int rr = rem / T::NCH, c = rem - rr * T::NCH;
    const int yy = m.y0 - T::P + rr, a = m.x0 - 8 + 8 * c;
    unsigned *dst = tile + ci * T::CS + rr * T::PITCH + 4 * c;
    const bool in = yy >= 0 && yy < H;
    const half_t *row = x + ((long long)m.n * CI + ci0 + ci) * plane + (long long)(in ? yy : 0) * W;
    if (vec) {
      const bool ok = in && a >= 0 && a + 8 <= W;
      cp_async16(dst, ok ? row + a : x, ok ? 16 : 0);
    } else {
      *reinterpret_cast<uint4 *>(dst) = in ? load8h(row, a, W, false) : make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// dy of row step st (row rg + RG st) of item m, channels g + 8 q (0 past the item's rows).
template <int K>
__device__ __forceinline__ void fetch_dy(const half_t *dy, const Item &m, int st, int rg, int g, int t, int H, int W,
                                         long long plane, bool vec, uint4 (&d)[4]) {
  const int r = rg + Tcw<K>::RG * st;
#pragma unroll
  for (int q = 0; q < 4; ++q) d[q] = make_uint4(0u, 0u, 0u, 0u);
  if (r >= min(Tcw<K>::RC, H - m.y0)) return;
  const int xx = m.x0 + 8 * t;
  const half_t *p = dy + ((long long)m.n * TCC_CO + g) * plane + (long long)(m.y0 + r) * W + xx;
#pragma unroll
  for (int q = 0; q < 4; ++q) d[q] = load8(p + q * 8 * plane, xx, W, vec);
}

// Grid (blocks, CI / TCC_CIB, 1), block Tcw<K>::THREADS, dynamic shared memory Tcw<K>::SMEM.
// `vec`: x and dy start 16-byte aligned and W is a multiple of 8.
template <int K>
__device__ void grad_weight(const half_t *x, const half_t *dy, float *part, int N, int CI, int H, int W, int vec) {
  typedef Tcw<K> T;
  static_assert(T::GROUPS % 2 == 0 && T::CS % 32 == 16 && T::CS >= T::ROWS * T::PITCH, "tile layout");
  // the words read, 4 t + 3 .. 4 t + 8 (t < 4), hold tile columns 8 t + 8 - P + i, i <= NW
  static_assert(8 - T::P >= 6 && T::NW + 8 - T::P <= 17 && 4 * 3 + 8 < T::PITCH, "tile columns");
  extern __shared__ uint4 wsm[];
  unsigned *tiles = reinterpret_cast<unsigned *>(wsm);  // [STAGES][STAGE]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int ng = warp % T::NG, rg = warp / T::NG;
  const int SX = (W + TCC_TC - 1) / TCC_TC, RCH = (H + T::RC - 1) / T::RC;
  const long long items = (long long)N * SX * RCH;
  const int i0 = (int)(items * blockIdx.x / gridDim.x), i1 = (int)(items * (blockIdx.x + 1) / gridDim.x);
  const int ci0 = blockIdx.y * TCC_CIB;
  const long long plane = (long long)H * W;
  const bool v = vec != 0;
  // tap group u (0, 1) of this warp: tap row ky[u], input channels 8 cb[u] .. + 7; this lane's
  // channel 8 cb + g, its first word 4 t + 3 of tile row ky (+ the output row).
  int base[2];
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    const int grp = 2 * ng + u, ky = grp % K, cb = grp / K;
    base[u] = (8 * cb + g) * T::CS + ky * T::PITCH + 4 * t + 3;
  }
  float acc[2][2][K][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int kx = 0; kx < K; ++kx)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][u][kx][e] = 0.f;
  uint4 dn[4];  // the next row step's dy
#pragma unroll
  for (int s = 0; s < T::STAGES - 1; ++s) {
    if (i0 + s < i1) stage_x<K>(x, item_of(i0 + s, SX, RCH, T::RC), CI, ci0, H, W, plane, v, tiles + s * T::STAGE);
    cp_async_commit();
  }
  Item cur = item_of(i0, SX, RCH, T::RC);
  if (i0 < i1) fetch_dy<K>(dy, cur, 0, rg, g, t, H, W, plane, v, dn);
  for (int it = i0; it < i1; ++it) {
    const Item nxt = item_of(it + 1 < i1 ? it + 1 : it, SX, RCH, T::RC);
    // this item's tile complete (all but the newest group), for all threads
    asm volatile("cp.async.wait_group %0;" ::"n"(T::STAGES - 2) : "memory");
    __syncthreads();
    // the stage of item it + STAGES - 1 was last read for item it - 1, before this barrier
    const int ahead = it + T::STAGES - 1;
    if (ahead < i1)
      stage_x<K>(x, item_of(ahead, SX, RCH, T::RC), CI, ci0, H, W, plane, v, tiles + ((ahead - i0) % T::STAGES) * T::STAGE);
    cp_async_commit();
    const unsigned *tile = tiles + ((it - i0) % T::STAGES) * T::STAGE;
    const int rows = min(T::RC, H - cur.y0);
#pragma unroll 1
    for (int st = 0; st < T::STEPS; ++st) {
      const uint4 d[4] = {dn[0], dn[1], dn[2], dn[3]};
      if (st + 1 < T::STEPS) fetch_dy<K>(dy, cur, st + 1, rg, g, t, H, W, plane, v, dn);
      else if (it + 1 < i1) fetch_dy<K>(dy, nxt, 0, rg, g, t, H, W, plane, v, dn);
      const int r = rg + T::RG * st;
      if (r >= rows) continue;
      const unsigned *trow = tile + r * T::PITCH;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        // raw words 4 t + 3 .. 4 t + 8 (4 t + 4 .. 4 t + 7: one 16-byte load)
        const unsigned *p = trow + base[u];
        const uint4 mid = *reinterpret_cast<const uint4 *>(p + 1);
        const unsigned rw[6] = {p[0], mid.x, mid.y, mid.z, mid.w, p[5]};
        // wd[i]: x at tile columns c = 8 t + 8 - P + i and c + 1: a raw word where c is even,
        // else the high half of one and the low half of the next
        unsigned wd[T::NW];
#pragma unroll
        for (int i = 0; i < T::NW; ++i) {
          const int c = i + 8 - T::P;
          wd[i] = (c & 1) == 0 ? rw[c / 2 - 3] : __byte_perm(rw[(c - 1) / 2 - 3], rw[(c + 1) / 2 - 3], 0x5432);
        }
#pragma unroll
        for (int sub = 0; sub < 2; ++sub) {
          unsigned a[2][4];
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            const uint4 &lo = d[2 * mt], &hi = d[2 * mt + 1];
            a[mt][0] = sub ? lo.z : lo.x;
            a[mt][2] = sub ? lo.w : lo.y;
            a[mt][1] = sub ? hi.z : hi.x;
            a[mt][3] = sub ? hi.w : hi.y;
          }
#pragma unroll
          for (int kx = 0; kx < K; ++kx) {
            const unsigned b0 = wd[kx + 4 * sub], b1 = wd[kx + 4 * sub + 2];
            mma16816(acc[0][u][kx], a[0][0], a[0][1], a[0][2], a[0][3], b0, b1);
            mma16816(acc[1][u][kx], a[1][0], a[1][1], a[1][2], a[1][3], b0, b1);
          }
        }
      }
    }
    cur = nxt;
  }
  asm volatile("cp.async.wait_all;" ::: "memory");
  // acc[mt][u][kx][e]: output channel 16 mt + g + 8 (e / 2), input channel ci0 + 8 cb[u] + 2 t +
  // e % 2, tap (ky[u], kx).
  const long long count = (long long)TCC_CO * CI * T::KK;
  float *out = part + (long long)(blockIdx.x * T::RG + rg) * count;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int grp = 2 * ng + u, ky = grp % K, cb = grp / K;
#pragma unroll
      for (int kx = 0; kx < K; ++kx)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int co = 16 * mt + g + 8 * (e >> 1), ci = ci0 + 8 * cb + 2 * t + (e & 1);
          out[((long long)co * CI + ci) * T::KK + ky * K + kx] = acc[mt][u][kx][e];
        }
    }
}

// ---- f32 on TF32 tensor cores ----
// The same product for f32 x and dy (mma.sync m16n8k8 with TF32 operands, rounded from f32 by
// cvt.rna: 10-bit mantissas, as cuDNN's TF32 convolutions; f32 accumulation). Fragments (PTX ISA,
// m16n8k8 .tf32): A (16 x 8, row) a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); B
// (8 x 8, col) b0 (t, g), b1 (t + 4, g); C as for m16n8k16. One value per register, so a k-step is
// 8 pixels: lane (g, t) holds dy at pixels 8 t .. 8 t + 7 of a 32-pixel row (two 16-byte loads
// per channel row) and k-step s (< 4) takes reduction index t -> pixel 8 t + 2 s, t + 4 -> pixel
// 8 t + 2 s + 1. The image tile holds one value per word (rounded to TF32 when stored; word s of a
// tile row is column s relative to the strip's left edge less p): the B operands of tap kx and
// k-step s are the words tile[base + 8 t + kx + 2 s] and the next, so the K + 7 words of a tap row
// are each loaded once for up to 8 operands; banks as for f16 (channel stride = 1 mod 8).
//
// Warps: with f16's split (both m-tiles per warp, two row groups) a lane would hold twice the
// dy registers and spill at 10 warps (168 registers a thread); here warp (mt, ng) computes m-tile
// mt (output channels 16 mt ..) for the tap groups 2 ng, 2 ng + 1 over all the rows of an item
// (one row group, so one partial set per block). Items of TCC_RC rows; two tiles in static shared
// memory, the next item's image loaded into registers while the current one is computed; the
// finish as for f16.
//
// Measured on an H100 (x (3, 192, 512, 960), 5x5): 4.74 ms, the finish included, against about
// 9.4 for cuDNN's TF32 weight gradient with its transposes; 150 registers a thread at 10 warps
// (the limit there is 168), no spills. Prefetching dy two rows ahead instead of one (166
// registers) measured slower: 4.97 ms.

template <int K>
struct Tcw32 {
  static constexpr int KK = K * K;
  static constexpr int P = K / 2;
  static constexpr int GROUPS = K * (TCC_CIB / 8);      // tap groups (ky, 8 input channels)
  static constexpr int NG = GROUPS / 2;                 // warps per m-tile (two tap groups each)
  static constexpr int THREADS = 32 * NG * 2;
  static constexpr int ROWS = TCC_RC + K - 1;
  static constexpr int NW = K + 7;                      // image words per lane and tap row: kx + 2 s + 1
  // row pitch (words): the words read reach 8 3 + NW - 1
  static constexpr int PITCH = 24 + NW;
  // channel stride (words): >= ROWS PITCH, = 1 mod 8
  static constexpr int CS = ((ROWS * PITCH + 6) / 8) * 8 + 1;
  // 4-value chunks per tile row: words s = 4 c - 4 + P + i, i < 4, must reach PITCH - 1
  static constexpr int NCH = (PITCH - P + 3) / 4 + 1;
  static constexpr int TASKS = TCC_CIB * ROWS * NCH;
  static constexpr int FT = (TASKS + THREADS - 1) / THREADS;  // chunks per thread
};

// 4 floats of `row` at columns a .. a + 3 (0 outside [0, W)); one 16-byte load where `vec` (rows
// start 16-byte aligned, a a multiple of 4) and all four are inside.
__device__ __forceinline__ float4 load4f(const float *row, int a, int W, bool vec) {
  if (vec && a >= 0 && a + 4 <= W) return *reinterpret_cast<const float4 *>(row + a);
  float v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = (a + i >= 0 && a + i < W) ? row[a + i] : 0.f;
  return make_float4(v[0], v[1], v[2], v[3]);
}

// The image chunks of item m for this thread (zeros outside the image).
template <int K>
__device__ __forceinline__ void fetch_x32(const float *x, const Item &m, int CI, int ci0, int H, int W, long long plane,
                                          bool vec, float4 (&cv)[Tcw32<K>::FT]) {
  typedef Tcw32<K> T;
#pragma unroll
  for (int f = 0; f < T::FT; ++f) {
    const int task = threadIdx.x + f * T::THREADS;
    cv[f] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (task < T::TASKS) {
      const int ci = task / (T::ROWS * T::NCH), rem = task - ci * (T::ROWS * T::NCH);
      const int rr = rem / T::NCH, c = rem - rr * T::NCH;
      const int yy = m.y0 - T::P + rr;
      if (yy >= 0 && yy < H)
        cv[f] = load4f(x + ((long long)m.n * CI + ci0 + ci) * plane + (long long)yy * W, m.x0 - 4 + 4 * c, W, vec);
    }
  }
}

// dy of row r of item m, output channels co + 8 q (q < 2): d[2 q] pixels 8 t .. + 3, d[2 q + 1]
// the next 4 (0 past the item's rows or W).
__device__ __forceinline__ void fetch_dy32(const float *dy, const Item &m, int r, int co, int t, int H, int W,
                                           long long plane, bool vec, float4 (&d)[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) d[q] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (r >= min(TCC_RC, H - m.y0)) return;
  const int xx = m.x0 + 8 * t;
  const float *p = dy + ((long long)m.n * TCC_CO + co) * plane + (long long)(m.y0 + r) * W;
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    d[2 * q] = load4f(p + q * 8 * plane, xx, W, vec);
    d[2 * q + 1] = load4f(p + q * 8 * plane, xx + 4, W, vec);
  }
}

// Grid (blocks, CI / TCC_CIB, 1), block Tcw32<K>::THREADS. `vec`: x and dy start 16-byte aligned
// and W is a multiple of 4.
template <int K>
__device__ void grad_weight_f32(const float *x, const float *dy, float *part, int N, int CI, int H, int W, int vec) {
  typedef Tcw32<K> T;
  static_assert(T::GROUPS % 2 == 0 && T::CS % 8 == 1 && T::CS >= T::ROWS * T::PITCH, "tile layout");
  static_assert(4 * T::NCH - 5 + T::P >= T::PITCH - 1 && T::P <= 4, "chunks");
  __shared__ unsigned tiles[2][TCC_CIB * T::CS];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int ng = warp % T::NG, mt = warp / T::NG;
  const int SX = (W + TCC_TC - 1) / TCC_TC, RCH = (H + TCC_RC - 1) / TCC_RC;
  const long long items = (long long)N * SX * RCH;
  const int i0 = (int)(items * blockIdx.x / gridDim.x), i1 = (int)(items * (blockIdx.x + 1) / gridDim.x);
  const int ci0 = blockIdx.y * TCC_CIB;
  const long long plane = (long long)H * W;
  const bool v = vec != 0;
  const int co = 16 * mt + g;  // this lane's output channels co, co + 8
  // tap group u (0, 1) of this warp: tap row ky[u], input channels 8 cb[u] .. + 7; this lane's
  // channel 8 cb + g.
  int base[2];
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    const int grp = 2 * ng + u, ky = grp % K, cb = grp / K;
    base[u] = (8 * cb + g) * T::CS + ky * T::PITCH + 8 * t;
  }
  float acc[2][K][4];
#pragma unroll
  for (int u = 0; u < 2; ++u)
#pragma unroll
    for (int kx = 0; kx < K; ++kx)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[u][kx][e] = 0.f;
  float4 cv[T::FT];
  float4 dn[4];  // the next row's dy
  Item cur = item_of(i0, SX, RCH, TCC_RC);
  if (i0 < i1) {
    fetch_x32<K>(x, cur, CI, ci0, H, W, plane, v, cv);
    fetch_dy32(dy, cur, 0, co, t, H, W, plane, v, dn);
  }
  for (int it = i0; it < i1; ++it) {
    const Item nxt = item_of(it + 1 < i1 ? it + 1 : it, SX, RCH, TCC_RC);
    unsigned *tile = tiles[it & 1];
    // (this tile was last read for item it - 2, before the previous barrier)
#pragma unroll
    for (int f = 0; f < T::FT; ++f) {
      const int task = tid + f * T::THREADS;
      if (task < T::TASKS) {
        const int ci = task / (T::ROWS * T::NCH), rem = task - ci * (T::ROWS * T::NCH);
        const int rr = rem / T::NCH, c = rem - rr * T::NCH;
        unsigned *dst = tile + ci * T::CS + rr * T::PITCH;
        const float w[4] = {cv[f].x, cv[f].y, cv[f].z, cv[f].w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int s = 4 * c - 4 + T::P + i;
          if (s >= 0 && s < T::PITCH) dst[s] = tf32(w[i]);
        }
      }
    }
    __syncthreads();
    if (it + 1 < i1) fetch_x32<K>(x, nxt, CI, ci0, H, W, plane, v, cv);
    const int rows = min(TCC_RC, H - cur.y0);
#pragma unroll 1
    for (int r = 0; r < TCC_RC; ++r) {
      const float4 d[4] = {dn[0], dn[1], dn[2], dn[3]};
      if (r + 1 < TCC_RC) fetch_dy32(dy, cur, r + 1, co, t, H, W, plane, v, dn);
      else if (it + 1 < i1) fetch_dy32(dy, nxt, 0, co, t, H, W, plane, v, dn);
      if (r >= rows) continue;
      // a[q][j]: dy of output channel co + 8 q at pixel 8 t + j, as TF32
      unsigned a[2][8];
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const float4 &lo = d[2 * q], &hi = d[2 * q + 1];
        a[q][0] = tf32(lo.x); a[q][1] = tf32(lo.y); a[q][2] = tf32(lo.z); a[q][3] = tf32(lo.w);
        a[q][4] = tf32(hi.x); a[q][5] = tf32(hi.y); a[q][6] = tf32(hi.z); a[q][7] = tf32(hi.w);
      }
      const unsigned *trow = tile + r * T::PITCH;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        unsigned wd[T::NW];
#pragma unroll
        for (int i = 0; i < T::NW; ++i) wd[i] = trow[base[u] + i];
#pragma unroll
        for (int s = 0; s < 4; ++s)
#pragma unroll
          for (int kx = 0; kx < K; ++kx)
            mma1688(acc[u][kx], a[0][2 * s], a[1][2 * s], a[0][2 * s + 1], a[1][2 * s + 1], wd[kx + 2 * s],
                    wd[kx + 2 * s + 1]);
      }
    }
    cur = nxt;
  }
  // acc[u][kx][e]: output channel co + 8 (e / 2), input channel ci0 + 8 cb[u] + 2 t + e % 2, tap
  // (ky[u], kx).
  const long long count = (long long)TCC_CO * CI * T::KK;
  float *out = part + (long long)blockIdx.x * count;
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    const int grp = 2 * ng + u, ky = grp % K, cb = grp / K;
#pragma unroll
    for (int kx = 0; kx < K; ++kx)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int o = co + 8 * (e >> 1), ci = ci0 + 8 * cb + 2 * t + (e & 1);
        out[((long long)o * CI + ci) * T::KK + ky * K + kx] = acc[u][kx][e];
      }
  }
}

// dw[q] = sum over the partial sets' sums (partials.cuh).
extern "C" __global__ void __launch_bounds__(256) tcc_grad_weight_finish(const float *part, int sets, int count, half_t *dw) {
  sum_partials<F16>(part, sets, count, dw);
}

extern "C" __global__ void __launch_bounds__(256) tcc_grad_weight_finish_f32(const float *part, int sets, int count, float *dw) {
  sum_partials<F32>(part, sets, count, dw);
}

#define TCC_ENTRY(K)                                                                                           \
  extern "C" __global__ void __launch_bounds__(Tcw<K>::THREADS, 1) tcc_grad_weight_f16_k##K(                  \
      const half_t *x, const half_t *dy, float *part, int N, int CI, int H, int W, int vec) {                 \
    grad_weight<K>(x, dy, part, N, CI, H, W, vec);                                                            \
  }

#define TCC_ENTRY_F32(K)                                                                                       \
  extern "C" __global__ void __launch_bounds__(Tcw32<K>::THREADS, 1) tcc_grad_weight_f32_k##K(                \
      const float *x, const float *dy, float *part, int N, int CI, int H, int W, int vec) {                   \
    grad_weight_f32<K>(x, dy, part, N, CI, H, W, vec);                                                        \
  }

TCC_ENTRY(3)
TCC_ENTRY(5)
TCC_ENTRY_F32(3)
TCC_ENTRY_F32(5)

// ---- Forward and input gradient (f16) ----
// The convolution itself, NCHW in and out (no layout transposes), for both directions:
//   out[n, co, y, x] = sum_{ci, ky, kx} wt[co, ci, ky, kx] in[n, ci, y + ky - p, x + kx - p]
// The forward is in = x (CI channels), out = y (CO = 32), wt = w; the input gradient is in = dy
// (CI = 32), out = dx (CO = the forward's input channels), wt[co, ci, ky, kx] =
// w[ci, co, K-1-ky, K-1-kx] (the transposed convolution as a convolution: same padding for odd K).
// A matrix product on the tensor cores (mma.sync m16n8k16, f16 operands, f32 accumulation):
// M = 32 output channels per block (two m-tiles; blockIdx.x's group of 32, zeros past CO), N = the
// pixels (an n-tile is 8 consecutive columns of one row), the reduction over (input channel block
// of 16, tap (ky, kx), channel within the block): a k-step is one tap and 16 channels, B row
// 2 q + e <-> channel 2 q + e of the block. The image tile in shared memory holds *channel pairs*:
// word [q][row][s] = channels 2 q (low half) and 2 q + 1 at tile column s, so that b0 (rows 2t,
// 2t + 1, pixel g) and b1 (rows 2t + 8, 2t + 9) are one aligned 32-bit load each: pairs t and
// t + 4 at column 8 j + g + kx. Pair stride CS = 8 mod 16 words: lanes (g, t) hit banks 8 t + g
// (or 24 t + g): no conflict. The A operand (weights) is prepared once per call by
// tcc_conv_weights in fragment order (per (group, channel block, tap, m-tile) 32 lanes x 4 words:
// a0 .. a3 of the PTX layout), so a lane's fragment is one 16-byte shared load.
//
// Block: 8 warps, a tile of TCC_FH = 16 rows x 32 columns; warp w computes rows 2w, 2w + 1, four
// n-tiles each, both m-tiles (64 f32 accumulators a lane). For each tap column kx the warp walks
// the K + 1 tile rows its two output rows read: each image fragment loaded serves both output
// rows (tap rows ky = tr and tr - 1), and the weight fragments of the previous tap row are kept.
// Input channel blocks of 16 are double-buffered: the weights of the next block by cp.async, the
// image by 16-byte global loads into registers, one chunk (two channels x 8 columns) at a time
// spread over the product's steps and stored into the other tile as pairs (__byte_perm): at 2
// blocks a multiprocessor (128 registers a thread) a whole tile in registers spilled. One barrier
// per channel block. f32 results rounded to f16 and stored as 32-bit pairs.
//
// Measured on an H100 at conv2's size (x (3, 192, 512, 960), 5x5; host clock through conv2d under
// autodiff): forward 1.11 ms (cuDNN 3.20 with its layout transposes), input gradient 1.38 ms
// (cuDNN 1.54). 128 registers a thread (2 blocks of 8 warps a multiprocessor, 108 KB of shared
// memory each; ptxas reports 64 bytes of spills). Not tried yet: staging the output through
// shared memory for whole-sector stores (the input gradient writes 566 MB as 16-byte pieces), a
// wider warp tile (fewer weight reloads per mma).

#define TCC_FW 32     // tile columns
#define TCC_FH 16     // tile rows
#define TCC_FWARPS 8  // warps (two tile rows each)

template <int K>
struct Tcf {
  static constexpr int KK = K * K;
  static constexpr int P = K / 2;
  static constexpr int ROWS = TCC_FH + K - 1;
  // tile word s <-> image column x0 - 8 + s; words read: 8 - P .. 8 - P + 31 + K - 1 (< 44);
  // stored in 8-word chunks, the half from word 44 dropped
  static constexpr int PITCH = 44;
  static constexpr int NCH = 6;  // 8-column chunks a row: columns x0 - 8 .. x0 + 39
  // pair stride: >= ROWS PITCH, = 8 mod 16 (a multiple of 4: 16-byte stores)
  static constexpr int CS0 = (ROWS * PITCH + 7) / 8 * 8;
  static constexpr int CS = CS0 % 16 == 0 ? CS0 + 8 : CS0;
  static constexpr int XWORDS = 8 * CS;         // image tile words
  static constexpr int WVEC = KK * 2 * 32;      // weight tile: 16-byte vectors
  static constexpr int THREADS = 32 * TCC_FWARPS;
  static constexpr int TASKS = 8 * ROWS * NCH;  // (pair, row, chunk)
  static constexpr int FT = (TASKS + THREADS - 1) / THREADS;
  static constexpr int S = K * (K + 1) / FT;  // product steps (kx, tr) per image chunk in flight
  static constexpr int SMEM = 2 * (XWORDS * 4 + WVEC * 16);  // bytes, dynamic
};

// The weights in the A-fragment order of tcc_conv: word idx = ((((grp NCB + cb) KK + s) 2 + mt)
// 32 + lane) 4 + i holds wt[co, ci], wt[co, ci + 1] at tap s (ky K + kx) with co = 32 grp + 16 mt
// + g + 8 (i & 1), ci = 16 cb + 2 t + 8 (i >> 1) (0 where co >= CO). `flip`: w is the forward's
// weight (CI, CO, K, K) of the input gradient (wt = its transposed, flipped kernel); else w is
// (CO, CI, K, K).
extern "C" __global__ void __launch_bounds__(256) tcc_conv_weights(const half_t *w, unsigned *wf, int CO, int CI, int K,
                                                                   int flip, int words) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= words) return;
  const int KK = K * K, NCB = CI / 16;
  const int i = idx & 3, lane = (idx >> 2) & 31, mt = (idx >> 7) & 1;
  int rest = idx >> 8;
  const int s = rest % KK;
  rest /= KK;
  const int cb = rest % NCB, grp = rest / NCB;
  const int g = lane >> 2, t = lane & 3;
  const int co = 32 * grp + 16 * mt + g + 8 * (i & 1), ci = 16 * cb + 2 * t + 8 * (i >> 1);
  const int ky = s / K, kx = s - ky * K;
  unsigned v = 0u;
  if (co < CO) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const long long at = flip ? (((long long)(ci + e) * CO + co) * K + (K - 1 - ky)) * K + (K - 1 - kx)
                                : (((long long)co * CI + ci + e) * K + ky) * K + kx;
      v |= (unsigned)w[at] << (16 * e);
    }
  }
  wf[idx] = v;
}

// Image chunks F0 .. F1 - 1 of this thread for channel block cb: task (q, rr, c) = channels
// 16 cb + 2 q, + 1, image row y0 - P + rr, columns x0 - 8 + 8 c .. + 7 (zeros outside the image).
template <int K, int F0, int F1>
__device__ __forceinline__ void fetch_in(const half_t *in, int cb, int H, int W, int x0, int y0, long long plane, bool vec,
                                         uint4 (&c0)[F1 - F0], uint4 (&c1)[F1 - F0], int fbase = 0) {
  typedef Tcf<K> T;
#pragma unroll
  for (int f = F0; f < F1; ++f) {
    const int task = threadIdx.x + (fbase + f) * T::THREADS;
    c0[f - F0] = make_uint4(0u, 0u, 0u, 0u);
    c1[f - F0] = c0[f - F0];
    if (task < T::TASKS) {
      const int q = task / (T::ROWS * T::NCH), rem = task - q * (T::ROWS * T::NCH);
      const int rr = rem / T::NCH, c = rem - rr * T::NCH;
      const int yy = y0 - T::P + rr;
      if (yy >= 0 && yy < H) {
        const half_t *row = in + (long long)(16 * cb + 2 * q) * plane + (long long)yy * W;
        c0[f - F0] = load8h(row, x0 - 8 + 8 * c, W, vec);
        c1[f - F0] = load8h(row + plane, x0 - 8 + 8 * c, W, vec);
      }
    }
  }
}

// Chunks F0 .. F1 - 1 (fetch_in) into the image tile xt as channel pairs: word (q, rr, 8 c + i) =
// column i of the chunk, channel 2 q in the low half (the words from PITCH on dropped).
template <int K, int F0, int F1>
__device__ __forceinline__ void store_in(unsigned *xt, const uint4 (&c0)[F1 - F0], const uint4 (&c1)[F1 - F0],
                                         int fbase = 0) {
  typedef Tcf<K> T;
#pragma unroll
  for (int f = F0; f < F1; ++f) {
    const int task = threadIdx.x + (fbase + f) * T::THREADS;
    if (task < T::TASKS) {
      const int q = task / (T::ROWS * T::NCH), rem = task - q * (T::ROWS * T::NCH);
      const int rr = rem / T::NCH, c = rem - rr * T::NCH;
      uint4 *dst = reinterpret_cast<uint4 *>(xt + q * T::CS + rr * T::PITCH + 8 * c);
      const uint4 a = c0[f - F0], b = c1[f - F0];
      dst[0] = make_uint4(__byte_perm(a.x, b.x, 0x5410), __byte_perm(a.x, b.x, 0x7632), __byte_perm(a.y, b.y, 0x5410),
                          __byte_perm(a.y, b.y, 0x7632));
      if (8 * c + 4 < T::PITCH)
        dst[1] = make_uint4(__byte_perm(a.z, b.z, 0x5410), __byte_perm(a.z, b.z, 0x7632), __byte_perm(a.w, b.w, 0x5410),
                            __byte_perm(a.w, b.w, 0x7632));
    }
  }
}

// The weight fragments of channel block cb into `dst` (cp.async, 16 bytes a copy).
template <int K>
__device__ __forceinline__ void fetch_w(const uint4 *wf, uint4 *dst) {
  for (int i = threadIdx.x; i < Tcf<K>::WVEC; i += Tcf<K>::THREADS)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst + i)), "l"(wf + i) : "memory");
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// Grid (groups x ceil(W / 32), ceil(H / 16), N) with the group of 32 output channels fastest
// (the groups of one tile read the same image tile close together in time), block 256, dynamic
// shared memory Tcf<K>::SMEM. in (N, CI, H, W), CI a multiple of 16; wf from tcc_conv_weights;
// out (N, CO, H, W). `vec`: in starts 16-byte aligned and W is a multiple of 8.
template <int K>
__device__ void conv_fwd(const half_t *in, const uint4 *wf, half_t *out, int CI, int CO, int H, int W, int vec) {
  typedef Tcf<K> T;
  static_assert(T::CS % 16 == 8 && T::CS % 4 == 0 && T::CS >= T::ROWS * T::PITCH, "tile layout");
  static_assert(8 - T::P + 31 + K - 1 < T::PITCH && 8 * T::NCH >= T::PITCH, "chunks");
  extern __shared__ uint4 smem[];
  unsigned *xs = reinterpret_cast<unsigned *>(smem);  // [2][XWORDS]
  uint4 *ws = smem + 2 * T::XWORDS / 4;               // [2][WVEC]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int groups = (CO + 31) / 32;
  const int grp = blockIdx.x % groups, x0 = (blockIdx.x / groups) * TCC_FW, y0 = blockIdx.y * TCC_FH, n = blockIdx.z;
  const int NCB = CI / 16;
  const long long plane = (long long)H * W;
  const bool v = vec != 0;
  const half_t *img = in + (long long)n * CI * plane;
  const uint4 *wg = wf + (long long)grp * NCB * T::WVEC;
  float acc[2][2][4][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][r][j][e] = 0.f;
  {
    uint4 c0[T::FT], c1[T::FT];
    fetch_in<K, 0, T::FT>(img, 0, H, W, x0, y0, plane, v, c0, c1);
    store_in<K, 0, T::FT>(xs, c0, c1);
  }
  fetch_w<K>(wg, ws);
  // this lane's image word for pair t, tile row 2 warp, column 8 - P + g
  const int lbase = t * T::CS + 2 * warp * T::PITCH + 8 - T::P + g;
  for (int cb = 0; cb < NCB; ++cb) {
    const unsigned *xt = xs + (cb & 1) * T::XWORDS;
    const uint4 *wt = ws + (cb & 1) * T::WVEC;
    unsigned *xn = xs + ((cb + 1) & 1) * T::XWORDS;
    const bool next = cb + 1 < NCB;
    asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
    // The next block's weights (cp.async) and image (through registers, stored during this
    // block's product): the other tiles were last read for block cb - 1, before this barrier.
    if (next) fetch_w<K>(wg + (long long)(cb + 1) * T::WVEC, ws + ((cb + 1) & 1) * T::WVEC);
    uint4 c0[1], c1[1];  // one image chunk in flight
    const unsigned *xl = xt + lbase;
#pragma unroll
    for (int kx = 0; kx < K; ++kx) {
      uint4 ap[2], ac[2];  // weight fragments of tap rows tr - 1 and tr
#pragma unroll
      for (int tr = 0; tr <= K; ++tr) {
        // chunk f loaded at step S f, stored at S (f + 1) (the last after the loop)
        const int step = kx * (K + 1) + tr;
        if (next && step % T::S == 0 && step / T::S < T::FT) {
          if (step > 0) store_in<K, 0, 1>(xn, c0, c1, step / T::S - 1);
          fetch_in<K, 0, 1>(img, cb + 1, H, W, x0, y0, plane, v, c0, c1, step / T::S);
        }
        if (tr < K) {
          ac[0] = wt[((tr * K + kx) * 2 + 0) * 32 + lane];
          ac[1] = wt[((tr * K + kx) * 2 + 1) * 32 + lane];
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int off = tr * T::PITCH + 8 * j + kx;
          const unsigned b0 = xl[off], b1 = xl[off + 4 * T::CS];
          // output row 0 reads tile row tr at ky = tr, output row 1 at ky = tr - 1
          if (tr < K) {
            mma16816(acc[0][0][j], ac[0].x, ac[0].y, ac[0].z, ac[0].w, b0, b1);
            mma16816(acc[1][0][j], ac[1].x, ac[1].y, ac[1].z, ac[1].w, b0, b1);
          }
          if (tr > 0) {
            mma16816(acc[0][1][j], ap[0].x, ap[0].y, ap[0].z, ap[0].w, b0, b1);
            mma16816(acc[1][1][j], ap[1].x, ap[1].y, ap[1].z, ap[1].w, b0, b1);
          }
        }
        ap[0] = ac[0];
        ap[1] = ac[1];
      }
    }
    if (next) store_in<K, 0, 1>(xn, c0, c1, T::FT - 1);
  }
  // acc[mt][r][j][e]: output channel 32 grp + 16 mt + g + 8 (e / 2), row y0 + 2 warp + r, column
  // x0 + 8 j + 2 t + e % 2
  const bool pairs = (W & 1) == 0;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int co = 32 * grp + 16 * mt + g + 8 * h;
      if (co >= CO) continue;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int y = y0 + 2 * warp + r;
        if (y >= H) continue;
        half_t *orow = out + (((long long)n * CO + co) * H + y) * W;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int x = x0 + 8 * j + 2 * t;
          const float lo = acc[mt][r][j][2 * h], hi = acc[mt][r][j][2 * h + 1];
          if (pairs && x + 1 < W) {
            *reinterpret_cast<unsigned *>(orow + x) = pack2(lo, hi);
          } else {
            if (x < W) orow[x] = f2h(lo);
            if (x + 1 < W) orow[x + 1] = f2h(hi);
          }
        }
      }
    }
}

#define TCC_CONV_ENTRY(K)                                                                                      \
  extern "C" __global__ void __launch_bounds__(Tcf<K>::THREADS, 2) tcc_conv_f16_k##K(                        \
      const half_t *in, const uint4 *wf, half_t *out, int CI, int CO, int H, int W, int vec) {                \
    conv_fwd<K>(in, wf, out, CI, CO, H, W, vec);                                                              \
  }

TCC_CONV_ENTRY(3)
TCC_CONV_ENTRY(5)
