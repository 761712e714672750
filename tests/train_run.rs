//! `vsr train` end to end, as a user runs it (the real binary, CPU backend), on bikes.mp4 split at
//! its cuts and transcoded to 136p: exact resume after `kill -9`, the same curve for the same
//! seed whatever the thread counts, Ctrl-C, TensorBoard files that TensorBoard itself reads, and
//! bad input answered with clear errors.
#![cfg(feature = "video")]

mod common;
#[path = "common/train_cli.rs"]
mod train_cli;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use train_cli::{run_ok, scalars};
use vsr::train::checkpoint;
use vsr::train::tfevents;

type B = common::CpuAd;

/// `vsr train` with small, fast settings, plus `extra`.
fn train_cmd(runs: &Path, extra: &[&str]) -> Command {
    let defaults = [
        ("--resolution", "136p"),
        ("--batch", "2"),
        ("--crop", "64x128"),
        ("--val-crop", "64x128"),
        ("--flownet", "none"),
        ("--seed", "5"),
        ("--workers", "1"),
    ];
    train_cli::train_cmd(runs, &defaults, extra)
}

/// VSRNet's weights and BatchNorm statistics in a checkpoint, as flat f32 vectors.
fn weights(ckpt: &Path) -> Vec<Vec<f32>> {
    use burn::module::Module;
    let c = checkpoint::load::<B>(ckpt, &Default::default()).unwrap();
    let net = vsr::model::VsrNetConfig::new().init::<B>(&Default::default()).load_record(c.model);
    let v = |t: burn::tensor::Tensor<B, 4>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let bn = net.conv2.bn.as_ref().unwrap();
    vec![
        v(net.conv1.conv.weight.val()),
        v(net.conv2.conv.weight.val()),
        v(net.conv3.weight.val()),
        bn.running_mean.value().into_data().convert::<f32>().to_vec().unwrap(),
        bn.running_var.value().into_data().convert::<f32>().to_vec().unwrap(),
    ]
}

