//! The CubeCL kernels of the warp. Storage type `F` is defined at launch from the tensors' dtype
//! (f32, f16, bf16 from one source); all arithmetic is f32.
//!
//! # Deterministic image gradient
//! `grad_img[b,c,q] = sum over outputs o whose bilinear footprint touches q of w_k(o) * g[b,c,o]`.
//! With arbitrary flow the number of contributors per input pixel is unbounded, so instead of a
//! gather (or a sort by target pixel) the contributions are summed *exactly* in 64-bit fixed point,
//! where addition is associative, so the result does not depend on the order in which threads add:
//! 1. [`warp_backward_flow_kernel`] (one thread per output pixel): writes `grad_flow` (a pure
//!    gather) and records, per target element, the largest magnitude of any contribution
//!    (`atomicMax` on the f32 bits of `|contribution|`, which order like the values; max is
//!    order-independent).
//! 2. [`warp_backward_img_scatter_kernel`]: converts every contribution to a signed fixed-point
//!    integer whose unit is `2^(e_max - 126 - T)` (so the largest contribution is `< 2^T`, with
//!    `T = 63 - ceil(log2(4*H*W + 1))` so that up to `4*H*W` contributions cannot overflow) and adds
//!    it into a two's complement 64-bit accumulator stored as two `u32`s (low word `atomicAdd`;
//!    the carry is detected from the returned old value and added to the high word). Integer
//!    addition modulo 2^64 is exact, so the final accumulator is the same bits whatever the order.
//! 3. [`warp_backward_img_resolve_kernel`]: converts the accumulator back to float (`F`).
//!
//! Precision: every contribution is truncated at `2^-T` of the largest one into the same pixel
//! (T = 51 for 24x40, 40 for 1920x1080), far below f32's 24-bit mantissa, so the result is
//! accurate to about 1 ulp of f32 plus the usual cancellation error. Non-finite contributions make
//! the pixel NaN. Only 32-bit integer atomics are used, so it runs on every CubeCL runtime
//! (WGSL has no 64-bit or float atomics).
//!
//! Every kernel indexes its tensors as contiguous row-major buffers (`ABSOLUTE_POS`, `base + o`),
//! ignoring strides: the launch code passes contiguous tensors only, including the scratch
//! buffers (`emax`, `acc`), which are rank 1 because CUDA pads the rows of freshly allocated
//! multi-dimensional buffers (see `zeros_linear` in `backend`).

use cubecl::prelude::*;

/// One axis of the footprint: sample coordinate `pos + d` clamped to `[0, size-1]`.
/// Returns (lower index, upper index, fractional weight of the upper one, d(clamped)/d(d)).
/// The derivative follows PyTorch's border padding: it is 0 on and beyond the border.
#[cube]
fn axis(pos: usize, d: f32, size: usize) -> (usize, usize, f32, f32) {
    let raw = f32::cast_from(pos) + d;
    let hi = f32::cast_from(size - 1);
    let s = clamp(raw, f32::new(0.0), hi);
    let f = s.floor();
    let i0 = min(usize::cast_from(f), size - 1);
    let i1 = min(i0 + 1, size - 1);
    let mut mask = f32::new(0.0);
    if raw > f32::new(0.0) && raw < hi {
        mask = f32::new(1.0);
    }
    (i0, i1, s - f, mask)
}

/// The bilinear footprint of output pixel `p` displaced by `(dx, dy)` in an `h x w` plane: the
/// offsets of its four source pixels (`oYX`, rows then columns), their weights, the fractional
/// parts, and the border masks of the flow derivative (see [`axis`]).
#[derive(CubeType)]
struct Footprint {
    o00: usize,
    o01: usize,
    o10: usize,
    o11: usize,
    w00: f32,
    w01: f32,
    w10: f32,
    w11: f32,
    wx: f32,
    wy: f32,
    mx: f32,
    my: f32,
}

#[cube]
fn footprint(p: usize, dx: f32, dy: f32, h: usize, w: usize) -> Footprint {
    let (x0, x1, wx, mx) = axis(p % w, dx, w);
    let (y0, y1, wy, my) = axis(p / w, dy, h);
    let one = f32::new(1.0);
    Footprint {
        o00: y0 * w + x0,
        o01: y0 * w + x1,
        o10: y1 * w + x0,
        o11: y1 * w + x1,
        w00: (one - wx) * (one - wy),
        w01: wx * (one - wy),
        w10: (one - wx) * wy,
        w11: wx * wy,
        wx,
        wy,
        mx,
        my,
    }
}

