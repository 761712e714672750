//! The `vsr train` harness of the end-to-end training tests (tests/train_run.rs,
//! tests/parallel.rs): the real binary on the CPU backend, on bikes.mp4 split at its cuts and
//! transcoded to 136p. Included with `#[path = "common/train_cli.rs"] mod train_cli;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use vsr::prep::split::{self, Cuts, SplitOptions, ValSplit};
use vsr::prep::transcode::{self, TranscodeOptions};
use vsr::train::tfevents::{self, Value};

/// Prepared data (136p scenes of bikes.mp4, one val scene), made once per test binary (removed
/// when it exits).
pub fn data() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let tmp = crate::common::process_tempdir();
        let src = tmp.join("bikes.mp4");
        std::fs::copy(crate::common::repo_dir().join("assets/bikes.mp4"), &src).unwrap();
        let data = tmp.join("data");
        let sopts = SplitOptions { cuts: Cuts::Detect { threshold: 0.2 }, val: ValSplit::Scenes(1), ..Default::default() };
        let r = split::split(&[src], &data, &sopts).unwrap();
        assert!(r.failed.is_empty(), "{}", r.summary());
        let topts = TranscodeOptions { resolutions: vec!["136p".parse().unwrap()], gop: 4, ..Default::default() };
        let r = transcode::transcode(&data, &topts).unwrap();
        assert!(r.failed.is_empty(), "{}", r.summary());
        data
    })
}

/// Small, fast settings: every flag of `defaults` that `extra` does not give, then `extra`.
pub fn train_cmd(runs: &Path, defaults: &[(&str, &str)], extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vsr"));
    c.args(["train", "--backend", "cpu"]);
    for &(flag, value) in defaults {
        if !extra.contains(&flag) {
            c.args([flag, value]);
        }
    }
    c.arg("--data").arg(data()).arg("--runs-dir").arg(runs).args(extra).env("VSR_CACHE_DIR", runs.join("cache"));
    c
}

/// stdout and stderr of a finished run.
pub fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn run_ok(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "vsr train failed:\n{}", text(&out));
    out
}

/// (step, value) of a scalar tag over every event file of a run, in order.
pub fn scalars(run: &Path, tag: &str) -> Vec<(u64, f32)> {
    let mut v = Vec::new();
    for f in tfevents::event_files(run).unwrap() {
        for r in tfevents::read_events(&f).unwrap() {
            if let (true, Value::Scalar(x)) = (r.tag == tag, &r.value) {
                v.push((r.step, *x));
            }
        }
    }
    v
}
