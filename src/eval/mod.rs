//! Quality metrics.

pub mod psnr;
