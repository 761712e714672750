//! PSNR on Y in [0, 255] with a symmetric border crop (the original cropped `[12:, :-12]`, top
//! rows and right columns only; see the spec's list of defects): on tensors during training, and
//! on [`Plane`]s for evaluation (BasicSR's `calculate_psnr`, in f64).

use burn::tensor::{Tensor, backend::Backend};

use super::plane::Plane;

/// PSNR in dB of two planes in [0, 255] of equal size: 10 log10(255^2 / MSE); infinite when
/// they are equal.
pub fn psnr(a: &Plane, b: &Plane) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height), "PSNR of planes of different sizes");
    let n = a.data.len() as f64;
    let mse = a.data.iter().zip(&b.data).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / n;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0 * 255.0 / mse).log10() }
}

/// Border cropped on each side before PSNR, in pixels (the original's 12).
pub const BORDER: usize = 12;

/// Per-sample PSNR in dB of `pred` against `target`, both (B, 1, H, W) in [0, 1], on [0, 255]
/// after cropping `border` pixels from every side.
pub fn psnr_per_sample<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>, border: usize) -> Vec<f64> {
    let [b, _, h, w] = pred.dims();
    let crop = |t: Tensor<B, 4>| {
        if 2 * border < h && 2 * border < w {
            t.slice([0..b, 0..1, border..h - border, border..w - border])
        } else {
            t
        }
    };
    let diff = (crop(pred).clamp(0.0, 1.0) - crop(target)) * 255.0;
    let mse = diff.powf_scalar(2.0).reshape([b as i32, -1]).mean_dim(1);
    let mse: Vec<f32> = mse.into_data().convert::<f32>().to_vec().expect("f32");
    mse.into_iter().map(|m| if m > 0.0 { 10.0 * (255.0f64 * 255.0 / m as f64).log10() } else { f64::INFINITY }).collect()
}

/// Running mean of per-sample PSNR, overall and per clip: divides by the samples seen (the
/// original divided by a fixed count).
#[derive(Debug, Default, Clone)]
pub struct PsnrMeter {
    sum: f64,
    count: usize,
    per_clip: std::collections::BTreeMap<String, (f64, usize)>,
}

impl PsnrMeter {
    pub fn add(&mut self, clip: &str, psnr: f64) {
        self.sum += psnr;
        self.count += 1;
        let e = self.per_clip.entry(clip.to_string()).or_default();
        e.0 += psnr;
        e.1 += 1;
    }

    /// Mean over every sample seen, or NaN if none.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.sum / self.count as f64 }
    }

    /// Samples seen.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Mean per clip, by clip name.
    pub fn per_clip(&self) -> Vec<(String, f64, usize)> {
        self.per_clip.iter().map(|(k, (s, n))| (k.clone(), s / *n as f64, *n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn known_value_and_symmetric_crop() {
        let device = Default::default();
        // target 0.5 everywhere; pred differs by 10/255 inside, and by a lot in the border only
        let target = Tensor::<B, 4>::full([1, 1, 40, 40], 0.5, &device);
        let mut pred = vec![0.5f32 + 10.0 / 255.0; 40 * 40];
        for y in 0..40 {
            for x in 0..40 {
                if y < 12 || y >= 28 || x < 12 || x >= 28 {
                    pred[y * 40 + x] = 0.0;
                }
            }
        }
        let pred = Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(pred, [1, 1, 40, 40]), &device);
        let p = psnr_per_sample(pred, target, BORDER)[0];
        let want = 10.0 * (255.0f64 * 255.0 / 100.0).log10(); // MSE = 10^2
        assert!((p - want).abs() < 1e-3, "{p} vs {want}");
    }

    #[test]
    fn plane_psnr_known_value() {
        let a = Plane { width: 4, height: 1, data: vec![10.0, 20.0, 30.0, 40.0] };
        let b = Plane { width: 4, height: 1, data: vec![12.0, 18.0, 32.0, 38.0] }; // MSE 4
        assert!((psnr(&a, &b) - 10.0 * (255.0f64 * 255.0 / 4.0).log10()).abs() < 1e-12);
        assert!(psnr(&a, &a).is_infinite());
    }

    #[test]
    fn meter_divides_by_samples_seen() {
        let mut m = PsnrMeter::default();
        m.add("a", 30.0);
        m.add("a", 32.0);
        m.add("b", 40.0);
        assert!((m.mean() - 34.0).abs() < 1e-12);
        assert_eq!(m.per_clip(), vec![("a".into(), 31.0, 2), ("b".into(), 40.0, 1)]);
    }
}
