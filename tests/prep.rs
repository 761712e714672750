//! `vsr prep` end to end on the bundled clips: scene detection on bikes.mp4, frame-exact audio-free
//! splits, transcode sizes and GOPs (checked by demuxing packets here, independently of the
//! library), bad inputs failing alone, variable frame rate made constant, idempotent reruns.
#![cfg(feature = "video")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use video_rs::ffmpeg as ff;
use vsr::prep::manifest::{Manifest, Split};
use vsr::prep::media::{FrameReader, H264Settings, H264Writer};
use vsr::prep::split::{self, Cuts, SplitOptions, ValSplit};
use vsr::prep::transcode::{self, TranscodeOptions};
use vsr::prep::{Resolution, frames};

fn asset(name: &str) -> PathBuf {
    common::repo_dir().join("assets").join(name)
}

/// What an independent demux pass sees in a file.
#[derive(Debug)]
struct Demuxed {
    width: u32,
    height: u32,
    has_audio: bool,
    avg_rate: f64,
    /// (pts in seconds, keyframe) of every video packet, in decode order.
    packets: Vec<(f64, bool)>,
}

fn demux(path: &Path) -> Demuxed {
    ff::init().unwrap();
    let mut ictx = ff::format::input(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = ictx.streams().best(ff::media::Type::Video).expect("video stream");
    let (index, tb, avg_rate) = (st.index(), f64::from(st.time_base()), f64::from(st.avg_frame_rate()));
    let dec = ff::codec::context::Context::from_parameters(st.parameters()).unwrap().decoder().video().unwrap();
    let (width, height) = (dec.width(), dec.height());
    let has_audio = ictx.streams().any(|s| s.parameters().medium() == ff::media::Type::Audio);
    let packets = ictx
        .packets()
        .filter(|(s, _)| s.index() == index)
        .map(|(_, p)| (p.pts().expect("pts") as f64 * tb, p.is_key()))
        .collect();
    Demuxed { width, height, has_audio, avg_rate, packets }
}

/// Longest run of packets from one keyframe to the next (decode order).
fn longest_gop(packets: &[(f64, bool)]) -> usize {
    assert!(packets[0].1, "the first packet is a keyframe");
    let keys: Vec<usize> = packets.iter().enumerate().filter(|(_, p)| p.1).map(|(i, _)| i).collect();
    keys.windows(2).map(|w| w[1] - w[0]).chain([packets.len() - keys[keys.len() - 1]]).max().unwrap()
}

fn copy_asset(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(asset(name), &to).unwrap();
    to
}

/// Every file under `dir` with its modification time.
fn mtimes(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.insert(p.clone(), e.metadata().unwrap().modified().unwrap());
            out.extend(mtimes(&p));
        } else {
            out.insert(p.clone(), e.metadata().unwrap().modified().unwrap());
        }
    }
    out
}

#[test]
fn detect_finds_the_five_cuts_of_bikes_within_a_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_asset("bikes.mp4", tmp.path());
    let data = tmp.path().join("data");
    let opts = SplitOptions { cuts: Cuts::Detect { threshold: 0.2 }, val: ValSplit::Scenes(1), ..Default::default() };
    let report = split::split(&[src.clone()], &data, &opts).unwrap();
    assert!(report.failed.is_empty(), "{}", report.summary());
    let m = Manifest::load(&data).unwrap();
    let starts: Vec<f64> = m.scenes.iter().skip(1).map(|s| s.start_time).collect();
    let expected = [1.20, 3.04, 5.48, 7.48, 9.68];
    assert_eq!(starts.len(), expected.len(), "cuts found: {starts:?}");
    for (got, want) in starts.iter().zip(expected) {
        assert!((got - want).abs() <= 0.04 + 1e-9, "cut at {got} s, expected {want} s (25 fps)");
    }
    // Scenes tile the source frame-exactly, each file holds exactly its frames.
    assert_eq!(m.scenes.iter().map(|s| s.frames).sum::<usize>(), 250);
    for w in m.scenes.windows(2) {
        assert_eq!(w[0].end_frame, w[1].start_frame);
    }
    for s in &m.scenes {
        let d = demux(&data.join(&s.path));
        assert_eq!(d.packets.len(), s.frames, "{}", s.name);
        assert_eq!((d.width, d.height), (640, 272));
    }
    assert_eq!(m.scenes.last().unwrap().split, Split::Val);
    assert!(data.join("orig/scenes/val/bikes_005.mp4").exists());
    assert!(data.join("orig/scenes/train/bikes_000.mp4").exists());

    // A timestamps file cuts at the same frames (seconds and HH:MM:SS.mmm).
    let cuts = tmp.path().join("cuts.txt");
    std::fs::write(&cuts, "# two of the cuts\n1.2\n00:00:03.040\n").unwrap();
    let data2 = tmp.path().join("data2");
    let opts = SplitOptions { cuts: Cuts::Files(vec![cuts]), val: ValSplit::Scenes(0), ..Default::default() };
    split::split(&[src], &data2, &opts).unwrap();
    let m = Manifest::load(&data2).unwrap();
    let ranges: Vec<(usize, usize)> = m.scenes.iter().map(|s| (s.start_frame, s.end_frame)).collect();
    assert_eq!(ranges, vec![(0, 30), (30, 76), (76, 250)]);
    assert!(m.scenes.iter().all(|s| s.split == Split::Train));
}

