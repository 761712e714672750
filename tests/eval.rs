//! Inference and evaluation against references: MATLAB's bicubic `imresize` (BasicSR's port),
//! PSNR and SSIM on BT.601 luma (BasicSR's formulas and scikit-image), written to
//! tests/fixtures/eval by tests/fixtures/reference/make_eval_fixtures.py; the inference engine
//! against VSRNet's own forward pass (tiles, padding, fp16); `vsr eval` end to end on the fixture
//! clips, and its errors on bad input.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::{Distribution, FloatDType, Tensor, TensorData};
use common::*;
use vsr::eval::benchmark::{self, Degradation, EvalOptions, find_clips};
use vsr::eval::plane::{Plane, Rgb, to_u8};
use vsr::eval::resize::{bilinear, imresize, imresize_rgb};
use vsr::image::RgbImage;
use vsr::infer::{Engine, EngineOptions, LrFrame};
use vsr::model::vsrnet::upsample_bilinear;
use vsr::model::{FlowNetSD, VsrNet, VsrNetConfig};

fn eval_dir() -> PathBuf {
    fixture("eval")
}

struct Reference {
    json: serde_json::Value,
    tensors: BTreeMap<String, TensorData>,
}

fn reference() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| Reference {
        json: serde_json::from_str(&std::fs::read_to_string(eval_dir().join("reference.json")).unwrap()).unwrap(),
        tensors: vsr::tensors::read_safetensors(&eval_dir().join("reference.safetensors")).unwrap(),
    })
}

fn load(path: &Path) -> Rgb {
    Rgb::from_image(&RgbImage::load_png(path).unwrap())
}

/// An (H, W, 3) reference tensor as planes.
fn planes(name: &str) -> Rgb {
    let t = reference().tensors.get(name).unwrap_or_else(|| panic!("reference tensor {name}"));
    let (h, w) = (t.shape[0], t.shape[1]);
    let v = t.as_slice::<f32>().unwrap();
    Rgb { planes: std::array::from_fn(|c| Plane { width: w, height: h, data: (0..w * h).map(|i| f64::from(v[i * 3 + c])).collect() }) }
}

/// Largest difference of unrounded values, and of the uint8 images, with the count of differing
/// uint8 values.
fn compare(ours: &Rgb, theirs: &Rgb) -> (f64, u8, usize) {
    assert_eq!((ours.width(), ours.height()), (theirs.width(), theirs.height()));
    let mut max = 0f64;
    let (mut max8, mut n8) = (0u8, 0usize);
    for (a, b) in ours.planes.iter().zip(&theirs.planes) {
        for (x, y) in a.data.iter().zip(&b.data) {
            max = max.max((x - y).abs());
            let d = to_u8(*x).abs_diff(to_u8(*y));
            max8 = max8.max(d);
            n8 += usize::from(d > 0);
        }
    }
    (max, max8, n8)
}

fn frames() -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    for clip in find_clips(&eval_dir().join("gt")).unwrap() {
        for f in clip.frames {
            let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((clip.name.clone(), stem, f));
        }
    }
    assert_eq!(out.len(), 6);
    out
}

#[test]
fn imresize_down_matches_matlab_port() {
    let mut cases: Vec<(Rgb, String)> =
        frames().into_iter().map(|(clip, stem, path)| (load(&path), format!("{clip}/{stem}/lr"))).collect();
    cases.push((load(&eval_dir().join("odd.png")), "odd/lr".into())); // 67x53 -> 17x14
    for (gt, key) in cases {
        let ours = imresize_rgb(&gt, 0.25);
        let (max, max8, n8) = compare(&ours, &planes(&key));
        println!("{key}: {}x{}: max abs error {max:.2e}, uint8 max {max8} ({n8} values differ)", ours.width(), ours.height());
        assert!(max < 1e-3, "{key}: {max}");
        assert!(max8 <= 1, "{key}");
    }
}

