//! `vsr upscale` end to end on clips cut from the bundled bigbuckbunny.mp4 (which has AAC audio):
//! frame count, size, timestamps, the network's luma in every frame (lossless encode), audio
//! packets copied unchanged, every frame decodable; FlowNetSD on a tiny clip; corrupt inputs fail
//! naming the file and leave no output behind; the CLI.
#![cfg(feature = "video")]

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::FloatDType;
use common::*;
use video_rs::ffmpeg as ff;
use vsr::infer::{Engine, EngineOptions, LrFrame, window};
use vsr::model::VsrNetConfig;
use vsr::prep::media::{FrameReader, H264Settings, H264Writer, OutputExtras, Scaler};
use vsr::upscale::{UpscaleOptions, upscale};

use ff::format::Pixel;
use ff::software::scaling::Flags;

fn asset(name: &str) -> PathBuf {
    repo_dir().join("assets").join(name)
}

/// The first `n` frames of bigbuckbunny.mp4 scaled to `w` x `h` (at their timestamps), with the
/// audio packets up to their end, written by the library's own MP4 writer.
fn small_clip(path: &Path, n: usize, w: u32, h: u32) {
    let src = asset("bigbuckbunny.mp4");
    let mut reader = FrameReader::open(&src, 1).unwrap();
    let audio = reader.streams_of(ff::media::Type::Audio);
    assert_eq!(audio.len(), 1, "bigbuckbunny.mp4 has one audio stream");
    reader.keep_streams(&[audio[0].0]);
    let (vtb, atb) = (reader.time_base(), audio[0].2);
    let settings = H264Settings { crf: 18, preset: "veryfast".into(), gop: None, profile: None };
    let extras = OutputExtras { copy: vec![(audio[0].1.clone(), atb)], ..Default::default() };
    let mut writer =
        H264Writer::create_with(path, path, (w, h), ff::Rational::new(25, 1), vtb, &settings, 1, extras).unwrap();
    let mut scaler: Option<Scaler> = None;
    let mut packets = Vec::new();
    let mut end = 0.0;
    for _ in 0..n {
        let (pts, frame) = reader.next_frame().unwrap().unwrap();
        let s = scaler.get_or_insert_with(|| {
            Scaler::new((frame.format(), frame.width(), frame.height()), (Pixel::YUV420P, w, h), Flags::BICUBIC).unwrap()
        });
        writer.write(&mut s.run(&frame), pts).unwrap();
        end = (pts + 512) as f64 * f64::from(vtb); // 512 ticks of 1/12800 s: one frame at 25 fps
        packets.extend(reader.take_packets());
    }
    // read on until the audio has passed the last frame's end
    while !packets.last().is_some_and(|(_, p): &(usize, ff::Packet)| p.pts().unwrap() as f64 * f64::from(atb) >= end) {
        if reader.next_frame().unwrap().is_none() {
            break;
        }
        packets.extend(reader.take_packets());
    }
    for (_, p) in packets.into_iter().filter(|(_, p)| (p.pts().unwrap() as f64 * f64::from(atb)) < end) {
        writer.write_copied(1, p, atb).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), n);
}

/// Every packet of every stream: (stream kind, pts in seconds, duration in seconds, bytes).
fn packets(path: &Path) -> Vec<(ff::media::Type, f64, f64, Vec<u8>)> {
    ff::init().unwrap();
    let mut ictx = ff::format::input(&path).unwrap();
    let kinds: Vec<(ff::media::Type, f64)> =
        ictx.streams().map(|s| (s.parameters().medium(), f64::from(s.time_base()))).collect();
    ictx.packets()
        .map(|(s, p)| {
            let (kind, tb) = kinds[s.index()];
            (kind, p.pts().unwrap_or(0) as f64 * tb, p.duration() as f64 * tb, p.data().unwrap_or(&[]).to_vec())
        })
        .collect()
}

fn audio_of(path: &Path) -> Vec<(f64, f64, Vec<u8>)> {
    packets(path).into_iter().filter(|p| p.0 == ff::media::Type::Audio).map(|p| (p.1, p.2, p.3)).collect()
}