/// 8 steps straight, against 4 steps + `kill -9` + `--resume` + 4 steps: the same weights and
/// BatchNorm statistics, bit for bit, and the same loss at every step. Both validate every 3
/// steps with precise BN, which rewrites the BatchNorm statistics at steps 3 and 6.
#[test]
fn resume_after_kill_is_bit_exact() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    let run = ["--max-steps", "8", "--checkpoint-every", "4", "--val-every", "3", "--precise-bn", "4"];
    let out = run_ok(train_cmd(runs, &[&run[..], &["--name", "straight"]].concat()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("precise BN"), "{}", String::from_utf8_lossy(&out.stdout));

    let mut child = train_cmd(runs, &[&run[..], &["--name", "killed"]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpts = runs.join("killed/checkpoints");
    let t = Instant::now();
    while !ckpts.join(checkpoint::step_name(4)).exists() {
        assert!(t.elapsed() < Duration::from_secs(300), "no checkpoint at step 4 after 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its step-4 checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!ckpts.join(checkpoint::step_name(8)).exists(), "killed too late to test anything");
    let out = run_ok({
        let mut c = Command::new(env!("CARGO_BIN_EXE_vsr"));
        c.args(["train", "--backend", "cpu", "--resume"]).arg(runs.join("killed"));
        c
    });
    assert!(String::from_utf8_lossy(&out.stdout).contains("resuming from"), "{}", String::from_utf8_lossy(&out.stdout));

    let straight = weights(&runs.join("straight/checkpoints").join(checkpoint::step_name(8)));
    let resumed = weights(&ckpts.join(checkpoint::step_name(8)));
    for (a, b) in straight.iter().zip(&resumed) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "weights differ after resume");
    }
    // The loss curve: the resumed run re-logs the steps after its checkpoint (5..8); the last
    // value of each step must equal the straight run's.
    let mut resumed_loss = std::collections::BTreeMap::new();
    for (s, v) in scalars(&runs.join("killed"), "train/loss") {
        resumed_loss.insert(s, v);
    }
    let straight_loss = scalars(&runs.join("straight"), "train/loss");
    assert_eq!(straight_loss.len(), 8);
    for (s, v) in straight_loss {
        assert_eq!(resumed_loss.get(&s).map(|x| x.to_bits()), Some(v.to_bits()), "loss at step {s}");
    }
}

/// The same seed gives the same curve, bit for bit, with 1 or 2 compute threads and 1 or 2
/// decoding threads; a different seed gives another.
#[test]
fn same_seed_same_curve_whatever_the_threads() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    let curve = |name: &str, threads: &str, workers: &str, seed: &str| {
        let mut c = train_cmd(runs, &["--max-steps", "4", "--name", name, "--workers", workers, "--seed", seed]);
        c.env("RAYON_NUM_THREADS", threads);
        run_ok(c);
        scalars(&runs.join(name), "train/loss").into_iter().map(|(_, v)| v.to_bits()).collect::<Vec<_>>()
    };
    let a = curve("a", "1", "1", "5");
    assert_eq!(a.len(), 4);
    assert_eq!(a, curve("b", "2", "2", "5"), "another thread count changed the curve");
    assert_ne!(a, curve("c", "2", "1", "6"), "another seed gave the same curve");
}

/// Every tag the run promises, read by TensorBoard's own EventAccumulator (the `tensorboard`
/// Python package, which `just setup` installs; CI must have it).
#[test]
fn tensorboard_reads_the_run() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    run_ok(train_cmd(runs, &["--max-steps", "3", "--image-every", "2", "--val-every", "2", "--name", "tb"]));
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"images": 0, "scalars": 0})
acc.Reload()
tags = acc.Tags()
out = {"scalars": {t: [e.step for e in acc.Scalars(t)] for t in tags["scalars"]},
       "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)] for t in tags["images"]}}
print(json.dumps(out))
"#;
    let py = Command::new("python3").arg("-c").arg(script).arg(runs.join("tb")).output();
    let py = match py {
        Ok(o) if o.status.success() => o,
        Ok(o) if std::env::var_os("CI").is_none() && String::from_utf8_lossy(&o.stderr).contains("No module named") => {
            eprintln!("SKIPPED: the tensorboard Python package is not installed (`just setup` installs it; CI requires it)");
            return;
        }
        Ok(o) => panic!("TensorBoard could not read the run:\n{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("python3: {e}"),
    };
    let got: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    for tag in ["train/loss", "train/lr", "train/loss_scale", "time/data_ms", "time/step_ms"] {
        assert_eq!(got["scalars"][tag], serde_json::json!([0, 1, 2]), "{tag}");
    }
    for tag in ["val/loss", "val/psnr", "val/psnr_bilinear"] {
        assert_eq!(got["scalars"][tag], serde_json::json!([2, 3]), "{tag}");
    }
    for tag in ["lr_input", "bilinear", "prediction", "target"] {
        // Training images at steps 0 and 2 (64x128 crops; the low-resolution input is 16x32).
        let (w, h) = if tag == "lr_input" { (32, 16) } else { (128, 64) };
        assert_eq!(got["images"][format!("train/{tag}")], serde_json::json!([[0, w, h], [2, w, h]]), "train/{tag}");
        assert_eq!(got["images"][format!("val/{tag}")].as_array().map(|a| a.len()), Some(2), "val/{tag}");
    }
}

/// Ctrl-C: the run finishes its step, saves, says how to continue, exits cleanly.
#[test]
fn ctrl_c_saves_and_exits() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    let child = train_cmd(runs, &["--max-steps", "1000", "--name", "int"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let t = Instant::now();
    // Interrupt once training is under way (the first step's scalars are in the event file).
    while tfevents::event_files(&runs.join("int")).map(|f| f.is_empty()).unwrap_or(true)
        || scalars(&runs.join("int"), "train/loss").is_empty()
    {
        assert!(t.elapsed() < Duration::from_secs(300), "training did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("interrupted at step") && stdout.contains("--resume"), "{stdout}");
    let saved = checkpoint::list(&runs.join("int/checkpoints")).unwrap();
    let (step, _) = saved.first().expect("a checkpoint after Ctrl-C");
    assert!(*step >= 1 && *step < 1000);
}

#[test]
fn bad_input_is_a_clear_error() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    let fail = |c: &mut Command| -> String {
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = fail(train_cmd(runs, &["--crop", "100x128", "--name", "x"]).stdout(Stdio::null()));
    assert!(err.contains("--crop 100x128") && err.contains("multiples of 64"), "{err}");
    let err = fail(train_cmd(runs, &["--flownet", "/nonexistent/FlowNet2-SD.pth.tar", "--name", "y"]).stdout(Stdio::null()));
    assert!(err.contains("/nonexistent/FlowNet2-SD.pth.tar") && err.contains("--flownet none"), "{err}");
    let err = fail(train_cmd(runs, &["--resolution", "999p", "--name", "z"]).stdout(Stdio::null()));
    assert!(err.contains("999p"), "{err}");
    let err = fail(Command::new(env!("CARGO_BIN_EXE_vsr")).args(["train", "--backend", "cpu", "--resume", "/nonexistent/run"]));
    assert!(err.contains("/nonexistent/run"), "{err}");
    let err = fail(train_cmd(runs, &["--warp-grad", "fast", "--name", "w"]).stdout(Stdio::null()));
    assert!(err.contains("--warp-grad") && err.contains("deterministic, atomic"), "{err}");
}
