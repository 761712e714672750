//! The loaders on real data: bikes.mp4 split at its five cuts, transcoded to 136p (320x136) with
//! keyframe intervals 1, 4 and 12, and written as PNG frames. Every window a loader returns is
//! checked pixel for pixel against a sequential decode of its scene file, independent of the
//! loader (FFmpeg decoding every frame in order, swscale to RGB as `vsr prep frames` does).
#![cfg(feature = "video")]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use video_rs::ffmpeg as ff;
use vsr::data::{CropMode, Dataset, DecoderChoice, HostBatch, Loader, LoaderConfig, LoaderState, SourceKind, Split, VideoDecoder};
use vsr::prep::media::{FrameReader, H264Settings, Scaler};
use vsr::prep::split::{self, Cuts, SplitOptions, ValSplit};
use vsr::prep::transcode::{self, TranscodeOptions};
use vsr::prep::{Resolution, frames};

const RES: &str = "136p";

struct Fixture {
    /// Scenes at 136p (keyframe every 4 frames) and their PNG frames.
    data: PathBuf,
    /// Data directories with the same scenes at keyframe intervals 1 and 12 (no PNGs).
    gops: Vec<(u32, PathBuf)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = common::process_tempdir();
        let src = tmp.join("bikes.mp4");
        std::fs::copy(common::repo_dir().join("assets/bikes.mp4"), &src).unwrap();
        let data = tmp.join("data");
        let sopts = SplitOptions { cuts: Cuts::Detect { threshold: 0.2 }, val: ValSplit::Scenes(1), ..Default::default() };
        let r = split::split(&[src], &data, &sopts).unwrap();
        assert!(r.failed.is_empty(), "{}", r.summary());
        let res: Resolution = RES.parse().unwrap();
        let topts = TranscodeOptions { resolutions: vec![res], gop: 4, ..Default::default() };
        let r = transcode::transcode(&data, &topts).unwrap();
        assert!(r.failed.is_empty(), "{}", r.summary());
        let r = frames::frames(&data, &frames::FramesOptions { resolutions: vec![res], jobs: 0, progress: false }).unwrap();
        assert!(r.failed.is_empty(), "{}", r.summary());
        let m = vsr::prep::manifest::Manifest::load(&data).unwrap();
        let mut gops = Vec::new();
        for gop in [1u32, 12] {
            let dir = tmp.join(format!("gop{gop}"));
            let settings = H264Settings { crf: 18, preset: "medium".into(), gop: Some(gop), profile: Some("high".into()) };
            for s in &m.scenes {
                let out = dir.join(RES).join("scenes").join(s.split.dir()).join(format!("{}.mp4", s.name));
                transcode::transcode_file(&data.join(&s.path), &out, res, None, None, &settings, 1, None).unwrap();
            }
            gops.push((gop, dir));
        }
        Fixture { data, gops }
    })
}

/// Every frame of a file as packed RGB24, decoded in order: (width, height, frames).
type Frames = Arc<(usize, usize, Vec<Vec<u8>>)>;

fn reference(path: &Path) -> Frames {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Frames>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(f) = cache.lock().unwrap().get(path) {
        return f.clone();
    }
    let mut reader = FrameReader::open(path, 1).unwrap();
    let mut scaler: Option<Scaler> = None;
    let mut out = Vec::new();
    let (mut w, mut h) = (0, 0);
    while let Some((_, frame)) = reader.next_frame().unwrap() {
        (w, h) = (frame.width() as usize, frame.height() as usize);
        assert_eq!(frame.format(), ff::format::Pixel::YUV420P);
        let s = scaler.get_or_insert_with(|| {
            Scaler::new(
                (ff::format::Pixel::YUV420P, w as u32, h as u32),
                (ff::format::Pixel::RGB24, w as u32, h as u32),
                ff::software::scaling::Flags::BICUBIC,
            )
            .unwrap()
        });
        let rgb = s.run(&frame);
        let mut packed = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            packed.extend_from_slice(&rgb.data(0)[y * rgb.stride(0)..][..w * 3]);
        }
        out.push(packed);
    }
    let f = Arc::new((w, h, out));
    cache.lock().unwrap().insert(path.to_path_buf(), f.clone());
    f
}

