//! Host model of the deterministic image-gradient passes of the CubeCL warp backward
//! (`cube::kernel`, passes 1-3), in plain Rust with `u64` arithmetic.
//!
//! Each function does on the host, bit for bit, what one pass does on the device, so a test can
//! feed a pass the buffers the device produced for the previous one and compare its output
//! exactly: a mismatch names the faulty pass (see `check_passes_against_model` in the kernel
//! tests). The float steps (bilinear weights, contributions, the final scaling) are the same f32
//! operations in the same order as in the kernels; the integer steps use `u64` where the kernels
//! use pairs of `u32` with carries.
//!
//! Layouts: `img`, `grad_out`, `emax`, `grad_img` are contiguous (B,C,H,W); `flow` contiguous
//! (B,2,H,W); `acc` holds element `i`'s accumulator as `acc[2i]` (low word), `acc[2i+1]` (high).

/// Bits of fixed-point headroom `T = 63 - ceil(log2(4*H*W + 1))`: up to `4*H*W` contributions
/// (the most one element can receive: every output pixel touches it with at most one weight per
/// corner) of magnitude `< 2^T` units cannot overflow a signed 64-bit accumulator.
pub fn headroom_bits(h: usize, w: usize) -> u32 {
    let n = 4 * (h as u64) * (w as u64);
    63 - (64 - n.leading_zeros())
}

/// One axis of the bilinear footprint, as `axis` in the kernels: sample coordinate `pos + d`
/// clamped to `[0, size-1]`; returns (lower index, upper index, weight of the upper one).
pub fn axis(pos: usize, d: f32, size: usize) -> (usize, usize, f32) {
    let raw = pos as f32 + d;
    let hi = (size - 1) as f32;
    // The kernel's `clamp` (min then max); identical for every non-NaN `raw`.
    let s = raw.min(hi).max(0.0);
    let f = s.floor();
    let i0 = (f as usize).min(size - 1);
    let i1 = (i0 + 1).min(size - 1);
    (i0, i1, s - f)
}

/// Every contribution `(target element, w_k * g)` of the image gradient, in the order the kernels
/// form them (per output pixel, per channel, corners 00, 01, 10, 11).
pub fn contributions<'a>(
    shape: [usize; 4],
    flow: &'a [f32],
    grad_out: &'a [f32],
) -> impl Iterator<Item = (usize, f32)> + 'a {
    let [b, c, h, w] = shape;
    let hw = h * w;
    assert_eq!(flow.len(), b * 2 * hw, "flow length");
    assert_eq!(grad_out.len(), b * c * hw, "grad_out length");
    (0..b * hw).flat_map(move |pos| {
        let (bi, p) = (pos / hw, pos % hw);
        let fb = bi * 2 * hw + p;
        let (x0, x1, wx) = axis(p % w, flow[fb], w);
        let (y0, y1, wy) = axis(p / w, flow[fb + hw], h);
        let one = 1.0f32;
        let weights = [
            (y0 * w + x0, (one - wx) * (one - wy)),
            (y0 * w + x1, wx * (one - wy)),
            (y1 * w + x0, (one - wx) * wy),
            (y1 * w + x1, wx * wy),
        ];
        (0..c).flat_map(move |ci| {
            let base = (bi * c + ci) * hw;
            let g = grad_out[base + p];
            weights.map(|(o, wk)| (base + o, wk * g))
        })
    })
}

/// Pass 1: per element, the largest `|contribution|` as f32 bits (0 where none is non-zero).
pub fn pass1_emax(shape: [usize; 4], flow: &[f32], grad_out: &[f32]) -> Vec<u32> {
    let mut emax = vec![0u32; shape.iter().product()];
    for (i, v) in contributions(shape, flow, grad_out) {
        let mag = v.to_bits() & 0x7FFF_FFFF;
        if mag != 0 {
            emax[i] = emax[i].max(mag);
        }
    }
    emax
}

/// Biased exponent of an f32 magnitude, subnormals and zero counted as exponent 1.
fn exponent(mag: u32) -> i32 {
    ((mag >> 23) as i32).max(1)
}

/// `contribution` in units of `2^(e_max - 126 - T)`, truncated toward zero, as a two's
/// complement `u64` (what pass 2 adds; 0 for zero and non-finite contributions).
pub fn to_fixed(contribution: f32, emax: u32, t_bits: u32) -> u64 {
    let bits = contribution.to_bits();
    let mag = bits & 0x7FFF_FFFF;
    if mag == 0 || mag >= 0x7F80_0000 {
        return 0;
    }
    let e = (mag >> 23) as i32;
    let m = if e == 0 {
        mag as u64
    } else {
        (mag & 0x007F_FFFF | 0x0080_0000) as u64
    };
    let sh = e.max(1) - exponent(emax) + t_bits as i32 - 24;
    let fixed = if sh >= 0 {
        // sh <= T - 24 < 40 when emax really is the maximum; wrap like the u32 words otherwise.
        ((m as u128) << sh.min(100)) as u64
    } else if sh > -24 {
        m >> -sh
    } else {
        0
    };
    if bits >> 31 != 0 {
        fixed.wrapping_neg()
    } else {
        fixed
    }
}

