//! Images as float planes, for resizing and metrics: RGB u8 in, MATLAB's uint8 conversion out,
//! and the ITU-R BT.601 luma the super-resolution literature measures.

use crate::image::RgbImage;

/// One channel, row-major, any range.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f64>,
}

impl Plane {
    pub fn new(width: usize, height: usize) -> Plane {
        Plane { width, height, data: vec![0.0; width * height] }
    }

    pub fn at(&self, x: usize, y: usize) -> f64 {
        self.data[y * self.width + x]
    }

    /// The `w` x `h` region at (`x0`, `y0`).
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Plane {
        assert!(x0 + w <= self.width && y0 + h <= self.height, "crop outside the plane");
        let mut data = Vec::with_capacity(w * h);
        for y in y0..y0 + h {
            data.extend_from_slice(&self.data[y * self.width + x0..y * self.width + x0 + w]);
        }
        Plane { width: w, height: h, data }
    }

    /// Without `border` pixels on every side (nothing left if the plane is too small).
    pub fn crop_border(&self, border: usize) -> Plane {
        let w = self.width.saturating_sub(2 * border);
        let h = self.height.saturating_sub(2 * border);
        self.crop(border.min(self.width), border.min(self.height), w, h)
    }

    /// MATLAB's conversion of a double image to uint8: round half away from zero, saturate.
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| to_u8(v)).collect()
    }
}

/// MATLAB's `uint8(v)`: nearest integer (halves away from zero), saturated to [0, 255].
pub fn to_u8(v: f64) -> u8 {
    (v + 0.5).floor().clamp(0.0, 255.0) as u8
}

/// An RGB image as three planes, values in [0, 255].
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub planes: [Plane; 3],
}

impl Rgb {
    pub fn width(&self) -> usize {
        self.planes[0].width
    }

    pub fn height(&self) -> usize {
        self.planes[0].height
    }

    pub fn from_image(img: &RgbImage) -> Rgb {
        let planes = std::array::from_fn(|c| Plane {
            width: img.width,
            height: img.height,
            data: img.data.iter().skip(c).step_by(3).map(|&v| f64::from(v)).collect(),
        });
        Rgb { planes }
    }

    /// The image MATLAB's `uint8` would store.
    pub fn to_image(&self) -> RgbImage {
        let (w, h) = (self.width(), self.height());
        let mut data = Vec::with_capacity(w * h * 3);
        for i in 0..w * h {
            data.extend(self.planes.iter().map(|p| to_u8(p.data[i])));
        }
        RgbImage { width: w, height: h, data }
    }

    /// Rounded to uint8 values like a stored image, kept as floats.
    pub fn quantised(&self) -> Rgb {
        self.map(|p| Plane { data: p.data.iter().map(|&v| f64::from(to_u8(v))).collect(), ..*p })
    }

    pub fn map(&self, f: impl Fn(&Plane) -> Plane) -> Rgb {
        Rgb { planes: std::array::from_fn(|c| f(&self.planes[c])) }
    }

    /// BasicSR's `mod_crop`: the top-left region whose sides are multiples of `scale`.
    pub fn mod_crop(&self, scale: usize) -> Rgb {
        let (w, h) = (self.width() / scale * scale, self.height() / scale * scale);
        self.map(|p| p.crop(0, 0, w, h))
    }

    /// ITU-R BT.601 luma in the [16, 235] range, as MATLAB's `rgb2ycbcr` and BasicSR's
    /// `to_y_channel` compute it (unrounded): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255.
    pub fn y_bt601(&self) -> Plane {
        let [r, g, b] = &self.planes;
        let data = (0..r.data.len())
            .map(|i| 16.0 + (65.481 * r.data[i] + 128.553 * g.data[i] + 24.966 * b.data[i]) / 255.0)
            .collect();
        Plane { width: r.width, height: r.height, data }
    }

    /// JPEG (full-range) Cb and Cr, centred on 128, as [`crate::image`] uses to colour the
    /// network's luma.
    pub fn cbcr(&self) -> [Plane; 2] {
        let [r, g, b] = &self.planes;
        let n = r.data.len();
        let cb = (0..n).map(|i| -0.168736 * r.data[i] - 0.331264 * g.data[i] + 0.5 * b.data[i] + 128.0).collect();
        let cr = (0..n).map(|i| 0.5 * r.data[i] - 0.418688 * g.data[i] - 0.081312 * b.data[i] + 128.0).collect();
        let plane = |data| Plane { width: r.width, height: r.height, data };
        [plane(cb), plane(cr)]
    }

    /// The colour image of full-range luma `y` (in [0, 255]) and JPEG chroma `cbcr`.
    pub fn from_ycbcr(y: &Plane, cbcr: &[Plane; 2]) -> Rgb {
        let n = y.data.len();
        let (cb, cr) = (&cbcr[0].data, &cbcr[1].data);
        let plane = |f: &dyn Fn(usize) -> f64| Plane { width: y.width, height: y.height, data: (0..n).map(f).collect() };
        Rgb {
            planes: [
                plane(&|i| y.data[i] + 1.402 * (cr[i] - 128.0)),
                plane(&|i| y.data[i] - 0.344136 * (cb[i] - 128.0) - 0.714136 * (cr[i] - 128.0)),
                plane(&|i| y.data[i] + 1.772 * (cb[i] - 128.0)),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matlab_uint8_rounds_halves_away_from_zero_and_saturates() {
        assert_eq!([to_u8(0.5), to_u8(1.5), to_u8(2.4999), to_u8(-3.0), to_u8(255.6)], [1, 2, 2, 0, 255]);
    }

    #[test]
    fn bt601_luma_of_black_white_and_primaries() {
        let img = RgbImage { width: 4, height: 1, data: vec![0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 255] };
        let y = Rgb::from_image(&img).y_bt601();
        let want = [16.0, 235.0, 16.0 + 65.481, 16.0 + 24.966];
        for (a, b) in y.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn ycbcr_round_trip() {
        let img = RgbImage { width: 3, height: 1, data: vec![10, 200, 30, 255, 128, 0, 77, 77, 77] };
        let rgb = Rgb::from_image(&img);
        let [r, g, b] = &rgb.planes;
        let y = Plane {
            width: 3,
            height: 1,
            data: (0..3).map(|i| 0.299 * r.data[i] + 0.587 * g.data[i] + 0.114 * b.data[i]).collect(),
        };
        assert_eq!(Rgb::from_ycbcr(&y, &rgb.cbcr()).to_image(), img);
    }
}
