//! Decoding video frames through FFmpeg's libraries (video-rs / ffmpeg-next).

use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::error::{Error, Result};

/// One decoded RGB frame, (H, W, 3) u8.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

fn video_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {what}", path.display()))
}

/// Decodes `count` consecutive frames starting at frame `start` (0-based, in decode order of
/// presentation), by decoding from the start of the file.
pub fn read_frames(path: &Path, start: usize, count: usize) -> Result<Vec<Frame>> {
    if !path.exists() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
    }
    video_rs::init().map_err(|e| video_err(path, format!("initialising FFmpeg: {e}")))?;
    let mut decoder = video_rs::Decoder::new(path.to_path_buf())
        .map_err(|e| video_err(path, format!("cannot open as video: {e}")))?;
    let (w, h) = decoder.size();
    let mut frames = Vec::with_capacity(count);
    for (i, item) in decoder.decode_iter().enumerate() {
        let (_, frame) = match item {
            Ok(f) => f,
            Err(video_rs::Error::DecodeExhausted) => break,
            Err(e) => return Err(video_err(path, format!("decoding frame {i}: {e}"))),
        };
        if i < start {
            continue;
        }
        let rgb = frame.as_slice().map(<[u8]>::to_vec).unwrap_or_else(|| frame.iter().copied().collect());
        frames.push(Frame { width: w as usize, height: h as usize, rgb });
        if frames.len() == count {
            return Ok(frames);
        }
    }
    Err(video_err(path, format!("has fewer than {} frames (wanted {count} from frame {start})", start + count)))
}

/// Stacks frames into a (1, 3, F, H, W) tensor in [0, 255], centre-cropped to `crop` (h, w).
pub fn frames_to_tensor<B: Backend>(frames: &[Frame], crop: (usize, usize), device: &B::Device) -> Result<Tensor<B, 5>> {
    let (ch, cw) = crop;
    let f0 = &frames[0];
    if ch > f0.height || cw > f0.width {
        return Err(Error::Invalid(format!(
            "crop {ch}x{cw} is larger than the video ({}x{})",
            f0.height, f0.width
        )));
    }
    let (y0, x0) = ((f0.height - ch) / 2, (f0.width - cw) / 2);
    let n = frames.len();
    let mut values = vec![0f32; 3 * n * ch * cw];
    for (fi, fr) in frames.iter().enumerate() {
        for y in 0..ch {
            for x in 0..cw {
                let src = ((y0 + y) * fr.width + x0 + x) * 3;
                for c in 0..3 {
                    values[((c * n + fi) * ch + y) * cw + x] = fr.rgb[src + c] as f32;
                }
            }
        }
    }
    Ok(Tensor::from_data(TensorData::new(values, [1, 3, n, ch, cw]), device))
}
