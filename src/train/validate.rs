//! Validation: loss and PSNR over the validation scenes, with the original's defects fixed
//! (the true HR target, a symmetric border crop, averages over the samples actually seen), per
//! clip and overall, beside the bilinear baseline.

use burn::tensor::Tensor;

use crate::backend::VsrBackend;
use crate::data::DeviceLoader;
use crate::error::Result;
use crate::eval::psnr::{BORDER, PsnrMeter, psnr_per_sample};
use crate::image::{RgbImage, colourise, rgb_to_images};
use crate::model::vsrnet::avg_pool_x4;
use crate::model::{FlowEstimator, VsrNet};

/// Results of one validation pass.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Mean per-sample MSE (Y in [0, 1]).
    pub loss: f64,
    pub psnr: PsnrMeter,
    pub psnr_bilinear: PsnrMeter,
    /// Of the first sample: low-resolution input, bilinear, prediction, HR target.
    pub images: Option<[RgbImage; 4]>,
}

impl Validation {
    pub fn samples(&self) -> usize {
        self.psnr.count()
    }
}

/// Runs `model` (inference mode) over every batch of `loader`.
pub fn validate<B: VsrBackend>(
    model: &VsrNet<B>,
    flownet: Option<&dyn FlowEstimator<B>>,
    loader: &mut DeviceLoader<B>,
) -> Result<Validation> {
    let mut loss_sum = 0.0;
    let mut psnr = PsnrMeter::default();
    let mut psnr_bilinear = PsnrMeter::default();
    let mut images = None;
    while let Some(batch) = loader.next() {
        let batch = batch?;
        let x = batch.frames;
        let [b, _, _, h, w] = x.dims();
        let centre = x.clone().narrow(2, model.centre(), 1).squeeze_dim::<4>(2); // [b, 3, h, w]
        let out = model.forward(x, flownet);
        let mse: Vec<f64> = (out.pred.clone() - out.target.clone())
            .powf_scalar(2.0)
            .reshape([b, h * w])
            .mean_dim(1)
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("f64 data");
        loss_sum += mse.iter().sum::<f64>();
        let p = psnr_per_sample(out.pred.clone(), out.target.clone(), BORDER);
        let p_bil = psnr_per_sample(out.bilinear.clone(), out.target.clone(), BORDER);
        for (i, window) in batch.windows.iter().enumerate() {
            psnr.add(&window.scene, p[i]);
            psnr_bilinear.add(&window.scene, p_bil[i]);
        }
        if images.is_none() {
            let first = |t: Tensor<B, 4>| t.narrow(0, 0, 1);
            let lr = rgb_to_images(avg_pool_x4(first(centre.clone()))).remove(0);
            let bilinear = colourise(first(out.bilinear), first(centre.clone())).remove(0);
            let pred = colourise(first(out.pred), first(centre.clone())).remove(0);
            let target = rgb_to_images(first(centre)).remove(0);
            images = Some([lr, bilinear, pred, target]);
        }
    }
    let n = psnr.count().max(1) as f64;
    Ok(Validation { loss: loss_sum / n, psnr, psnr_bilinear, images })
}