/// The window as the loader lays it out, (F, h, w, 3), cut from the reference decode.
fn expected_window(r: &Frames, start: usize, frames: usize, y0: usize, x0: usize, h: usize, w: usize) -> Vec<u8> {
    let (fw, all) = (r.0, &r.2);
    let mut out = Vec::with_capacity(frames * h * w * 3);
    for f in 0..frames {
        for y in 0..h {
            out.extend_from_slice(&all[start + f][((y0 + y) * fw + x0) * 3..][..w * 3]);
        }
    }
    out
}

/// Checks every window of `b`: inside its scene, crop inside the frame at even offsets, pixels
/// equal to the reference decode of `video_dir/<scene>.mp4`.
fn check_batch(b: &HostBatch, ds: &Dataset, video_dir: &Path) {
    let [n, c, f, h, w] = b.dims;
    assert_eq!((c, b.windows.len(), b.crops.len(), b.pixels.len()), (3, n, n, n * 3 * f * h * w));
    for (k, (win, &[y0, x0])) in b.windows.iter().zip(&b.crops).enumerate() {
        let scene = ds.scene(&win.scene).unwrap_or_else(|| panic!("unknown scene {}", win.scene));
        assert!(win.start + f <= scene.frames, "{win:?} runs past the end of its scene ({} frames)", scene.frames);
        assert!(y0 + h <= scene.height && x0 + w <= scene.width, "crop ({y0},{x0}) {h}x{w} outside {}x{}", scene.height, scene.width);
        assert!(y0 % 2 == 0 && x0 % 2 == 0, "odd crop offset ({y0},{x0})");
        let r = reference(&video_dir.join(format!("{}.mp4", win.scene)));
        let want = expected_window(&r, win.start, f, y0, x0, h, w);
        let got = &b.pixels[k * want.len()..(k + 1) * want.len()];
        if got != want.as_slice() {
            let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
            let px = i / 3;
            panic!(
                "epoch {} batch {} window {win:?} crop ({y0},{x0}): first difference at channel {}, frame {}, y {}, x {}: got {}, want {}",
                b.epoch,
                b.index,
                i % 3,
                px / (h * w),
                (px / w) % h,
                px % w,
                got[i],
                want[i]
            );
        }
    }
}

/// Takes up to `max` batches on another thread; a loader that hangs fails the test.
fn take(loader: Loader, max: usize) -> (Loader, Vec<HostBatch>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut loader = loader;
        let mut out = Vec::new();
        while out.len() < max {
            match loader.next_batch() {
                Some(b) => out.push(b.unwrap()),
                None => break,
            }
        }
        let _ = tx.send((loader, out));
    });
    rx.recv_timeout(Duration::from_secs(300)).expect("the loader hung")
}

fn open(kind: SourceKind, data: &Path, split: Split) -> Arc<Dataset> {
    Arc::new(Dataset::open(kind, data, RES, split).unwrap())
}

fn scenes_dir(data: &Path) -> PathBuf {
    data.join(RES).join("scenes").join("train")
}

fn cfg(seed: u64, workers: usize) -> LoaderConfig {
    let mut c = LoaderConfig::train(3, 4, 64, 128, seed);
    c.workers = workers;
    c
}

