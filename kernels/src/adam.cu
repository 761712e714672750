// Adam with L2 weight decay (PyTorch's `torch.optim.Adam(weight_decay=...)`, as Burn's `Adam`
// computes it) in one pass over a parameter, for LibTorch's CUDA f32 tensors
// (kernels/src/adam.rs compiles this with NVRTC at run time and launches it on LibTorch's
// current stream). Burn's tensor-op Adam is about 15 element-wise kernels per parameter; on a
// model of small parameters (VSRNet: 8 tensors, 160 k values) each is a launch of a few
// microseconds of work, and they run after the step's read-back of the loss, on an idle GPU.
//
// Per element, in Burn's order of f32 operations (each rounded as there: no contraction into
// fused multiply-adds), with cf = sqrt(1 - b2^t) / (1 - b1^t) and ec = eps sqrt(1 - b2^t) from
// the host:
//   g' = p wd + g
//   m' = m b1 + g' (1 - b1)          (first step: g' (1 - b1))
//   v' = v b2 + g'^2 (1 - b2)        (first step: g'^2 (1 - b2))
//   p' = p - (m' cf / (sqrt(v') + ec)) lr
// `gate` (may be null): where the value it points to is not finite (inf or NaN: a step whose loss
// or gradients overflowed), the step is skipped on the device: p' = p, and the moments as they were
// (0 on the first step), so that the host need not read the check back before the update.

extern "C" __global__ void adam_f32(const float *p, const float *g, const float *m, const float *v, float *po,
                                    float *mo, float *vo, long long n, float lr, float b1, float b2, float cf,
                                    float ec, float wd, const float *gate, int first) {
  const bool skip = gate != nullptr && !isfinite(*gate);
  const float c1 = __fsub_rn(1.f, b1), c2 = __fsub_rn(1.f, b2);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float pi = p[i];
    if (skip) {
      po[i] = pi;
      mo[i] = first ? 0.f : m[i];
      vo[i] = first ? 0.f : v[i];
      continue;
    }
    const float gi = wd != 0.f ? __fadd_rn(__fmul_rn(pi, wd), g[i]) : g[i];
    const float g2 = __fmul_rn(gi, gi);
    const float mi = first ? __fmul_rn(gi, c1) : __fadd_rn(__fmul_rn(m[i], b1), __fmul_rn(gi, c1));
    const float vi = first ? __fmul_rn(g2, c2) : __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(g2, c2));
    const float u = __fdiv_rn(__fmul_rn(mi, cf), __fadd_rn(__fsqrt_rn(vi), ec));
    po[i] = __fsub_rn(pi, __fmul_rn(u, lr));
    mo[i] = mi;
    vo[i] = vi;
  }
}
