//! Quality metrics and evaluation on benchmark clips: PSNR and SSIM on BT.601 luma as the
//! super-resolution literature computes them, MATLAB's bicubic `imresize` for the "BI"
//! degradation and the bicubic baseline, and [`benchmark`], the `vsr eval` driver.

pub mod benchmark;
pub mod plane;
pub mod psnr;
pub mod resize;
pub mod ssim;