#[test]
fn imresize_up_matches_matlab_port() {
    let lr = planes("bikes/000000/lr").quantised();
    let ours = imresize_rgb(&lr, 4.0);
    let (max, max8, n8) = compare(&ours, &planes("bikes/000000/bicubic"));
    println!("bicubic x4: max abs error {max:.2e}, uint8 max {max8} ({n8} values differ)");
    assert!(max < 1e-3 && max8 <= 1);
}

fn ref_scores(clip: &str, frame: &str, method: &str) -> [f64; 4] {
    let s = &reference().json["clips"][clip]["frames"][frame][method];
    ["psnr_basicsr", "ssim_basicsr", "psnr_skimage", "ssim_skimage"].map(|k| s[k].as_f64().unwrap())
}

#[test]
fn psnr_and_ssim_match_basicsr_and_scikit_image() {
    let border = reference().json["crop_border"].as_u64().unwrap() as usize;
    // the metrics alone, on the reference's own bicubic image
    let gt = load(&eval_dir().join("gt/bikes/000000.png"));
    let out = planes("bikes/000000/bicubic").quantised();
    let s = benchmark::score(&gt, &out, border);
    let [p, ss, p_sk, ss_sk] = ref_scores("bikes", "000000", "bicubic");
    println!("metrics alone: PSNR {:.6} vs {p:.6} (skimage {p_sk:.6}), SSIM {:.8} vs {ss:.8} (skimage {ss_sk:.8})", s.psnr, s.ssim);
    assert!((s.psnr - p).abs() < 1e-6 && (s.psnr - p_sk).abs() < 1e-6);
    assert!((s.ssim - ss).abs() < 1e-8 && (s.ssim - ss_sk).abs() < 1e-8);

    // resize and metrics together, every frame, both baselines
    let (mut dp, mut ds) = (0f64, 0f64);
    for (clip, stem, path) in frames() {
        let gt = load(&path);
        let lr = planes(&format!("{clip}/{stem}/lr")).quantised();
        let y = Plane::new(gt.width(), gt.height());
        let outs = benchmark::outputs(&lr, &y);
        for (method, img) in [("bicubic", &outs.bicubic), ("bilinear", &outs.bilinear)] {
            let s = benchmark::score(&gt, img, border);
            let [p, ss, p_sk, ss_sk] = ref_scores(&clip, &stem, method);
            dp = dp.max((s.psnr - p).abs()).max((s.psnr - p_sk).abs());
            ds = ds.max((s.ssim - ss).abs()).max((s.ssim - ss_sk).abs());
        }
    }
    println!("resize + metrics, 6 frames x 2 methods: max PSNR error {dp:.2e} dB, max SSIM error {ds:.2e}");
    assert!(dp < 0.01 && ds < 1e-4);
}

#[test]
fn bilinear_matches_burn_interpolate() {
    let device = Default::default();
    let x = Tensor::<Cpu, 4>::random([1, 1, 7, 9], Distribution::Uniform(0.0, 255.0), &device);
    let data = x.clone().into_data().to_vec::<f32>().unwrap();
    let plane = Plane { width: 9, height: 7, data: data.iter().map(|&v| f64::from(v)).collect() };
    let ours = bilinear(&plane, 36, 28);
    let burn = upsample_bilinear(x, [28, 36]).into_data().to_vec::<f32>().unwrap();
    let max = ours.data.iter().zip(&burn).map(|(a, b)| (a - f64::from(*b)).abs()).fold(0.0, f64::max);
    println!("bilinear vs Burn: {max:.2e}");
    assert!(max < 1e-3);
    // and imresize keeps working on planes too small for one reflection
    let tiny = Plane { width: 2, height: 3, data: vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0] };
    assert_eq!((imresize(&tiny, 0.25).width, imresize(&tiny, 0.25).height), (1, 1));
}

// ---- the inference engine -------------------------------------------------------------------

