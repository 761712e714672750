//! Resizing for evaluation: MATLAB's `imresize(img, scale, 'bicubic')`, the reference of the
//! published "BI" degradation and of the "Bicubic" rows of Vid4 tables, and PyTorch's bilinear
//! up-sampling (the network's own baseline).
//!
//! `imresize` follows MATLAB's `imresize.m` (`contributions`, `cubic`) as BasicSR ports it
//! (`basicsr/utils/matlab_functions.py`): Keys' cubic kernel with a = -0.5; when down-scaling the
//! kernel is stretched by 1/scale (antialiasing); input coordinate u = x / scale + (1 - 1 / scale)
//! / 2 for 1-based output x; weights normalised to sum 1; indices outside the image mirrored
//! symmetrically (the edge pixel repeated); height first, then width; computed in f64 with no
//! rounding between the passes (as BasicSR on float input).

use super::plane::{Plane, Rgb};

/// Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`).
pub fn cubic(x: f64) -> f64 {
    let a = x.abs();
    let (a2, a3) = (a * a, a * a * a);
    if a <= 1.0 {
        1.5 * a3 - 2.5 * a2 + 1.0
    } else if a <= 2.0 {
        -0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0
    } else {
        0.0
    }
}

/// Input pixels and their weights for each output pixel of one dimension (0-based indices,
/// already mirrored into the input).
#[derive(Debug, Clone)]
pub struct Contributions {
    pub indices: Vec<Vec<usize>>,
    pub weights: Vec<Vec<f64>>,
}

/// MATLAB's `contributions(in_length, out_length, scale, @cubic, 4, antialiasing)`.
pub fn contributions(in_len: usize, out_len: usize, scale: f64, antialias: bool) -> Contributions {
    let shrink = scale < 1.0 && antialias;
    let kernel_width = if shrink { 4.0 / scale } else { 4.0 };
    let taps = kernel_width.ceil() as i64 + 2;
    let mut indices = Vec::with_capacity(out_len);
    let mut weights = Vec::with_capacity(out_len);
    for x in 1..=out_len {
        // 0.5 in output space maps to 0.5 in input space, 0.5 + scale to 1.5 (1-based).
        let u = x as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
        let left = (u - kernel_width / 2.0).floor() as i64;
        let mut idx = Vec::with_capacity(taps as usize);
        let mut w = Vec::with_capacity(taps as usize);
        for j in 0..taps {
            let i = left + j; // 1-based, may fall outside [1, in_len]
            let d = u - i as f64;
            w.push(if shrink { scale * cubic(scale * d) } else { cubic(d) });
            idx.push(mirror(i, in_len));
        }
        let sum: f64 = w.iter().sum();
        w.iter_mut().for_each(|v| *v /= sum);
        indices.push(idx);
        weights.push(w);
    }
    Contributions { indices, weights }
}

/// MATLAB's symmetric extension of a 1-based index: aux = [1:n, n:-1:1], i -> aux(mod(i - 1, 2n)
/// + 1); returned 0-based.
fn mirror(i: i64, n: usize) -> usize {
    let n = n as i64;
    let k = (i - 1).rem_euclid(2 * n);
    (if k < n { k } else { 2 * n - 1 - k }) as usize
}

/// Output size of MATLAB's `imresize(img, scale)`: ceil(scale * size).
pub fn imresize_size(len: usize, scale: f64) -> usize {
    (len as f64 * scale).ceil() as usize
}

