//! Colour output: VSRNet predicts Y; Cb/Cr come from the centre frame (degraded the same way),
//! and JPEG's YCbCr -> RGB gives the viewable image.

use std::path::Path;

use burn::tensor::{Tensor, backend::Backend};

use crate::error::{Error, Result};
use crate::model::vsrnet::down_up;

/// RGB u8 image (H, W, 3) row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Reads a PNG (grey, grey+alpha, RGB or RGBA, 8 or 16 bits; alpha dropped, 16 bits
    /// rounded to 8).
    pub fn load_png(path: &Path) -> Result<RgbImage> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .map_err(|e| Error::Invalid(format!("{}: not a readable PNG ({e})", path.display())))?
            .to_rgb8();
        let (width, height) = (img.width() as usize, img.height() as usize);
        Ok(RgbImage { width, height, data: img.into_raw() })
    }

    /// The image as PNG bytes.
    pub fn encode_png(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut bytes),
            &self.data,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::Invalid(format!("encoding a {}x{} PNG: {e}", self.width, self.height)))?;
        Ok(bytes)
    }

    /// Writes a PNG atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let bytes = self.encode_png().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        crate::checkpoint::write_atomic(path, &bytes)
    }

    /// Places images side by side (equal heights).
    pub fn hstack(images: &[RgbImage]) -> RgbImage {
        let height = images[0].height;
        let width = images.iter().map(|i| i.width).sum();
        let mut data = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for img in images {
                data.extend_from_slice(&img.data[y * img.width * 3..(y + 1) * img.width * 3]);
            }
        }
        RgbImage { width, height, data }
    }
}

/// Cb and Cr (JPEG, full range, centred on 128) of RGB in [0, 255]: (B, 3, H, W) -> (B, 2, H, W).
pub fn rgb_to_cbcr<B: Backend>(rgb: Tensor<B, 4>) -> Tensor<B, 4> {
    let r = rgb.clone().narrow(1, 0, 1);
    let g = rgb.clone().narrow(1, 1, 1);
    let b = rgb.narrow(1, 2, 1);
    let cb = r.clone() * -0.168736 + g.clone() * -0.331264 + b.clone() * 0.5 + 128.0;
    let cr = r * 0.5 + g * -0.418688 + b * -0.081312 + 128.0;
    Tensor::cat(vec![cb, cr], 1)
}

/// Colour images from Y in [0, 1] (B, 1, H, W) and the centre RGB frame (B, 3, H, W) in [0, 255]
/// whose chroma is degraded like the network's input.
pub fn colourise<B: Backend>(y: Tensor<B, 4>, centre_rgb: Tensor<B, 4>) -> Vec<RgbImage> {
    let [batch, _, h, w] = y.dims();
    let cbcr = down_up(rgb_to_cbcr(centre_rgb));
    let y = y.clamp(0.0, 1.0) * 255.0;
    let y = y.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let c = cbcr.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    (0..batch)
        .map(|b| {
            let mut data = Vec::with_capacity(h * w * 3);
            for i in 0..h * w {
                let yy = y[b * h * w + i];
                let cb = c[(b * 2) * h * w + i] - 128.0;
                let cr = c[(b * 2 + 1) * h * w + i] - 128.0;
                let r = yy + 1.402 * cr;
                let g = yy - 0.344136 * cb - 0.714136 * cr;
                let bl = yy + 1.772 * cb;
                data.extend([r, g, bl].map(|v| v.round().clamp(0.0, 255.0) as u8));
            }
            RgbImage { width: w, height: h, data }
        })
        .collect()
}

/// RGB images from a (B, 3, H, W) tensor in [0, 255] (rounded, clamped).
pub fn rgb_to_images<B: Backend>(rgb: Tensor<B, 4>) -> Vec<RgbImage> {
    let [batch, _, h, w] = rgb.dims();
    let v = rgb.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    (0..batch)
        .map(|b| {
            let mut data = Vec::with_capacity(h * w * 3);
            for i in 0..h * w {
                for c in 0..3 {
                    data.push(v[(b * 3 + c) * h * w + i].round().clamp(0.0, 255.0) as u8);
                }
            }
            RgbImage { width: w, height: h, data }
        })
        .collect()
}