/// Every decoded frame: (pts in seconds, width, height, luma rows).
fn decode(path: &Path) -> Vec<(f64, u32, u32, Vec<u8>)> {
    let mut reader = FrameReader::open(path, 1).unwrap();
    let tb = f64::from(reader.time_base());
    let mut out = Vec::new();
    while let Some((pts, frame)) = reader.next_frame().unwrap() {
        assert_eq!(frame.format(), Pixel::YUV420P);
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let luma = (0..h).flat_map(|y| frame.data(0)[y * frame.stride(0)..y * frame.stride(0) + w].to_vec()).collect();
        out.push((pts as f64 * tb, frame.width(), frame.height(), luma));
    }
    out
}

/// The network's input frames of a clip, converted as `vsr upscale` converts them.
fn lr_frames(path: &Path) -> Vec<LrFrame> {
    let mut reader = FrameReader::open(path, 1).unwrap();
    let mut out = Vec::new();
    while let Some((_, frame)) = reader.next_frame().unwrap() {
        let (w, h) = (frame.width(), frame.height());
        let mut s = Scaler::new((Pixel::YUV420P, w, h), (Pixel::RGB24, w, h), Flags::BILINEAR | Flags::ACCURATE_RND).unwrap();
        let rgb = s.run(&frame);
        out.push(LrFrame::from_rgb24(w as usize, h as usize, rgb.data(0), rgb.stride(0)));
    }
    out
}

fn engine(flownet: bool) -> Engine<Cpu> {
    let device = Default::default();
    let net = vsr::checkpoint::load_vsrnet::<Cpu>(&fixture("vsrnet_zip.pth"), &VsrNetConfig::new(), &device).unwrap();
    let flow = flownet.then(|| vsr::checkpoint::load_flownet::<Cpu>(&flownet_checkpoint(), &device).unwrap());
    Engine::new(net, flow, device, EngineOptions { tile: 64, dtype: FloatDType::F32 })
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn upscale_keeps_frames_timestamps_and_audio_and_writes_the_network_luma() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.mp4");
    // 36x20: not a multiple of 16, so padding and cropping are exercised
    small_clip(&input, 7, 36, 20);
    let output = tmp.path().join("out.mp4");
    let engine = engine(false);
    // crf 0: lossless, so that the decoded luma is exactly what was written
    let options = UpscaleOptions { crf: 0, preset: "ultrafast".into(), batch: 3, ..Default::default() };
    let report = upscale(&engine, &input, &output, &options).unwrap();
    println!("{report:?}");
    assert_eq!((report.frames, report.output_size, report.audio_streams), (7, (144, 80), 1));
    assert_eq!(files_in(tmp.path()), ["in.mp4", "out.mp4"]);

    // frames and timestamps
    let (ins, outs) = (decode(&input), decode(&output));
    assert_eq!(outs.len(), 7);
    for (i, o) in ins.iter().zip(&outs) {
        assert!((i.0 - o.0).abs() < 1e-6, "timestamps {} vs {}", i.0, o.0);
        assert_eq!((o.1, o.2), (144, 80));
    }

    // audio: present, packet for packet
    let (ain, aout) = (audio_of(&input), audio_of(&output));
    assert!(!ain.is_empty());
    assert_eq!(ain.len(), aout.len(), "audio packets");
    for (a, b) in ain.iter().zip(&aout) {
        assert!((a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-6, "audio timing {:?} vs {:?}", (a.0, a.1), (b.0, b.1));
        assert_eq!(a.2, b.2, "audio bytes");
    }

    // luma: Y' = 16 + 219 y of the window centred on each frame, edges repeated
    let lr = lr_frames(&input);
    let windows: Vec<Vec<&LrFrame>> = (0..7).map(|c| window(c, 3, 7).into_iter().map(|i| &lr[i]).collect()).collect();
    let srs = engine.run(&windows).unwrap();
    for (k, (sr, o)) in srs.iter().zip(&outs).enumerate() {
        let want: Vec<u8> = sr.y.iter().map(|v| (16.0 + 219.0 * v.clamp(0.0, 1.0)).round() as u8).collect();
        let diff = want.iter().zip(&o.3).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert_eq!(diff, 0, "frame {k}: luma differs by up to {diff}");
    }
}

#[test]
fn upscale_with_flownet_on_a_tiny_clip() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("tiny.mp4");
    small_clip(&input, 3, 16, 12);
    let output = tmp.path().join("tiny_x4.mkv");
    let options = UpscaleOptions { preset: "ultrafast".into(), ..Default::default() };
    let report = upscale(&engine(true), &input, &output, &options).unwrap();
    assert_eq!((report.frames, report.output_size), (3, (64, 48)));
    let frames = decode(&output);
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| (f.1, f.2) == (64, 48)));
    assert_eq!(audio_of(&output).len(), audio_of(&input).len());
}

