// Tensor-core matrix products shared by vsr's convolution kernels (prepended after storage.cuh to
// the .cu files that use them): PTX `mma.sync` with f32 accumulation, d += a b for a 16 x k
// row-major tile a, a k x 8 column-major tile b and the 16 x 8 tile d, in the register layouts of
// the PTX ISA (g = lane / 4, t = lane % 4):
//   m16n8k16, f16 operands: a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..2t+9), a3 (g+8, 2t+8..),
//     each two halves in one register; b0 (2t..2t+1, g), b1 (2t+8..2t+9, g);
//   m16n8k8, TF32 operands: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); b0 (t, g), b1 (t+4, g);
//   both: d0, d1 (g, 2t..2t+1), d2, d3 (g+8, 2t..2t+1).

__device__ __forceinline__ void mma16816(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma1688(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                        unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// f32 rounded to TF32 (to nearest, ties away from zero), as an operand register.
__device__ __forceinline__ unsigned tf32(float f) {
  unsigned u;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(f));
  return u;
}

// Two f32 values as f16 in one register, lo in the low half.
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  return (unsigned)f2h(lo) | ((unsigned)f2h(hi) << 16);
}