#[test]
fn bigbuckbunny_split_transcode_frames_then_rerun_does_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_asset("bigbuckbunny.mp4", tmp.path());
    assert!(demux(&src).has_audio, "the fixture has an audio track");
    let data = tmp.path().join("data");
    let sopts = SplitOptions { val: ValSplit::Scenes(0), ..Default::default() };
    let r = split::split(&[src.clone()], &data, &sopts).unwrap();
    assert!(r.notes.iter().any(|n| n.contains("audio removed")), "{}", r.summary());
    let m = Manifest::load(&data).unwrap();
    assert_eq!(m.scenes.len(), 1);
    let orig = demux(&data.join(&m.scenes[0].path));
    assert!(!orig.has_audio, "audio stream left in the scene");
    assert_eq!(orig.packets.len(), 132, "every frame kept");

    // 540p: requested size, no GOP longer than --gop; 1080p would up-scale: skipped with a note.
    let topts = TranscodeOptions {
        resolutions: vec!["540p".parse().unwrap(), "1080p".parse().unwrap()],
        gop: 4,
        ..Default::default()
    };
    let r = transcode::transcode(&data, &topts).unwrap();
    assert!(r.failed.is_empty(), "{}", r.summary());
    assert!(r.notes.iter().any(|n| n.starts_with("1080p: skipped 1 scene")), "{}", r.summary());
    assert!(!data.join("1080p").exists());
    let out = data.join("540p/scenes/train/bigbuckbunny_000.mp4");
    let d = demux(&out);
    assert_eq!((d.width, d.height), (960, 540));
    assert_eq!(d.packets.len(), 132);
    assert!(!d.has_audio);
    assert_eq!(longest_gop(&d.packets), 4, "keyframe every 4 frames");
    assert_eq!(d.packets.iter().filter(|p| p.1).count(), 33);

    let fopts = frames::FramesOptions { resolutions: vec!["540p".parse().unwrap()], jobs: 0, progress: false };
    let r = frames::frames(&data, &fopts).unwrap();
    assert!(r.failed.is_empty(), "{}", r.summary());
    let dir = data.join("540p/frames/train/bigbuckbunny_000");
    let names: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names.len(), 132);
    assert_eq!((names[0].as_str(), names[131].as_str()), ("000000.png", "000131.png"));
    let png = image::open(dir.join("000131.png")).unwrap();
    assert_eq!((png.width(), png.height()), (960, 540));
    // The last PNG is the last frame: it matches a decode of the transcode.
    let mut reader = FrameReader::open(&out, 1).unwrap();
    let mut last = None;
    while let Some((_, f)) = reader.next_frame().unwrap() {
        last = Some(f);
    }
    let last = last.unwrap();
    let (luma, rgb) = (last.data(0), png.to_rgb8());
    let mut diff = 0.0;
    for (x, y) in [(100u32, 100u32), (480, 270), (900, 500)] {
        let p = rgb.get_pixel(x, y).0;
        let y_png = 16.0 + (65.481 * p[0] as f64 + 128.553 * p[1] as f64 + 24.966 * p[2] as f64) / 255.0;
        diff += (y_png - luma[y as usize * last.stride(0) + x as usize] as f64).abs();
    }
    assert!(diff / 3.0 < 3.0, "PNG frame 131 differs from the decoded frame (mean |dY| {})", diff / 3.0);

    // Rerun every stage: nothing is written, not even the manifest.
    let before = mtimes(&data);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r1 = split::split(&[src], &data, &sopts).unwrap();
    let r2 = transcode::transcode(&data, &topts).unwrap();
    let r3 = frames::frames(&data, &fopts).unwrap();
    for r in [&r1, &r2, &r3] {
        assert!(r.done.is_empty() && r.failed.is_empty(), "{}", r.summary());
        assert_eq!(r.up_to_date, 1, "{}", r.summary());
    }
    assert_eq!(mtimes(&data), before, "a rerun touched files");
}