#[test]
fn windows_equal_a_sequential_decode_at_keyframe_intervals_1_4_12() {
    let fx = fixture();
    let dirs: Vec<(u32, &PathBuf)> = [(4, &fx.data)].into_iter().chain(fx.gops.iter().map(|(g, d)| (*g, d))).collect();
    for (gop, data) in dirs {
        let ds = open(SourceKind::Video, data, Split::Train);
        assert_eq!(ds.scenes().len(), 5, "bikes has six scenes, one in val");
        // stride 3: runs decode forward; stride 2: windows overlap and every window goes back;
        // two decoders for two workers: decoders are closed and reopened all the time.
        for (stride, max_open) in [(3, 32), (2, 2)] {
            let mut c = cfg(gop as u64, 2);
            c.stride = stride;
            c.max_open_decoders = max_open;
            c.repeat = false;
            let loader = Loader::new(ds.clone(), c, LoaderState::default()).unwrap();
            let bpe = loader.batches_per_epoch();
            let (loader, batches) = take(loader, usize::MAX);
            assert_eq!(batches.len(), bpe);
            let mut seen = BTreeSet::new();
            for b in &batches {
                check_batch(b, &ds, &scenes_dir(data));
                for w in &b.windows {
                    assert!(seen.insert((w.scene.clone(), w.start)), "{w:?} twice in an epoch");
                }
            }
            // every window of the epoch at this stride (drop_last leaves fewer than a batch out)
            assert_eq!(seen.len(), bpe * 4);
            assert!(ds.num_windows(3, stride) - seen.len() < 4);
            assert!(seen.iter().all(|(_, s)| s % stride == 0));
            let st = loader.stats();
            println!("gop {gop} stride {stride} max_open {max_open}: {st:?}");
            assert!(loader.skipped().is_empty(), "{:?}", loader.skipped());
            assert_eq!(st.failed_windows, 0);
        }
    }
}

#[test]
fn going_forward_decodes_each_frame_about_once() {
    // Runs of consecutive windows: a seek per run, then every frame decoded once.
    let fx = fixture();
    let ds = open(SourceKind::Video, &fx.data, Split::Train);
    let mut c = cfg(1, 1);
    c.repeat = false;
    let (loader, batches) = take(Loader::new(ds, c, LoaderState::default()).unwrap(), usize::MAX);
    let st = loader.stats();
    let used = batches.len() as u64 * 4 * 3;
    assert!(st.frames_decoded < used * 5 / 4, "{} frames decoded for {used} used: {st:?}", st.frames_decoded);
    assert!(st.seeks * 4 < st.windows, "a seek for most windows: {st:?}");
}

#[test]
fn png_and_video_loaders_give_the_same_batches() {
    let fx = fixture();
    let video = open(SourceKind::Video, &fx.data, Split::Train);
    let png = open(SourceKind::Png, &fx.data, Split::Train);
    assert_eq!(video.scenes(), png.scenes());
    assert_eq!(video.frame_size(), (136, 320));
    assert_eq!(png.frame_size(), (136, 320));
    assert!(png.disk_bytes() > 5 * video.disk_bytes(), "PNG {} B, video {} B", png.disk_bytes(), video.disk_bytes());
    let mut c = cfg(3, 2);
    c.repeat = false;
    let (_, vb) = take(Loader::new(video, c.clone(), LoaderState::default()).unwrap(), usize::MAX);
    let (_, pb) = take(Loader::new(png.clone(), c, LoaderState::default()).unwrap(), usize::MAX);
    assert_eq!(vb.len(), pb.len());
    for (v, p) in vb.iter().zip(&pb) {
        assert_eq!((&v.windows, &v.crops, v.dims, v.index), (&p.windows, &p.crops, p.dims, p.index));
        assert!(v.pixels == p.pixels, "batch {}: PNG and video pixels differ", v.index);
    }
    // and the PNG frames are the decoded frames
    check_batch(&pb[0], &png, &scenes_dir(&fx.data));
}

