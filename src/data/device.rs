//! Batches onto the training device: uploaded as u8 (a quarter of the bytes of f32), channels
//! last as the workers wrote them, and turned into float (B, 3, F, H, W) in [0, 255] on the
//! device, one batch ahead of use, on a thread of its own while the caller trains.
//!
//! What Burn 0.21 does with u8 data (read in its sources): `Tensor::<B, D, Int>::from_data(data,
//! &device)` converts the data on the host to the device's default int type (i32 on our
//! backends) before uploading, 4x the bytes. Passing the dtype, `from_data(data, (&device,
//! DType::U8))`, keeps the bytes as they are: burn-flex stores u8, CubeCL uploads a u8 buffer,
//! and `.float()` is then a cast kernel on the device (CubeCL's `int_into_float`), a loop on the
//! CPU (flex). WGSL (burn's `wgpu` feature) has no 8-bit storage type: there the bytes go up
//! as i32 words, 4 pixels each (the same bytes, no widening), and are unpacked on the device
//! with shifts and masks.

use std::time::{Duration, Instant};

use burn::tensor::backend::{Backend, DTypeUsage};
use burn::tensor::{DType, ElementConversion, Int, Tensor};
use vsr_kernels::upload::UploadBackend;

use super::loader::{HostBatch, Loader};
use super::sampler::WindowRef;
use crate::error::Result;

/// `batch` on `device` as float (B, 3, F, H, W) in [0, 255].
pub fn upload<B: UploadBackend>(batch: &HostBatch, device: &B::Device) -> Tensor<B, 5> {
    upload_pixels(batch.pixels.clone(), batch.dims, device)
}

/// Whether `device` stores u8 tensors (else the packed path is used).
pub fn stores_u8<B: Backend>(device: &B::Device) -> bool {
    B::dtype_usage(device, DType::U8).contains(DTypeUsage::Storage)
}

/// Channels-last `pixels` (B, F, H, W, 3) as the float tensor `dims` = [B, 3, F, H, W]: uploaded
/// as bytes, converted and permuted on the device.
pub(crate) fn upload_pixels<B: UploadBackend>(pixels: Vec<u8>, dims: [usize; 5], device: &B::Device) -> Tensor<B, 5> {
    let [b, c, f, h, w] = dims;
    let last = [b, f, h, w, c];
    let t = if stores_u8::<B>(device) { upload_u8(pixels, last, device) } else { upload_packed(pixels, last, device) };
    t.permute([0, 4, 1, 2, 3])
}

/// Through [`UploadBackend::upload_int`]: on the CUDA backends a copy from page-locked memory that
/// does not stall the device's queue (`from_data`'s copy from pageable memory synchronises it).
fn upload_u8<B: UploadBackend>(pixels: Vec<u8>, dims: [usize; 5], device: &B::Device) -> Tensor<B, 5> {
    Tensor::<B, 5, Int>::from_primitive(B::upload_int(pixels, dims.into(), DType::U8, device)).float()
}

/// Four pixels a little-endian i32 word (the same bytes, reinterpreted), unpacked on the device.
fn upload_packed<B: UploadBackend>(pixels: Vec<u8>, dims: [usize; 5], device: &B::Device) -> Tensor<B, 5> {
    let n = pixels.len();
    assert_eq!(n, dims.iter().product::<usize>(), "pixels do not fill the dims");
    let mut bytes = pixels;
    bytes.resize(n.div_ceil(4) * 4, 0);
    let words = bytes.len() / 4;
    let packed = Tensor::<B, 1, Int>::from_primitive(B::upload_int(bytes, [words].into(), DType::I32, device));
    let mask: B::IntElem = 255i32.elem();
    let parts: Vec<Tensor<B, 1, Int>> = (0..4)
        .map(|k| {
            let shifted = if k == 0 { packed.clone() } else { packed.clone().bitwise_right_shift_scalar((8 * k).elem()) };
            shifted.bitwise_and_scalar(mask)
        })
        .collect();
    let unpacked: Tensor<B, 2, Int> = Tensor::stack(parts, 1);
    unpacked.reshape([words * 4]).slice([0..n]).reshape(dims).float()
}

