//! SSIM as the super-resolution literature computes it: Wang et al.'s MATLAB `ssim_index` (and
//! BasicSR's `calculate_ssim`, scikit-image's `structural_similarity(gaussian_weights=True,
//! sigma=1.5, use_sample_covariance=False, data_range=255)`): an 11x11 Gaussian window with
//! sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, statistics only where the window fits (the "valid"
//! region), the mean of the SSIM map.

use super::plane::Plane;

/// Window side.
pub const WINDOW: usize = 11;
/// Gaussian sigma of the window.
pub const SIGMA: f64 = 1.5;
const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);

/// The normalised 1-D Gaussian (OpenCV's `getGaussianKernel(11, 1.5)`); the window is its outer
/// product with itself.
fn gaussian() -> [f64; WINDOW] {
    let r = (WINDOW / 2) as f64;
    let mut g: [f64; WINDOW] = std::array::from_fn(|i| (-((i as f64 - r).powi(2)) / (2.0 * SIGMA * SIGMA)).exp());
    let sum: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= sum);
    g
}

/// `plane` filtered by the window where it fits: (w - 10) x (h - 10).
fn filter_valid(plane: &Plane, g: &[f64; WINDOW]) -> Plane {
    let (w, h) = (plane.width, plane.height);
    let (ow, oh) = (w + 1 - WINDOW, h + 1 - WINDOW);
    let mut rows = Plane::new(ow, h);
    for y in 0..h {
        let src = &plane.data[y * w..(y + 1) * w];
        for x in 0..ow {
            rows.data[y * ow + x] = g.iter().zip(&src[x..x + WINDOW]).map(|(k, v)| k * v).sum();
        }
    }
    let mut out = Plane::new(ow, oh);
    for y in 0..oh {
        for (k, gk) in g.iter().enumerate() {
            let src = &rows.data[(y + k) * ow..(y + k + 1) * ow];
            out.data[y * ow..(y + 1) * ow].iter_mut().zip(src).for_each(|(o, s)| *o += gk * s);
        }
    }
    out
}

/// Mean SSIM of two planes in [0, 255] of equal size, at least 11x11 (else NaN).
pub fn ssim(a: &Plane, b: &Plane) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height), "SSIM of planes of different sizes");
    if a.width < WINDOW || a.height < WINDOW {
        return f64::NAN;
    }
    let g = gaussian();
    let product = |p: &Plane, q: &Plane| Plane {
        width: p.width,
        height: p.height,
        data: p.data.iter().zip(&q.data).map(|(x, y)| x * y).collect(),
    };
    let mu1 = filter_valid(a, &g);
    let mu2 = filter_valid(b, &g);
    let e11 = filter_valid(&product(a, a), &g);
    let e22 = filter_valid(&product(b, b), &g);
    let e12 = filter_valid(&product(a, b), &g);
    let n = mu1.data.len();
    let mut sum = 0.0;
    for i in 0..n {
        let (m1, m2) = (mu1.data[i], mu2.data[i]);
        let s11 = e11.data[i] - m1 * m1;
        let s22 = e22.data[i] - m2 * m2;
        let s12 = e12.data[i] - m1 * m2;
        sum += ((2.0 * m1 * m2 + C1) * (2.0 * s12 + C2)) / ((m1 * m1 + m2 * m2 + C1) * (s11 + s22 + C2));
    }
    sum / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_planes_score_one_and_noise_lowers_it() {
        let data: Vec<f64> = (0..20 * 16).map(|i| ((i * 37) % 256) as f64).collect();
        let a = Plane { width: 20, height: 16, data };
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-12);
        let mut b = a.clone();
        b.data.iter_mut().enumerate().for_each(|(i, v)| *v += if i % 2 == 0 { 20.0 } else { -20.0 });
        let s = ssim(&a, &b);
        assert!(s < 0.99 && s > 0.0, "{s}");
        assert!((ssim(&a, &b) - ssim(&b, &a)).abs() < 1e-12);
        assert!(ssim(&a.crop(0, 0, 10, 16), &b.crop(0, 0, 10, 16)).is_nan());
    }

    #[test]
    fn window_is_normalised_and_symmetric() {
        let g = gaussian();
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert_eq!(g[0], g[10]);
    }
}