#[test]
fn same_batches_whatever_the_worker_count_and_exact_resume() {
    let fx = fixture();
    let ds = open(SourceKind::Video, &fx.data, Split::Train);
    let one = Loader::new(ds.clone(), cfg(11, 1), LoaderState::default()).unwrap();
    let bpe = one.batches_per_epoch();
    let n = bpe + bpe / 2 + 1;
    let (_, a) = take(one, n);
    let (three, b) = take(Loader::new(ds.clone(), cfg(11, 3), LoaderState::default()).unwrap(), n);
    assert_eq!(a.len(), n);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.epoch, x.index, &x.windows, &x.crops), (y.epoch, y.index, &y.windows, &y.crops));
        assert!(x.pixels == y.pixels, "epoch {} batch {}: pixels differ between 1 and 3 workers", x.epoch, x.index);
    }
    assert_eq!((a[bpe].epoch, a[bpe].index), (1, 0));
    assert_ne!(a[0].windows, a[bpe].windows, "epoch 1 repeats epoch 0's order");
    assert_eq!(three.state(), LoaderState { epoch: 1, batch: n - bpe });
    drop(three);

    // Resume in the middle of epoch 1: exactly the batches of the continuous run, and the
    // windows before it are not read.
    let k = bpe + 3;
    let at = LoaderState { epoch: a[k].epoch, batch: a[k].index };
    let mut c = cfg(11, 2);
    c.prefetch = 2;
    let resumed = Loader::new(ds, c, at).unwrap();
    let (resumed, r) = take(resumed, n - k);
    for (x, y) in a[k..].iter().zip(&r) {
        assert_eq!((x.epoch, x.index, &x.windows, &x.crops), (y.epoch, y.index, &y.windows, &y.crops));
        assert!(x.pixels == y.pixels);
    }
    let read = resumed.stats().windows;
    assert!(read <= ((n - k) + 2) as u64 * 4, "{read} windows read to deliver {} batches", n - k);
}

#[test]
fn crop_modes_and_validation_order() {
    let fx = fixture();
    let ds = open(SourceKind::Video, &fx.data, Split::Train);
    // random crops vary and stay inside (pixels checked in the other tests)
    let (_, b) = take(Loader::new(ds.clone(), cfg(5, 1), LoaderState::default()).unwrap(), 6);
    let offsets: BTreeSet<[usize; 2]> = b.iter().flat_map(|b| b.crops.clone()).collect();
    assert!(offsets.len() > 10, "random crops: {offsets:?}");
    // centre
    let mut c = cfg(5, 1);
    c.crop = CropMode::Centre { h: 64, w: 128 };
    let (_, b) = take(Loader::new(ds.clone(), c, LoaderState::default()).unwrap(), 2);
    assert!(b.iter().flat_map(|b| &b.crops).all(|&o| o == [36, 96]));
    check_batch(&b[0], &ds, &scenes_dir(&fx.data));
    // validation: full frames floored to 64 (136x320 -> 128x320 from row 4), scenes in order,
    // windows in order, one pass, last batch kept
    let val = open(SourceKind::Video, &fx.data, Split::Val);
    let mut c = LoaderConfig::val(3, 4);
    c.workers = 2;
    let (loader, b) = take(Loader::new(val.clone(), c, LoaderState::default()).unwrap(), usize::MAX);
    let windows: Vec<usize> = b.iter().flat_map(|b| b.windows.iter().map(|w| w.start)).collect();
    assert_eq!(windows, vec![0, 3], "bikes_005 has 8 frames: windows at 0 and 3");
    assert_eq!(b[0].dims, [2, 3, 3, 128, 320]);
    assert_eq!(b[0].crops, vec![[4, 0], [4, 0]]);
    check_batch(&b[0], &val, &fx.data.join(RES).join("scenes/val"));
    assert_eq!(loader.state(), LoaderState { epoch: 1, batch: 0 });
}

#[test]
fn short_scenes_are_skipped_and_named() {
    let fx = fixture();
    let ds = open(SourceKind::Png, &fx.data, Split::Train);
    let mut c = LoaderConfig::train(31, 2, 64, 128, 0);
    c.workers = 1;
    c.repeat = false;
    let loader = Loader::new(ds.clone(), c, LoaderState::default()).unwrap();
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].0.ends_with("bikes_000") && skipped[0].1.contains("30 frames"), "{skipped:?}");
    let (_, b) = take(loader, usize::MAX);
    assert!(b.iter().flat_map(|b| &b.windows).all(|w| w.scene != "bikes_000" && w.start + 31 <= ds.scene(&w.scene).unwrap().frames));
}