#[cube(launch, address_type = "dynamic")]
pub fn warp_forward_kernel<F: Float>(
    img: &Tensor<F>,
    flow: &Tensor<F>,
    out: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let channels = img.shape(1);
    let h = img.shape(2);
    let w = img.shape(3);
    let hw = h * w;
    if ABSOLUTE_POS >= img.shape(0) * hw {
        terminate!();
    }
    let b = ABSOLUTE_POS / hw;
    let p = ABSOLUTE_POS % hw;
    let fb = b * 2 * hw + p;
    let t = footprint(p, f32::cast_from(flow[fb]), f32::cast_from(flow[fb + hw]), h, w);
    let mut base = b * channels * hw;
    for _c in 0..channels {
        let v = t.w00 * f32::cast_from(img[base + t.o00])
            + t.w01 * f32::cast_from(img[base + t.o01])
            + t.w10 * f32::cast_from(img[base + t.o10])
            + t.w11 * f32::cast_from(img[base + t.o11]);
        out[base + p] = F::cast_from(v);
        base += hw;
    }
}

#[cube]
fn record_max(emax: &mut Tensor<Atomic<u32>>, i: usize, contribution: f32) {
    let mag = contribution.to_bits() & 0x7FFF_FFFFu32;
    if mag != 0 {
        emax[i].fetch_max(mag);
    }
}

/// Pass 1: `grad_flow` and the per-element maximum contribution magnitude.
#[cube(launch, address_type = "dynamic")]
pub fn warp_backward_flow_kernel<F: Float>(
    img: &Tensor<F>,
    flow: &Tensor<F>,
    grad_out: &Tensor<F>,
    grad_flow: &mut Tensor<F>,
    emax: &mut Tensor<Atomic<u32>>,
    #[comptime] record_emax: bool,
    #[define(F)] _dtype: StorageType,
) {
    let channels = img.shape(1);
    let h = img.shape(2);
    let w = img.shape(3);
    let hw = h * w;
    if ABSOLUTE_POS >= img.shape(0) * hw {
        terminate!();
    }
    let b = ABSOLUTE_POS / hw;
    let p = ABSOLUTE_POS % hw;
    let fb = b * 2 * hw + p;
    let t = footprint(p, f32::cast_from(flow[fb]), f32::cast_from(flow[fb + hw]), h, w);
    let one = f32::new(1.0);
    let mut gu = f32::new(0.0);
    let mut gv = f32::new(0.0);
    let mut base = b * channels * hw;
    for _c in 0..channels {
        let g = f32::cast_from(grad_out[base + p]);
        let v00 = f32::cast_from(img[base + t.o00]);
        let v01 = f32::cast_from(img[base + t.o01]);
        let v10 = f32::cast_from(img[base + t.o10]);
        let v11 = f32::cast_from(img[base + t.o11]);
        gu += g * ((one - t.wy) * (v01 - v00) + t.wy * (v11 - v10));
        gv += g * ((one - t.wx) * (v10 - v00) + t.wx * (v11 - v01));
        if record_emax {
            record_max(emax, base + t.o00, t.w00 * g);
            record_max(emax, base + t.o01, t.w01 * g);
            record_max(emax, base + t.o10, t.w10 * g);
            record_max(emax, base + t.o11, t.w11 * g);
        }
        base += hw;
    }
    grad_flow[fb] = F::cast_from(gu * t.mx);
    grad_flow[fb + hw] = F::cast_from(gv * t.my);
}

/// Adds `contribution` as a 64-bit fixed-point integer into `acc[2i]` (low) / `acc[2i+1]` (high).
#[cube]
fn fixed_add(
    acc: &mut Tensor<Atomic<u32>>,
    emax: &Tensor<u32>,
    i: usize,
    contribution: f32,
    t_bits: u32,
) {
    let bits = contribution.to_bits();
    let mag = bits & 0x7FFF_FFFFu32;
    if mag != 0 && mag < 0x7F80_0000u32 {
        let mut e = i32::cast_from(mag >> 23);
        let mut m = mag & 0x007F_FFFFu32;
        if e == 0 {
            e = 1;
        } else {
            m = m | 0x0080_0000u32;
        }
        let mut em = i32::cast_from(emax[i] >> 23);
        if em == 0 {
            em = 1;
        }
        // value = m * 2^(e-150); unit = 2^(em-126-T)  =>  fixed = m * 2^(e - em + T - 24)
        let sh = e - em + i32::cast_from(t_bits) - 24;
        let mut lo = 0u32;
        let mut hi = 0u32;
        if sh >= 32 {
            hi = m << u32::cast_from(sh - 32);
        } else if sh > 0 {
            lo = m << u32::cast_from(sh);
            hi = m >> u32::cast_from(32 - sh);
        } else if sh == 0 {
            lo = m;
        } else if sh > -24 {
            lo = m >> u32::cast_from(-sh);
        }
        if lo != 0 || hi != 0 {
            if (bits >> 31) != 0 {
                // two's complement negation of (hi, lo), without overflowing u32 arithmetic
                if lo == 0 {
                    hi = (hi ^ 0xFFFF_FFFFu32) + 1;
                } else {
                    lo = (lo ^ 0xFFFF_FFFFu32) + 1;
                    hi = hi ^ 0xFFFF_FFFFu32;
                }
            }
            let mut hi_add = hi;
            if lo != 0 {
                let old = acc[2 * i].fetch_add(lo);
                if old > 0xFFFF_FFFFu32 - lo {
                    // carry out of the low word
                    if hi == 0xFFFF_FFFFu32 {
                        hi_add = 0;
                    } else {
                        hi_add = hi + 1;
                    }
                }
            }
            if hi_add != 0 {
                acc[2 * i + 1].fetch_add(hi_add);
            }
        }
    }
}