/// Pass 2: the accumulators (`2 * numel` words), given pass 1's `emax`.
pub fn pass2_acc(
    shape: [usize; 4],
    flow: &[f32],
    grad_out: &[f32],
    emax: &[u32],
    t_bits: u32,
) -> Vec<u32> {
    let mut acc = vec![0u64; emax.len()];
    for (i, v) in contributions(shape, flow, grad_out) {
        acc[i] = acc[i].wrapping_add(to_fixed(v, emax[i], t_bits));
    }
    acc.iter()
        .flat_map(|&a| [a as u32, (a >> 32) as u32])
        .collect()
}

/// Pass 3 for one element: the accumulator `(lo, hi)` back to f32, as the kernel computes it.
pub fn resolve(emax: u32, lo: u32, hi: u32, t_bits: u32) -> f32 {
    if emax >= 0x7F80_0000 {
        return f32::from_bits(emax | 0x0040_0000);
    }
    if lo == 0 && hi == 0 {
        return 0.0;
    }
    let acc = (hi as u64) << 32 | lo as u64;
    let neg = hi >> 31 != 0;
    let mag = if neg { acc.wrapping_neg() } else { acc };
    let (mlo, mhi) = (mag as u32, (mag >> 32) as u32);
    let k = exponent(emax) - 126 - t_bits as i32;
    let k1 = k / 2;
    let k2 = k - k1;
    let s1 = f32::from_bits(((k1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((k2 + 127) as u32) << 23);
    let v = (mhi as f32 * 4294967296.0 + mlo as f32) * s1 * s2;
    if neg { -v } else { v }
}

/// Pass 3: every element, given `emax` and `acc`.
pub fn pass3_grad_img(emax: &[u32], acc: &[u32], t_bits: u32) -> Vec<f32> {
    assert_eq!(acc.len(), 2 * emax.len(), "acc holds two words per element");
    emax.iter()
        .enumerate()
        .map(|(i, &m)| resolve(m, acc[2 * i], acc[2 * i + 1], t_bits))
        .collect()
}

/// The whole deterministic image gradient on the host.
pub fn grad_img(shape: [usize; 4], flow: &[f32], grad_out: &[f32]) -> Vec<f32> {
    let t_bits = headroom_bits(shape[2], shape[3]);
    let emax = pass1_emax(shape, flow, grad_out);
    let acc = pass2_acc(shape, flow, grad_out, &emax, t_bits);
    pass3_grad_img(&emax, &acc, t_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in `[lo, hi)` (no dependency on a backend's RNG).
    fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    #[test]
    fn headroom() {
        // 4*24*40 = 3840 < 2^12
        assert_eq!(headroom_bits(24, 40), 51);
        assert_eq!(headroom_bits(1, 1), 60);
        assert_eq!(headroom_bits(1080, 1920), 40);
    }

    /// The fixed-point sum matches an f64 sum of the same contributions to within f32 rounding,
    /// for values of mixed signs and magnitudes spanning 2^-20..2^20.
    #[test]
    fn matches_f64_sum() {
        for (shape, range, seed) in [([2, 3, 9, 13], 4.0, 1), ([1, 2, 24, 40], 30.0, 2)] {
            let [b, c, h, w] = shape;
            let flow = values(b * 2 * h * w, seed, -range, range);
            let scale = values(b * c * h * w, seed + 10, -20.0, 20.0);
            let grad_out: Vec<f32> = values(b * c * h * w, seed + 20, -1.0, 1.0)
                .iter()
                .zip(&scale)
                .map(|(g, s)| g * s.exp2())
                .collect();
            let mut exact = vec![0f64; b * c * h * w];
            let mut abs = vec![0f64; b * c * h * w];
            for (i, v) in contributions(shape, &flow, &grad_out) {
                exact[i] += v as f64;
                abs[i] += (v as f64).abs();
            }
            let got = grad_img(shape, &flow, &grad_out);
            for i in 0..got.len() {
                // f32 rounding of the result plus truncation at 2^-T of the largest term.
                let tol = exact[i].abs() * 2f64.powi(-23) + abs[i] * 2f64.powi(-30);
                assert!(
                    (got[i] as f64 - exact[i]).abs() <= tol,
                    "{shape:?} element {i}: {} vs {}",
                    got[i],
                    exact[i]
                );
            }
        }
    }

    /// The most contributions one element can receive, all at the largest magnitude, neither
    /// overflow nor lose the sign (normal and subnormal values).
    #[test]
    fn headroom_holds_at_the_limit() {
        let t = headroom_bits(24, 40);
        let n = 4 * 24 * 40;
        for v in [1.0f32, -1.0, 1e30, -1e30, 1e-40, -1e-40] {
            let emax = v.to_bits() & 0x7FFF_FFFF;
            let one = to_fixed(v, emax, t);
            let sum = (0..n).fold(0u64, |a, _| a.wrapping_add(one));
            let r = resolve(emax, sum as u32, (sum >> 32) as u32, t);
            assert_eq!(r, v * n as f32, "{v:e}");
        }
    }

    #[test]
    fn non_finite_and_tiny() {
        let t = 51;
        assert_eq!(to_fixed(f32::INFINITY, 0x7F80_0000, t), 0);
        assert!(resolve(0x7F80_0000, 0, 0, t).is_nan());
        // 2^-30 of the element's largest term is kept, 2^-60 is below the unit.
        let emax = 1f32.to_bits();
        assert_ne!(to_fixed(2f32.powi(-30), emax, t), 0);
        assert_eq!(to_fixed(2f32.powi(-60), emax, t), 0);
    }
}