#[test]
fn bad_files_are_skipped_and_named_never_a_hang() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(RES).join("scenes/train");
    std::fs::create_dir_all(&dir).unwrap();
    let good = scenes_dir(&fx.data);
    for name in ["bikes_001", "bikes_003"] {
        std::fs::copy(good.join(format!("{name}.mp4")), dir.join(format!("{name}.mp4"))).unwrap();
    }
    let bytes = std::fs::read(good.join("bikes_002.mp4")).unwrap();
    std::fs::write(dir.join("truncated.mp4"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.join("notes.mp4"), "not a video at all\n").unwrap();
    // damaged in the middle: the index (at the end of the file) is intact, the pictures are not
    let mut damaged = std::fs::read(good.join("bikes_004.mp4")).unwrap();
    let (a, b) = (damaged.len() * 3 / 10, damaged.len() * 6 / 10);
    let mut x = 0x1234_5678u32;
    for byte in &mut damaged[a..b] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    std::fs::write(dir.join("damaged.mp4"), &damaged).unwrap();

    let ds = Arc::new(Dataset::open(SourceKind::Video, tmp.path(), RES, Split::Train).unwrap());
    let at_open: Vec<String> = ds.skipped().iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(at_open.contains(&"truncated.mp4".to_string()) && at_open.contains(&"notes.mp4".to_string()), "{:?}", ds.skipped());
    let mut c = cfg(2, 2);
    c.repeat = false;
    c.drop_last = false;
    let (loader, batches) = take(Loader::new(ds.clone(), c, LoaderState::default()).unwrap(), usize::MAX);
    let skipped = loader.skipped();
    for bad in ["truncated.mp4", "notes.mp4", "damaged.mp4"] {
        let hits: Vec<_> = skipped.iter().filter(|(p, _)| p.file_name().unwrap() == bad).collect();
        assert_eq!(hits.len(), 1, "{bad} named once: {skipped:?}");
    }
    assert!(loader.stats().failed_windows > 0);
    // Every window that came out is right: the good files' against their decode, the damaged
    // file's (pictures outside the damage) against the decode of the undamaged file.
    let originals = tempfile::tempdir().unwrap();
    for name in ["bikes_001", "bikes_003"] {
        std::fs::copy(good.join(format!("{name}.mp4")), originals.path().join(format!("{name}.mp4"))).unwrap();
    }
    std::fs::copy(good.join("bikes_004.mp4"), originals.path().join("damaged.mp4")).unwrap();
    let total: usize = batches.iter().map(|b| b.windows.len()).sum();
    assert!(total >= ds.scene("bikes_001").unwrap().num_windows(3, 3) + ds.scene("bikes_003").unwrap().num_windows(3, 3));
    for b in &batches {
        check_batch(b, &ds, originals.path());
    }
}

#[test]
fn clear_errors_up_front() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    // no such folder: says how to make it
    let e = Dataset::open(SourceKind::Video, tmp.path(), RES, Split::Train).unwrap_err().to_string();
    assert!(e.contains("vsr prep transcode"), "{e}");
    let e = Dataset::open(SourceKind::Png, tmp.path(), RES, Split::Train).unwrap_err().to_string();
    assert!(e.contains("vsr prep frames"), "{e}");
    // an empty folder
    std::fs::create_dir_all(tmp.path().join(RES).join("scenes/train")).unwrap();
    let e = Dataset::open(SourceKind::Video, tmp.path(), RES, Split::Train).unwrap_err().to_string();
    assert!(e.contains("empty data set"), "{e}");

    let ds = open(SourceKind::Video, &fx.data, Split::Train);
    let err = |c: LoaderConfig| Loader::new(ds.clone(), c, LoaderState::default()).err().expect("refused").to_string();
    let e = err(LoaderConfig::train(3, 2, 100, 128, 0));
    assert!(e.contains("100x128") && e.contains("multiples of 64"), "{e}");
    let e = err(LoaderConfig::train(3, 2, 192, 128, 0));
    assert!(e.contains("larger than") && e.contains("bikes_000.mp4 (136x320)"), "{e}");
    let e = err(LoaderConfig::train(4, 2, 64, 64, 0));
    assert!(e.contains("odd"), "{e}");
    let e = err(LoaderConfig::train(301, 2, 64, 64, 0));
    assert!(e.contains("no scene has 301 frames"), "{e}");
    let e = err(LoaderConfig::train(3, 1000, 64, 64, 0));
    assert!(e.contains("fewer than one batch"), "{e}");
}