/// Pass 2: every contribution into the fixed-point accumulators.
#[cube(launch, address_type = "dynamic")]
pub fn warp_backward_img_scatter_kernel<F: Float>(
    flow: &Tensor<F>,
    grad_out: &Tensor<F>,
    emax: &Tensor<u32>,
    acc: &mut Tensor<Atomic<u32>>,
    t_bits: u32,
    #[define(F)] _dtype: StorageType,
) {
    let channels = grad_out.shape(1);
    let h = grad_out.shape(2);
    let w = grad_out.shape(3);
    let hw = h * w;
    if ABSOLUTE_POS >= grad_out.shape(0) * hw {
        terminate!();
    }
    let b = ABSOLUTE_POS / hw;
    let p = ABSOLUTE_POS % hw;
    let fb = b * 2 * hw + p;
    let t = footprint(p, f32::cast_from(flow[fb]), f32::cast_from(flow[fb + hw]), h, w);
    let mut base = b * channels * hw;
    for _c in 0..channels {
        let g = f32::cast_from(grad_out[base + p]);
        fixed_add(acc, emax, base + t.o00, t.w00 * g, t_bits);
        fixed_add(acc, emax, base + t.o01, t.w01 * g, t_bits);
        fixed_add(acc, emax, base + t.o10, t.w10 * g, t_bits);
        fixed_add(acc, emax, base + t.o11, t.w11 * g, t_bits);
        base += hw;
    }
}

/// Pass 3: fixed point back to float.
#[cube(launch, address_type = "dynamic")]
pub fn warp_backward_img_resolve_kernel<F: Float>(
    emax: &Tensor<u32>,
    acc: &Tensor<u32>,
    grad_img: &mut Tensor<F>,
    t_bits: u32,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= grad_img.len() {
        terminate!();
    }
    let m = emax[i];
    let lo = acc[2 * i];
    let hi = acc[2 * i + 1];
    let mut out = f32::new(0.0);
    if m >= 0x7F80_0000u32 {
        // NaN from a run-time value: CubeCL's CUDA back end emits a constant's bitcast as
        // `reinterpret_cast<float const&>(literal)`, which NVRTC rejects (not an lvalue).
        out = f32::from_bits(m | 0x0040_0000u32);
    } else if lo != 0 || hi != 0 {
        let neg = (hi >> 31) != 0;
        let mut mlo = lo;
        let mut mhi = hi;
        if neg {
            if lo == 0 {
                mhi = (hi ^ 0xFFFF_FFFFu32) + 1;
            } else {
                mlo = (lo ^ 0xFFFF_FFFFu32) + 1;
                mhi = hi ^ 0xFFFF_FFFFu32;
            }
        }
        let mut em = i32::cast_from(m >> 23);
        if em == 0 {
            em = 1;
        }
        let k = em - 126 - i32::cast_from(t_bits);
        let k1 = k / 2;
        let k2 = k - k1;
        let s1 = f32::from_bits(u32::cast_from(k1 + 127) << 23);
        let s2 = f32::from_bits(u32::cast_from(k2 + 127) << 23);
        let v = (f32::cast_from(mhi) * f32::new(4294967296.0) + f32::cast_from(mlo)) * s1 * s2;
        out = v;
        if neg {
            out = -v;
        }
    }
    grad_img[i] = F::cast_from(out);
}

/// Optional non-deterministic variant of passes 1-3 for the image gradient: plain float atomics
/// into an f32 buffer (only where the runtime supports `atomicAdd` on f32, e.g. CUDA).
#[cube(launch, address_type = "dynamic")]
pub fn warp_backward_img_atomic_kernel<F: Float>(
    flow: &Tensor<F>,
    grad_out: &Tensor<F>,
    grad_img: &mut Tensor<Atomic<f32>>,
    #[define(F)] _dtype: StorageType,
) {
    let channels = grad_out.shape(1);
    let h = grad_out.shape(2);
    let w = grad_out.shape(3);
    let hw = h * w;
    if ABSOLUTE_POS >= grad_out.shape(0) * hw {
        terminate!();
    }
    let b = ABSOLUTE_POS / hw;
    let p = ABSOLUTE_POS % hw;
    let fb = b * 2 * hw + p;
    let t = footprint(p, f32::cast_from(flow[fb]), f32::cast_from(flow[fb + hw]), h, w);
    let mut base = b * channels * hw;
    for _c in 0..channels {
        let g = f32::cast_from(grad_out[base + p]);
        grad_img[base + t.o00].fetch_add(t.w00 * g);
        grad_img[base + t.o01].fetch_add(t.w01 * g);
        grad_img[base + t.o10].fetch_add(t.w10 * g);
        grad_img[base + t.o11].fetch_add(t.w11 * g);
        base += hw;
    }
}