/// A batch on the device.
#[derive(Debug)]
pub struct DeviceBatch<B: Backend> {
    /// (B, 3, F, H, W) float in [0, 255].
    pub frames: Tensor<B, 5>,
    pub windows: Vec<WindowRef>,
    pub epoch: u64,
    /// Index of this batch within its epoch.
    pub index: usize,
    /// How long [`DeviceLoader::next`] waited for the loader's workers to finish a batch.
    pub wait: Duration,
    /// The rest of [`DeviceLoader::next`]: finishing this batch's upload (started on its own
    /// thread during the previous step, or done here when it was not ready then).
    pub upload: Duration,
}

/// A [`Loader`] whose batches arrive on a device: when the caller takes batch i, batch i + 1
/// starts uploading on the loader's upload thread if the workers have finished it (never
/// waiting for it), so that the copy and conversion overlap the caller's training step.
pub struct DeviceLoader<B: Backend> {
    loader: Loader,
    device: B::Device,
    ahead: Option<Ahead<B>>,
    /// Time spent waiting for the workers in the current [`DeviceLoader::next`].
    waited: Duration,
    /// The upload thread, started with the first batch taken ahead.
    uploader: Option<Uploader<B>>,
}

/// One thread for all the uploads, for the loader's life. A thread per batch, as before, made
/// a new stream per batch on the CUDA backend, which queues each thread's work on a stream of
/// its own with its own memory pools: with CubeCL's default pools a 100-step run ran out of device
/// memory creating streams (H100, fp16, batch 3, 512x960).
struct Uploader<B: Backend> {
    jobs: std::sync::mpsc::Sender<(Vec<u8>, [usize; 5])>,
    done: std::sync::mpsc::Receiver<std::thread::Result<Tensor<B, 5>>>,
}

impl<B: UploadBackend> Uploader<B> {
    /// The thread, or None where none can be started.
    fn start(device: B::Device) -> Option<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<(Vec<u8>, [usize; 5])>();
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("vsr-upload".into())
            .spawn(move || {
                // ends when the loader (the jobs' sender) is dropped
                for (pixels, dims) in rx {
                    let t = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| upload_pixels::<B>(pixels, dims, &device)));
                    if tx.send(t).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Self { jobs, done })
    }
}

/// The next batch, taken from the loader ahead of use.
enum Ahead<B: Backend> {
    /// Uploading on its own thread (or uploaded, where no thread could be started).
    Upload { frames: Upload<B>, windows: Vec<WindowRef>, epoch: u64, index: usize },
    /// The loader's error for it.
    Failed(crate::error::Error),
}

enum Upload<B: Backend> {
    /// Sent to the upload thread: its next result.
    Thread,
    Done(Tensor<B, 5>),
}

impl<B: Backend> Upload<B> {
    fn tensor(self, uploader: Option<&Uploader<B>>) -> Tensor<B, 5> {
        match self {
            Upload::Done(t) => t,
            Upload::Thread => {
                let done = uploader.expect("a batch sent to the upload thread").done.recv();
                // a panic while uploading is the caller's, as when it uploaded itself
                done.expect("the upload thread ended with a batch in flight").unwrap_or_else(|p| std::panic::resume_unwind(p))
            }
        }
    }
}

/// Whether batches are uploaded on the loader's upload thread (`VSR_UPLOAD_THREAD=0`: on the
/// caller's; for measuring the difference).
fn upload_thread() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| super::switched_on("VSR_UPLOAD_THREAD"))
}

impl<B: UploadBackend> DeviceLoader<B> {
    pub fn new(loader: Loader, device: B::Device) -> DeviceLoader<B> {
        DeviceLoader { loader, device, ahead: None, waited: Duration::ZERO, uploader: None }
    }

    pub fn loader(&self) -> &Loader {
        &self.loader
    }

    /// Position after the last batch returned by [`DeviceLoader::next`] (a batch taken ahead
    /// but not yet returned does not count).
    pub fn state(&self) -> super::LoaderState {
        match &self.ahead {
            Some(Ahead::Upload { epoch, index, .. }) => super::LoaderState { epoch: *epoch, batch: *index },
            _ => self.loader.state(),
        }
    }