/// MATLAB's `imresize(plane, scale, 'bicubic')` (antialiased when `scale` < 1), unrounded.
pub fn imresize(plane: &Plane, scale: f64) -> Plane {
    let (w, h) = (plane.width, plane.height);
    let (ow, oh) = (imresize_size(w, scale), imresize_size(h, scale));
    // height first
    let ch = contributions(h, oh, scale, true);
    let mut tmp = Plane::new(w, oh);
    for (y, (idx, wt)) in ch.indices.iter().zip(&ch.weights).enumerate() {
        let row = &mut tmp.data[y * w..(y + 1) * w];
        for (&i, &k) in idx.iter().zip(wt) {
            if k == 0.0 {
                continue;
            }
            let src = &plane.data[i * w..(i + 1) * w];
            row.iter_mut().zip(src).for_each(|(o, s)| *o += k * s);
        }
    }
    // then width
    let cw = contributions(w, ow, scale, true);
    let mut out = Plane::new(ow, oh);
    for y in 0..oh {
        let src = &tmp.data[y * w..(y + 1) * w];
        for (x, (idx, wt)) in cw.indices.iter().zip(&cw.weights).enumerate() {
            out.data[y * ow + x] = idx.iter().zip(wt).map(|(&i, &k)| k * src[i]).sum();
        }
    }
    out
}

/// [`imresize`] on every channel.
pub fn imresize_rgb(img: &Rgb, scale: f64) -> Rgb {
    img.map(|p| imresize(p, scale))
}

/// PyTorch's `interpolate(mode='bilinear', align_corners=False)` to `out_w` x `out_h`: source
/// coordinate (x + 0.5) * in / out - 0.5, negative ones clamped to 0, the last pixel repeated.
pub fn bilinear(plane: &Plane, out_w: usize, out_h: usize) -> Plane {
    let taps = |in_len: usize, out_len: usize| -> Vec<(usize, usize, f64)> {
        let ratio = in_len as f64 / out_len as f64;
        (0..out_len)
            .map(|o| {
                let src = ((o as f64 + 0.5) * ratio - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(in_len - 1);
                let i1 = (i0 + 1).min(in_len - 1);
                (i0, i1, src - i0 as f64)
            })
            .collect()
    };
    let (tx, ty) = (taps(plane.width, out_w), taps(plane.height, out_h));
    let mut out = Plane::new(out_w, out_h);
    for (y, &(y0, y1, ly)) in ty.iter().enumerate() {
        for (x, &(x0, x1, lx)) in tx.iter().enumerate() {
            let top = plane.at(x0, y0) * (1.0 - lx) + plane.at(x1, y0) * lx;
            let bottom = plane.at(x0, y1) * (1.0 - lx) + plane.at(x1, y1) * lx;
            out.data[y * out_w + x] = top * (1.0 - ly) + bottom * ly;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_mirror_at_edges() {
        let c = contributions(10, 3, 0.25, true);
        for w in &c.weights {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert_eq!(w.len(), 18); // ceil(4 / 0.25) + 2 taps
        }
        assert_eq!(mirror(0, 5), 0);
        assert_eq!(mirror(-1, 5), 1);
        assert_eq!(mirror(6, 5), 4);
        assert_eq!(mirror(7, 5), 3);
        assert_eq!(mirror(-12, 5), 2); // several periods away (tiny images)
    }

    #[test]
    fn constant_image_stays_constant() {
        let p = Plane { width: 7, height: 5, data: vec![42.0; 35] };
        for scale in [0.25, 4.0, 0.5] {
            let r = imresize(&p, scale);
            assert_eq!((r.width, r.height), (imresize_size(7, scale), imresize_size(5, scale)));
            assert!(r.data.iter().all(|v| (v - 42.0).abs() < 1e-9), "scale {scale}");
        }
        let b = bilinear(&p, 28, 20);
        assert!(b.data.iter().all(|v| (v - 42.0).abs() < 1e-12));
    }

    #[test]
    fn upscaling_a_ramp_interpolates_it() {
        // away from the borders, cubic interpolation reproduces linear functions exactly
        let p = Plane { width: 16, height: 1, data: (0..16).map(f64::from).collect() };
        let r = imresize(&p, 4.0);
        for x in 12..52 {
            let u = (x as f64 + 1.0) / 4.0 + 0.5 * (1.0 - 0.25) - 1.0; // 0-based source coordinate
            assert!((r.data[x] - u).abs() < 1e-9, "x {x}: {} vs {u}", r.data[x]);
        }
    }
}