fn vsrnet(frames: usize) -> VsrNet<Cpu> {
    let config = VsrNetConfig::new().with_frames(frames);
    vsr::checkpoint::load_vsrnet::<Cpu>(&fixture("vsrnet_zip.pth"), &config, &Default::default()).unwrap()
}

fn flownet() -> FlowNetSD<Cpu> {
    static F: OnceLock<FlowNetSD<Cpu>> = OnceLock::new();
    F.get_or_init(|| vsr::checkpoint::load_flownet::<Cpu>(&flownet_checkpoint(), &Default::default()).unwrap()).clone()
}

fn random_frames(n: usize, w: usize, h: usize, seed: u64) -> Vec<LrFrame> {
    let mut state = seed;
    (0..n)
        .map(|_| LrFrame {
            width: w,
            height: h,
            rgb: (0..3 * w * h)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 33) % 256) as f32
                })
                .collect(),
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn engine_on_average_pooled_frames_matches_forward_on_hr_frames() {
    // forward() degrades HR windows itself; the engine takes the 4x4 average-pooled frames:
    // both must give the same prediction (flow from LR frames), here with FlowNetSD.
    let device = Default::default();
    let hr = random_frames(3, 64, 64, 1);
    let x: Vec<f32> = (0..3).flat_map(|c| (0..3).flat_map(move |f| (0..64 * 64).map(move |i| (c, f, i)))).map(|(c, f, i)| hr[f].rgb[c * 4096 + i]).collect();
    let x = Tensor::<Cpu, 5>::from_data(TensorData::new(x, [1, 3, 3, 64, 64]), &device);
    let net = vsrnet(3);
    let want = net.forward(x, Some(&flownet())).pred.into_data().to_vec::<f32>().unwrap();
    let lr: Vec<LrFrame> = hr
        .iter()
        .map(|f| {
            let img = Rgb { planes: std::array::from_fn(|c| Plane { width: 64, height: 64, data: f.rgb[c * 4096..(c + 1) * 4096].iter().map(|&v| f64::from(v)).collect() }) };
            let p = benchmark::avg_pool(&img, 4);
            LrFrame { width: 16, height: 16, rgb: p.planes.iter().flat_map(|q| q.data.iter().map(|&v| v as f32)).collect() }
        })
        .collect();
    let engine = Engine::new(net, Some(flownet()), device, EngineOptions { tile: 0, dtype: FloatDType::F32 });
    let got = engine.run(&[lr.iter().collect()]).unwrap();
    let d = max_diff(&got[0].y, &want);
    println!("engine vs forward: max abs difference {d:.2e}");
    assert!(d < 1e-4, "{d}");
    // fp16 weights and activations, FlowNetSD included
    let half = Engine::new(vsrnet(3), Some(flownet()), device, EngineOptions { tile: 0, dtype: FloatDType::F16 });
    let d16 = max_diff(&half.run(&[lr.iter().collect()]).unwrap()[0].y, &want);
    println!("fp16 engine vs fp32 forward: max abs difference {d16:.2e}");
    assert!(d16 < 2e-2, "{d16}");
}

#[test]
fn tiles_padding_and_fp16() {
    // 13x10: padded to 16x16, cropped back to 52x40; windows of 3 in a batch of 2
    let frames = random_frames(4, 13, 10, 7);
    let windows: Vec<Vec<&LrFrame>> = vec![frames[0..3].iter().collect(), frames[1..4].iter().collect()];
    let run = |tile: usize, dtype: FloatDType| {
        Engine::new(vsrnet(3), None, Default::default(), EngineOptions { tile, dtype }).run(&windows).unwrap()
    };
    let whole = run(0, FloatDType::F32);
    assert_eq!(whole.len(), 2);
    assert_eq!((whole[0].width, whole[0].height, whole[0].y.len()), (52, 40, 52 * 40));
    assert!(whole.iter().all(|f| f.y.iter().all(|v| (0.0..=1.0).contains(v))));
    let tiled = run(24, FloatDType::F32);
    let d = whole.iter().zip(&tiled).map(|(a, b)| max_diff(&a.y, &b.y)).fold(0.0, f32::max);
    println!("tiles of 24 vs whole frame: {d:.2e}");
    assert!(d < 1e-5, "{d}");
    // a window's result does not depend on its batch
    let alone = Engine::new(vsrnet(3), None, Default::default(), EngineOptions { tile: 0, dtype: FloatDType::F32 })
        .run(&windows[1..])
        .unwrap();
    assert!(max_diff(&alone[0].y, &whole[1].y) < 1e-5);
    let half = run(0, FloatDType::F16);
    let d16 = whole.iter().zip(&half).map(|(a, b)| max_diff(&a.y, &b.y)).fold(0.0, f32::max);
    println!("fp16 vs fp32: {d16:.2e}");
    assert!(d16 < 2e-2, "{d16}");
}