    /// The loader's next batch on the host, timing the wait.
    fn next_host(&mut self) -> Option<Result<HostBatch>> {
        let t = Instant::now();
        let batch = self.loader.next_batch();
        self.waited += t.elapsed();
        batch
    }

    /// Takes the next batch from the loader and starts its upload on the upload thread.
    fn take_ahead(&mut self) -> Option<Ahead<B>> {
        Some(match self.next_host()? {
            Err(e) => Ahead::Failed(e),
            Ok(b) => {
                if upload_thread() && self.uploader.is_none() {
                    self.uploader = Uploader::start(self.device.clone());
                }
                // Where no thread could be started (or it has ended), the pixels are uploaded
                // at once.
                let job = (b.pixels, b.dims);
                let frames = match &self.uploader {
                    Some(u) => match u.jobs.send(job) {
                        Ok(()) => Upload::Thread,
                        Err(std::sync::mpsc::SendError((pixels, dims))) => Upload::Done(upload_pixels(pixels, dims, &self.device)),
                    },
                    None => Upload::Done(upload_pixels(job.0, job.1, &self.device)),
                };
                Ahead::Upload { frames, windows: b.windows, epoch: b.epoch, index: b.index }
            }
        })
    }

    /// The next batch on the device; None at the end of a pass (`repeat` off).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<DeviceBatch<B>>> {
        let t = Instant::now();
        self.waited = Duration::ZERO;
        let current = match self.ahead.take() {
            Some(Ahead::Upload { frames, windows, epoch, index }) => {
                Ok(DeviceBatch { frames: frames.tensor(self.uploader.as_ref()), windows, epoch, index, wait: Duration::ZERO, upload: Duration::ZERO })
            }
            Some(Ahead::Failed(e)) => Err(e),
            None => self.next_host()?.map(|b| DeviceBatch {
                frames: upload_pixels(b.pixels, b.dims, &self.device),
                windows: b.windows,
                epoch: b.epoch,
                index: b.index,
                wait: Duration::ZERO,
                upload: Duration::ZERO,
            }),
        };
        if self.loader.ready() {
            self.ahead = self.take_ahead();
        }
        let (total, wait) = (t.elapsed(), self.waited);
        Some(current.map(|mut b| {
            b.wait = wait;
            b.upload = total.saturating_sub(wait);
            b
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Cpu = crate::backend::Cpu;

    #[test]
    fn both_upload_paths_give_the_pixels() {
        // 18 values (not a multiple of 4), bytes above 127 in every position of a word
        let dims = [1, 3, 1, 2, 3];
        let pixels: Vec<u8> = (0..18u32).map(|i| (i * 37 + 200) as u8).collect();
        let device = Default::default();
        assert!(stores_u8::<Cpu>(&device));
        let want: Vec<f32> = pixels.iter().map(|&p| p as f32).collect();
        for t in [upload_u8::<Cpu>(pixels.clone(), dims, &device), upload_packed::<Cpu>(pixels.clone(), dims, &device)] {
            assert_eq!(t.dims(), dims);
            assert_eq!(t.into_data().to_vec::<f32>().unwrap(), want);
        }
    }

    #[test]
    fn upload_puts_channels_first() {
        // (B, F, H, W, 3) = (2, 3, 2, 5, 3): every value distinct modulo 256 and its position known
        let (b, f, h, w) = (2, 3, 2, 5);
        let at = |n: usize, c: usize, k: usize, y: usize, x: usize| (((n * f + k) * h + y) * w + x) * 3 + c;
        let pixels: Vec<u8> = (0..b * f * h * w * 3).map(|i| (i * 7 % 251) as u8).collect();
        let t = upload_pixels::<Cpu>(pixels.clone(), [b, 3, f, h, w], &Default::default());
        assert_eq!(t.dims(), [b, 3, f, h, w]);
        let got = t.into_data().to_vec::<f32>().unwrap();
        let mut i = 0;
        for n in 0..b {
            for c in 0..3 {
                for k in 0..f {
                    for y in 0..h {
                        for x in 0..w {
                            assert_eq!(got[i], pixels[at(n, c, k, y, x)] as f32, "at ({n},{c},{k},{y},{x})");
                            i += 1;
                        }
                    }
                }
            }
        }
    }
}