#[test]
fn device_loader_uploads_float_pixels() {
    use burn::tensor::{DType, Tensor};
    let fx = fixture();
    let ds = open(SourceKind::Png, &fx.data, Split::Train);
    let mut c = cfg(4, 1);
    c.batch = 2;
    let host = Loader::new(ds.clone(), c.clone(), LoaderState::default()).unwrap().next_batch().unwrap().unwrap();
    let device = Default::default();
    let mut dl = vsr::data::DeviceLoader::<common::Cpu>::new(Loader::new(ds.clone(), c.clone(), LoaderState::default()).unwrap(), device);
    let b = dl.next().unwrap().unwrap();
    assert_eq!((b.epoch, b.index, &b.windows), (0, 0, &host.windows));
    let t: Tensor<common::Cpu, 5> = b.frames;
    assert_eq!(t.dims(), host.dims);
    let data = t.into_data();
    assert_eq!(data.dtype, DType::F32);
    let values = data.to_vec::<f32>().unwrap();
    let want = channels_first(&host);
    assert!(values.iter().zip(&want).all(|(v, p)| *v == *p as f32));
    assert_eq!(dl.next().unwrap().unwrap().index, 1);
    assert_eq!(dl.state(), LoaderState { epoch: 0, batch: 2 });
    // every batch of the pass, in order, through the one upload thread: the host's windows and
    // pixels
    let mut pass = c.clone();
    pass.repeat = false;
    let mut hosts = Loader::new(ds.clone(), pass.clone(), LoaderState::default()).unwrap();
    let mut dl = vsr::data::DeviceLoader::<common::Cpu>::new(Loader::new(ds.clone(), pass, LoaderState::default()).unwrap(), Default::default());
    let mut n = 0;
    loop {
        match (hosts.next_batch(), dl.next()) {
            (None, None) => break,
            (Some(h), Some(d)) => {
                let (h, d) = (h.unwrap(), d.unwrap());
                assert_eq!((d.index, &d.windows), (n, &h.windows), "batch {n}");
                let got = d.frames.into_data().to_vec::<f32>().unwrap();
                assert!(got.iter().zip(channels_first(&h)).all(|(v, p)| *v == p as f32), "batch {n}: pixels");
                n += 1;
            }
            (h, d) => panic!("batch {n}: the host loader {} and the device loader {}", h.is_some(), d.is_some()),
        }
        assert!(n < 1000, "the pass ends");
    }
    assert!(n >= 3, "a pass of several batches ({n})");
    #[cfg(feature = "wgpu")]
    {
        // CubeCL on Mesa's lavapipe (CI): WGSL has no u8, the packed path runs.
        let device = burn::backend::wgpu::WgpuDevice::default();
        let t = vsr::data::upload::<vsr::backend::Wgpu>(&host, &device);
        let got = t.into_data().to_vec::<f32>().unwrap();
        assert!(got.iter().zip(&want).all(|(v, p)| *v == *p as f32), "wgpu upload differs");
    }
}

/// The GPU to decode on in the NVDEC tests (`VSR_TEST_NVDEC=<CUDA device>`), None without.
fn nvdec_gpu() -> Option<usize> {
    std::env::var("VSR_TEST_NVDEC").ok().map(|v| v.parse().expect("VSR_TEST_NVDEC=<CUDA device index>"))
}