// ---- `vsr eval` -----------------------------------------------------------------------------

fn options(degradation: Degradation) -> EvalOptions {
    EvalOptions { degradation, crop_border: 4, batch: 2, lr: None, save: None }
}

#[test]
fn eval_reports_the_reference_baselines_on_the_fixture_clips() {
    let engine = Engine::new(vsrnet(3), None, Default::default(), EngineOptions::default());
    let clips = find_clips(&eval_dir().join("gt")).unwrap();
    let mut calls = 0;
    let report = benchmark::evaluate(&engine, &clips, &options(Degradation::Bicubic), |_, _, _| calls += 1).unwrap();
    assert_eq!(calls, 6);
    print!("{}", report.table());
    for c in &report.clips {
        assert_eq!(c.frames, 3);
        let mean = &reference().json["clips"][&c.clip]["mean"];
        for (method, s) in [("bicubic", c.mean.bicubic), ("bilinear", c.mean.bilinear)] {
            let p = mean[method]["psnr_basicsr"].as_f64().unwrap();
            let ss = mean[method]["ssim_basicsr"].as_f64().unwrap();
            println!("{} {method}: PSNR {:.4} vs {p:.4}, SSIM {:.6} vs {ss:.6}", c.clip, s.psnr, s.ssim);
            assert!((s.psnr - p).abs() < 0.01 && (s.ssim - ss).abs() < 1e-4);
        }
        assert!(c.mean.vsrnet.psnr.is_finite() && c.mean.vsrnet.ssim > -1.0 && c.mean.vsrnet.ssim <= 1.0);
    }
    let avg = (report.clips[0].mean.bicubic.psnr + report.clips[1].mean.bicubic.psnr) / 2.0;
    assert!((report.mean_over_clips.bicubic.psnr - avg).abs() < 1e-9);
}