#[test]
fn bad_inputs_fail_alone_with_one_line_each() {
    let tmp = tempfile::tempdir().unwrap();
    let good = copy_asset("bikes.mp4", tmp.path());
    let bytes = std::fs::read(asset("bigbuckbunny.mp4")).unwrap();
    let truncated = tmp.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "not a video at all\n").unwrap();
    let missing = tmp.path().join("missing.mp4");
    let data = tmp.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(["prep", "split", "-q", "--val-scenes", "0", "--out"])
        .arg(&data)
        .args([&good, &truncated, &text, &missing])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit code 0 with bad inputs\n{stdout}\n{stderr}");
    for bad in [&truncated, &text, &missing] {
        let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("FAILED") && l.contains(&*bad.to_string_lossy())).collect();
        assert_eq!(lines.len(), 1, "one failure line naming {}:\n{stdout}", bad.display());
    }
    assert!(stderr.contains("3 input(s) failed"), "{stderr}");
    let m = Manifest::load(&data).unwrap();
    assert_eq!(m.scenes.len(), 1);
    assert_eq!(demux(&data.join(&m.scenes[0].path)).packets.len(), 250, "the good file was split whole");
    // no temporary files left behind
    let leftovers: Vec<_> = mtimes(&data).into_keys().filter(|p| p.to_string_lossy().contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn variable_frame_rate_comes_out_constant() {
    let tmp = tempfile::tempdir().unwrap();
    // 97 frames of bikes at irregular times (ms): 40 ms apart with jitter on every tenth frame
    // and frames 20, 21 and 50 missing (gaps of 120 and 80 ms). Nominal rate 25 fps, 4 s long.
    let vfr = tmp.path().join("vfr.mp4");
    let mut reader = FrameReader::open(&asset("bikes.mp4"), 1).unwrap();
    let settings = H264Settings { crf: 16, preset: "ultrafast".into(), gop: None, profile: None };
    let mut writer =
        H264Writer::create(&vfr, &vfr, (640, 272), ff::Rational::new(25, 1), ff::Rational::new(1, 1000), &settings, 1).unwrap();
    let mut written = 0;
    for i in 0..100i64 {
        let (_, mut frame) = reader.next_frame().unwrap().unwrap();
        if [20, 21, 50].contains(&i) {
            continue;
        }
        let jitter = if i % 10 == 5 { 12 } else { 0 };
        writer.write(&mut frame, i * 40 + jitter).unwrap();
        written += 1;
    }
    assert_eq!(writer.finish().unwrap(), 97);
    assert_eq!(written, 97);

    let data = tmp.path().join("data");
    let r = split::split(&[vfr], &data, &SplitOptions { val: ValSplit::Scenes(0), ..Default::default() }).unwrap();
    assert!(r.notes.iter().any(|n| n.contains("variable frame rate")), "{}", r.summary());
    let m = Manifest::load(&data).unwrap();
    assert!(m.scenes[0].vfr);
    assert_eq!((m.scenes[0].fps_num, m.scenes[0].fps_den), (25, 1));
    assert!((m.scenes[0].end_time - 4.0).abs() < 1e-6, "scene lasts {} s", m.scenes[0].end_time);

    let topts = TranscodeOptions { resolutions: vec![Resolution { height: 136 }], preset: "ultrafast".into(), ..Default::default() };
    let r = transcode::transcode(&data, &topts).unwrap();
    assert!(r.failed.is_empty(), "{}", r.summary());
    assert!(r.notes.iter().any(|n| n.contains("3 frames repeated, 0 dropped")), "{}", r.summary());
    let d = demux(&data.join("136p/scenes/train/vfr_000.mp4"));
    assert_eq!((d.width, d.height), (320, 136));
    assert_eq!(d.packets.len(), 100, "4 s at 25 fps");
    let mut pts: Vec<f64> = d.packets.iter().map(|p| p.0).collect();
    pts.sort_by(f64::total_cmp);
    for (k, t) in pts.iter().enumerate() {
        assert!((t - pts[0] - k as f64 * 0.04).abs() < 1e-3, "frame {k} at {t} s: not on the 25 fps grid");
    }
    assert!((d.avg_rate - 25.0).abs() < 0.01, "average rate {}", d.avg_rate);
    assert_eq!(Manifest::load(&data).unwrap().scenes[0].renditions["136p"].frames, 100);
}

/// Copies the video stream of `src` into `dst` with a display matrix rotating by `degrees`
/// (FFmpeg's `av_display_rotation_set` convention).
fn remux_with_display_matrix(src: &Path, dst: &Path, degrees: f64) {
    ff::init().unwrap();
    let mut ictx = ff::format::input(&src).unwrap();
    let ist = ictx.streams().best(ff::media::Type::Video).unwrap();
    let (index, itb, params) = (ist.index(), ist.time_base(), ist.parameters());
    let mut octx = ff::format::output(&dst).unwrap();
    {
        let mut ost = octx.add_stream(None::<ff::Codec>).unwrap();
        ost.set_parameters(params);
        // SAFETY: a fresh stream of a muxer that is not started; 9 i32 of side data.
        unsafe {
            let sd = ff::ffi::av_stream_new_side_data(
                ost.as_mut_ptr(),
                ff::ffi::AVPacketSideDataType::AV_PKT_DATA_DISPLAYMATRIX,
                36,
            ) as *mut i32;
            ff::ffi::av_display_rotation_set(sd, degrees);
        }
    }
    octx.write_header().unwrap();
    let otb = octx.stream(0).unwrap().time_base();
    for (s, mut p) in ictx.packets() {
        if s.index() == index {
            p.rescale_ts(itb, otb);
            p.set_stream(0);
            p.set_position(-1);
            p.write_interleaved(&mut octx).unwrap();
        }
    }
    octx.write_trailer().unwrap();
}

#[test]
fn display_matrix_is_applied_like_ffmpeg() {
    // A phone held upright: the matrix says -90 degrees (ffprobe: "rotation of -90.00 degrees"),
    // FFmpeg's autorotate turns the picture clockwise: 640x272 becomes 272x640.
    let tmp = tempfile::tempdir().unwrap();
    let rotated = tmp.path().join("phone.mp4");
    remux_with_display_matrix(&asset("bikes.mp4"), &rotated, 90.0);
    let data = tmp.path().join("data");
    let r = split::split(&[rotated], &data, &SplitOptions { val: ValSplit::Scenes(0), ..Default::default() }).unwrap();
    assert!(r.notes.iter().any(|n| n.contains("rotated 90 clockwise")), "{}", r.summary());
    let m = Manifest::load(&data).unwrap();
    assert_eq!((m.scenes[0].width, m.scenes[0].height), (272, 640));
    let scene = data.join(&m.scenes[0].path);
    let d = demux(&scene);
    assert_eq!((d.width, d.height, d.packets.len()), (272, 640, 250));

    let first = |p: &Path| FrameReader::open(p, 1).unwrap().next_frame().unwrap().unwrap().1;
    let (out, src) = (first(&scene), first(&asset("bikes.mp4")));
    let luma = |f: &ff::frame::Video, x: usize, y: usize| f.data(0)[y * f.stride(0) + x] as f64;
    let mean_diff = |map: &dyn Fn(usize, usize) -> (usize, usize)| {
        let mut s = 0.0;
        let mut n = 0.0;
        for y in (0..640).step_by(7) {
            for x in (0..272).step_by(5) {
                let (sx, sy) = map(x, y);
                s += (luma(&out, x, y) - luma(&src, sx, sy)).abs();
                n += 1.0;
            }
        }
        s / n
    };
    let clockwise = mean_diff(&|x, y| (y, 271 - x));
    let counter = mean_diff(&|x, y| (639 - y, x));
    assert!(clockwise < 3.0 && counter > 5.0 * clockwise, "clockwise {clockwise}, counter-clockwise {counter}");
}
