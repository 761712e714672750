// Storage types shared by vsr's CUDA C kernels (prepended to each .cu by kernels/src/nvrtc.rs's
// callers): values are stored as f32 or f16 and computed in f32. f16 <-> f32 through PTX, so that
// no CUDA header is needed at run time.

typedef unsigned short half_t;

__device__ __forceinline__ float h2f(half_t h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

__device__ __forceinline__ half_t f2h(float f) {
  half_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

// Scalar and four-value (16- or 8-byte, aligned) loads and stores, in f32 registers.
struct F32 {
  typedef float T;
  static __device__ __forceinline__ float load(const T *p, long long i) { return p[i]; }
  static __device__ __forceinline__ void store(T *p, long long i, float v) { p[i] = v; }
  static __device__ __forceinline__ void load4(const T *p, long long i, float v[4]) {
    float4 t = reinterpret_cast<const float4 *>(p)[i];
    v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
  }
  static __device__ __forceinline__ void store4(T *p, long long i, const float v[4]) {
    reinterpret_cast<float4 *>(p)[i] = make_float4(v[0], v[1], v[2], v[3]);
  }
};

struct F16 {
  typedef half_t T;
  static __device__ __forceinline__ float load(const T *p, long long i) { return h2f(p[i]); }
  static __device__ __forceinline__ void store(T *p, long long i, float v) { p[i] = f2h(v); }
  static __device__ __forceinline__ void load4(const T *p, long long i, float v[4]) {
    uint2 t = reinterpret_cast<const uint2 *>(p)[i];
    v[0] = h2f((half_t)(t.x & 0xffffu)); v[1] = h2f((half_t)(t.x >> 16));
    v[2] = h2f((half_t)(t.y & 0xffffu)); v[3] = h2f((half_t)(t.y >> 16));
  }
  static __device__ __forceinline__ void store4(T *p, long long i, const float v[4]) {
    uint2 t;
    t.x = (unsigned)f2h(v[0]) | ((unsigned)f2h(v[1]) << 16);
    t.y = (unsigned)f2h(v[2]) | ((unsigned)f2h(v[3]) << 16);
    reinterpret_cast<uint2 *>(p)[i] = t;
  }
};