/// NVDEC decodes the same windows as the CPU decoder, bit for bit, at keyframe intervals 1, 4
/// and 12, going forward and with decoders closed and reopened all the time; nothing falls back
/// to the CPU decoder. On a GPU machine: `VSR_TEST_NVDEC=0 cargo test --test data -- --ignored`.
#[test]
#[ignore = "needs an NVIDIA GPU with NVDEC (VSR_TEST_NVDEC=<device>)"]
fn nvdec_windows_equal_the_cpu_decoders() {
    let gpu = nvdec_gpu().expect("set VSR_TEST_NVDEC=<CUDA device index>");
    let decoder = VideoDecoder::resolve(DecoderChoice::Nvdec, Some(gpu)).unwrap();
    let fx = fixture();
    let dirs: Vec<(u32, &PathBuf)> = [(4, &fx.data)].into_iter().chain(fx.gops.iter().map(|(g, d)| (*g, d))).collect();
    for (gop, data) in dirs {
        let ds = open(SourceKind::Video, data, Split::Train);
        for (stride, max_open) in [(3, 32), (2, 2)] {
            let mut c = cfg(gop as u64, 2);
            c.stride = stride;
            c.max_open_decoders = max_open;
            c.repeat = false;
            let (_, cpu) = take(Loader::new(ds.clone(), c.clone(), LoaderState::default()).unwrap(), usize::MAX);
            c.decoder = decoder;
            let (loader, gpu_batches) = take(Loader::new(ds.clone(), c, LoaderState::default()).unwrap(), usize::MAX);
            let st = loader.stats();
            println!("NVDEC, gop {gop} stride {stride} max_open {max_open}: {st:?}");
            assert_eq!((st.nvdec_fallbacks, st.failed_windows), (0, 0), "{st:?}");
            assert_eq!(cpu.len(), gpu_batches.len());
            for (a, b) in cpu.iter().zip(&gpu_batches) {
                assert_eq!((&a.windows, &a.crops), (&b.windows, &b.crops));
                assert!(a.pixels == b.pixels, "gop {gop} stride {stride}: batch {} differs between the CPU decoder and NVDEC", a.index);
            }
            check_batch(&gpu_batches[0], &ds, &scenes_dir(data));
        }
    }
}

/// `--decoder`: auto is the CPU where no GPU trains; asking for NVDEC without a GPU, or where the
/// GPU cannot decode, is an error that says so before any thread starts.
#[test]
fn decoder_choice_without_nvdec() {
    assert_eq!(VideoDecoder::resolve(DecoderChoice::Auto, None).unwrap(), VideoDecoder::Cpu);
    assert_eq!(VideoDecoder::resolve(DecoderChoice::Cpu, Some(0)).unwrap(), VideoDecoder::Cpu);
    let e = VideoDecoder::resolve(DecoderChoice::Nvdec, None).unwrap_err().to_string();
    assert!(e.contains("--decoder nvdec") && e.contains("GPU"), "{e}");
    if nvdec_gpu().is_some() || vsr::data::nvdec::Nvdec::check(0).is_ok() {
        return; // this machine has NVDEC: the test above covers it
    }
    // no NVDEC here (no driver, no GPU): auto falls back to the CPU, nvdec says why
    assert_eq!(VideoDecoder::resolve(DecoderChoice::Auto, Some(0)).unwrap(), VideoDecoder::Cpu);
    let e = VideoDecoder::resolve(DecoderChoice::Nvdec, Some(0)).unwrap_err().to_string();
    assert!(e.contains("NVDEC on GPU 0 cannot be used"), "{e}");
    let fx = fixture();
    let ds = open(SourceKind::Video, &fx.data, Split::Train);
    let mut c = cfg(0, 1);
    c.decoder = VideoDecoder::Nvdec(0);
    let e = Loader::new(ds, c, LoaderState::default()).err().expect("refused").to_string();
    assert!(e.contains("NVDEC on GPU 0 cannot be used"), "{e}");
}

/// A batch's pixels (B, F, H, W, 3) in the order of its tensor, (B, 3, F, H, W).
fn channels_first(b: &HostBatch) -> Vec<u8> {
    let [n, c, f, h, w] = b.dims;
    let mut out = Vec::with_capacity(b.pixels.len());
    for i in 0..n {
        for ch in 0..c {
            for px in 0..f * h * w {
                out.push(b.pixels[(i * f * h * w + px) * c + ch]);
            }
        }
    }
    out
}
