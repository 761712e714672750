//! `vsr demo`: one real forward pass of VSRNet + FlowNetSD on a video window, written as a PNG
//! (bilinear baseline | VSRNet), with the PSNR of both against the true frame.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::BackendArgs;
use crate::backend::{BackendTask, VsrAutodiffBackend, dispatch};
use crate::checkpoint;
use crate::model::{FlowInput, VsrNetConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Input video.
    #[arg(long, default_value = "assets/bigbuckbunny.mp4")]
    pub video: PathBuf,
    /// First frame of the window.
    #[arg(long, default_value_t = 60)]
    pub start: usize,
    /// Frames per window (odd).
    #[arg(long, default_value_t = 3)]
    pub frames: usize,
    /// Centre crop HxW (multiples of 64).
    #[arg(long, default_value = "256x448")]
    pub crop: String,
    /// VSRNet weights (PyTorch state dict, safetensors or Burn record).
    #[arg(long, default_value = "tests/fixtures/vsrnet_zip.pth")]
    pub checkpoint: PathBuf,
    /// FlowNetSD checkpoint (`FlowNet2-SD_checkpoint.pth.tar`, may be gzipped), or `none`.
    #[arg(long, default_value = "tests/fixtures/flownet_sd.pth.tar.gz")]
    pub flownet: String,
    /// Frames FlowNetSD reads.
    #[arg(long, value_enum, default_value_t = FlowInput::Lr)]
    pub flow_input: FlowInput,
    /// Output PNG.
    #[arg(short, long, default_value = "demo.png")]
    pub out: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Parses `HxW`.
pub fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (h, w) = s.split_once(['x', 'X']).with_context(|| format!("size `{s}` is not HxW"))?;
    Ok((h.trim().parse().with_context(|| format!("height in `{s}`"))?, w.trim().parse().with_context(|| format!("width in `{s}`"))?))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let kind = args.backend.kind();
    println!("backend: {kind}");
    dispatch(kind, args.backend.device, Demo(args))?
}

struct Demo(Args);

impl BackendTask for Demo {
    type Output = anyhow::Result<()>;
    fn run<B: VsrAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        demo::<B>(self.0, device)
    }
}

#[cfg(not(feature = "video"))]
fn demo<B: VsrAutodiffBackend>(_: Args, _: B::Device) -> anyhow::Result<()> {
    anyhow::bail!("`vsr demo` decodes video: this build lacks the `video` feature")
}

#[cfg(feature = "video")]
fn demo<B: VsrAutodiffBackend>(args: Args, device: B::Device) -> anyhow::Result<()> {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    let crop = parse_size(&args.crop)?;
    let config = VsrNetConfig::new().with_frames(args.frames).with_flow_input(args.flow_input);
    config.validate()?;
    let frames = crate::video::read_frames(&args.video, args.start, args.frames)?;
    let x = crate::video::frames_to_tensor::<I<B>>(&frames, crop, &device)?;

    let net = checkpoint::load_vsrnet::<B>(&args.checkpoint, &config, &device)
        .with_context(|| format!("loading VSRNet weights from {}", args.checkpoint.display()))?
        .valid();
    net.check_input(x.dims())?;
    let tmp = tempfile::tempdir()?;
    let flownet = match args.flownet.as_str() {
        "none" => {
            eprintln!("warning: --flownet none: no motion compensation, neighbour frames are used unwarped");
            None
        }
        path => {
            let mut path = PathBuf::from(path);
            if path.extension().is_some_and(|e| e == "gz") {
                path = checkpoint::gunzip_to(&path, tmp.path())?;
            }
            Some(checkpoint::load_flownet::<I<B>>(&path, &device).context("loading FlowNetSD")?)
        }
    };

    let t = Instant::now();
    let out = net.forward(x.clone(), flownet.as_ref().map(|n| n as &dyn crate::model::FlowEstimator<_>));
    let psnr = |a: burn::tensor::Tensor<I<B>, 4>| -> f32 {
        let mse: f32 = crate::model::vsrnet::mse(a, out.target.clone()).into_scalar().to_string().parse().unwrap_or(f32::NAN);
        10.0 * (1.0 / mse).log10()
    };
    let (p_pred, p_bil) = (psnr(out.pred.clone()), psnr(out.bilinear.clone()));
    <I<B> as Backend>::sync(&device)?;
    println!("forward: {:.2} s; PSNR (Y): VSRNet {p_pred:.2} dB, bilinear {p_bil:.2} dB", t.elapsed().as_secs_f32());

    let centre = x.narrow(2, net.centre(), 1).squeeze_dim::<4>(2);
    let pred = crate::image::colourise(out.pred, centre.clone()).remove(0);
    let bilinear = crate::image::colourise(out.bilinear, centre).remove(0);
    crate::image::RgbImage::hstack(&[bilinear, pred]).save_png(&args.out)?;
    println!("wrote {} (left: bilinear, right: VSRNet)", args.out.display());
    Ok(())
}