#[test]
fn eval_cli_writes_table_json_and_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("eval.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(["eval", "--backend", "cpu", "-q", "--degradation", "avgpool", "--flownet"])
        .arg(flownet_checkpoint())
        .arg("--checkpoint")
        .arg(fixture("vsrnet_zip.pth"))
        .arg("--gt")
        .arg(eval_dir().join("gt"))
        .arg("--json")
        .arg(&json)
        .arg("--save")
        .arg(tmp.path().join("sr"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    assert!(stdout.contains("| bunny | 3 | 64x48 |") && stdout.contains("mean of clips"));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["degradation"], "avgpool");
    assert_eq!(report["flownet"], true);
    assert_eq!(report["clips"][1]["per_frame"].as_array().unwrap().len(), 3);
    let saved = RgbImage::load_png(&tmp.path().join("sr/bikes/000002.png")).unwrap();
    assert_eq!((saved.width, saved.height), (64, 48));
}

#[test]
fn eval_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |r: vsr::Result<()>| r.unwrap_err().to_string();
    // no such folder, an empty one
    let missing = tmp.path().join("missing");
    assert!(err(find_clips(&missing).map(drop)).contains("missing"));
    assert!(err(find_clips(tmp.path()).map(drop)).contains("no PNG frames"));
    // a corrupt PNG among good ones
    let clip = tmp.path().join("gt/clip");
    std::fs::create_dir_all(&clip).unwrap();
    std::fs::copy(eval_dir().join("gt/bunny/000000.png"), clip.join("a.png")).unwrap();
    std::fs::write(clip.join("b.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let engine = Engine::new(vsrnet(3), None, Default::default(), EngineOptions::default());
    let clips = find_clips(&tmp.path().join("gt")).unwrap();
    let e = err(benchmark::evaluate(&engine, &clips, &options(Degradation::Bicubic), |_, _, _| {}).map(drop));
    assert!(e.contains("b.png") && e.contains("PNG"), "{e}");
    // low-resolution frames of the wrong size
    std::fs::remove_file(clip.join("b.png")).unwrap();
    let lr = tmp.path().join("lr/clip");
    std::fs::create_dir_all(&lr).unwrap();
    std::fs::copy(eval_dir().join("gt/bunny/000000.png"), lr.join("a.png")).unwrap();
    let o = EvalOptions { lr: Some(tmp.path().join("lr")), ..options(Degradation::Bicubic) };
    let e = err(benchmark::evaluate(&engine, &clips, &o, |_, _, _| {}).map(drop));
    assert!(e.contains("lr/clip/a.png") && e.contains("not 1/4"), "{e}");
}

/// The engine on a GPU backend against the CPU (fp32, tiled, and fp16, with FlowNetSD):
/// `VSR_TEST_GPU=cuda cargo test --test eval -- --ignored`. Ignored by default (CI has no GPU);
/// when run, a missing GPU or variable fails it.
#[test]
#[ignore = "needs a GPU: set VSR_TEST_GPU=cuda|wgpu|tch|tch-cpu and pass --ignored"]
fn engine_on_requested_gpu() {
    fn check<B: vsr::backend::VsrBackend>(device: B::Device) {
        let frames = random_frames(4, 45, 30, 3); // padded to 48x32
        let windows: Vec<Vec<&LrFrame>> = vec![frames[0..3].iter().collect(), frames[1..4].iter().collect()];
        let cpu = Engine::new(vsrnet(3), Some(flownet()), Default::default(), EngineOptions { tile: 0, dtype: FloatDType::F32 })
            .run(&windows)
            .unwrap();
        let config = VsrNetConfig::new();
        for (tile, dtype, tol) in [(0, FloatDType::F32, 1e-3), (64, FloatDType::F32, 1e-3), (0, FloatDType::F16, 2e-2)] {
            let net = vsr::checkpoint::load_vsrnet::<B>(&fixture("vsrnet_zip.pth"), &config, &device).unwrap();
            let flow = vsr::checkpoint::load_flownet::<B>(&flownet_checkpoint(), &device).unwrap();
            let gpu = Engine::new(net, Some(flow), device.clone(), EngineOptions { tile, dtype }).run(&windows).unwrap();
            let d = cpu.iter().zip(&gpu).map(|(a, b)| max_diff(&a.y, &b.y)).fold(0.0, f32::max);
            println!("{}: tile {tile}, {dtype:?}: max abs difference to the CPU {d:.2e}", vsr::backend::name::<B>());
            assert!(d < tol, "{d}");
        }
    }
    let which = std::env::var("VSR_TEST_GPU").expect("set VSR_TEST_GPU=cuda, wgpu, tch or tch-cpu");
    match which.as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => check::<vsr::backend::Cuda>(burn::backend::cuda::CudaDevice::new(0)),
        #[cfg(feature = "wgpu")]
        "wgpu" => check::<vsr::backend::Wgpu>(Default::default()),
        #[cfg(feature = "tch")]
        tch if tch_test_device(tch).is_some() => check::<vsr::backend::Tch>(tch_test_device(tch).unwrap().0),
        other => panic!("VSR_TEST_GPU={other}: backend not compiled into this test build"),
    }
}