#[test]
fn corrupt_inputs_fail_naming_the_file_and_leave_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.mp4");
    small_clip(&good, 4, 16, 12);
    let bytes = std::fs::read(&good).unwrap();
    let mut cases = vec![
        ("garbage.mp4", b"this is not a video at all".repeat(100)),
        ("truncated.mp4", bytes[..bytes.len() * 6 / 10].to_vec()),
        ("empty.mp4", Vec::new()),
    ];
    // zeros over the middle of the media data: the failure comes mid-way, once the output exists
    let mid = tmp.path().join("mid.mp4");
    small_clip(&mid, 12, 32, 16);
    let mut zeroed = std::fs::read(&mid).unwrap();
    let find = |tag: &[u8]| zeroed.windows(4).position(|w| w == tag).unwrap();
    let (mdat, moov) = (find(b"mdat") + 4, find(b"moov"));
    assert!(mdat < moov, "the writer puts the index last");
    let span = moov - mdat;
    zeroed[mdat + span * 3 / 10..mdat + span * 7 / 10].fill(0);
    cases.push(("zeroed.mp4", zeroed));
    let engine = engine(false);
    for (name, data) in cases {
        let dir = tmp.path().join(name.replace('.', "_"));
        std::fs::create_dir(&dir).unwrap();
        let input = dir.join(name);
        std::fs::write(&input, data).unwrap();
        let output = dir.join("out.mp4");
        let err = upscale(&engine, &input, &output, &UpscaleOptions::default()).unwrap_err().to_string();
        println!("{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
        if name == "zeroed.mp4" {
            assert!(err.contains("corrupt video data"), "{err}");
        }
        assert_eq!(files_in(&dir), [name], "{name}: something was left behind");
    }
    // a missing input, an unknown container
    let err = upscale(&engine, &tmp.path().join("nope.mp4"), &tmp.path().join("o.mp4"), &UpscaleOptions::default());
    assert!(err.unwrap_err().to_string().contains("nope.mp4"));
    let err = upscale(&engine, &good, &tmp.path().join("o.avi"), &UpscaleOptions::default());
    assert!(err.unwrap_err().to_string().contains("o.avi"));
    assert!(!tmp.path().join("o.mp4").exists() && !tmp.path().join("o.avi").exists());
}

#[test]
fn cli_upscale_and_refusing_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("clip.mp4");
    small_clip(&input, 3, 16, 12);
    let output = tmp.path().join("clip_x4.mp4");
    let json = tmp.path().join("report.json");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vsr"))
            .arg("upscale")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .args(["--flownet", "none", "--backend", "cpu", "--preset", "ultrafast", "--checkpoint"])
            .arg(fixture("vsrnet_zip.pth"))
            .arg("--json")
            .arg(&json)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // not a terminal: plain progress lines, no carriage returns
    assert!(!stderr.contains('\r'), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["frames"], 3);
    assert_eq!(report["output_size"], serde_json::json!([64, 48]));
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(run(&["-y", "-q"]).status.success());
}
