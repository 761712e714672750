//! Data-parallel `vsr train --gpus N` on the CPU backend (N workers on N CPU devices, gradients
//! averaged by burn-collective), as a user runs it (the real binary), on bikes.mp4 split at its
//! cuts and transcoded to 136p.
//!
//! **The exact comparison.** VSRNet's conv1 and conv2 have BatchNorm, whose batch statistics are
//! per worker (as per GPU in the original): 2 workers of 2 windows normalise each half of a
//! batch of 4 on its own, so they do NOT compute the step of one worker of batch 4 with one
//! BatchNorm group. They compute exactly the step of one worker of batch 4 cut into 2
//! micro-batches of 2 (`--accumulate 2`: gradient accumulation, each micro-batch with its own
//! BatchNorm statistics). That is the comparison made here: same windows per group, same
//! gradients up to the order of one f32 addition, so the trainable weights (convolutions,
//! BatchNorm gamma/beta) must agree to float tolerance after several Adam steps. BatchNorm's
//! running statistics are not compared: a worker updates them once per step from its own half,
//! the accumulating run twice (the checkpoint holds rank 0's, as DDP's rank 0 buffers).
#![cfg(feature = "video")]

mod common;
#[path = "common/train_cli.rs"]
mod train_cli;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use train_cli::{run_ok, scalars, text};
use vsr::train::checkpoint;

type B = common::CpuAd;

/// `vsr train` on the prepared data with small, fast settings (global batch 4), plus `extra`.
fn train_cmd(runs: &Path, extra: &[&str]) -> Command {
    let defaults = [
        ("--resolution", "136p"),
        ("--batch", "4"),
        ("--crop", "64x128"),
        ("--val-crop", "64x128"),
        ("--flownet", "none"),
        ("--seed", "5"),
        ("--workers", "1"),
        ("--image-every", "1000"),
    ];
    train_cli::train_cmd(runs, &defaults, extra)
}

fn resume_cmd(run: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vsr"));
    c.args(["train", "--backend", "cpu", "--resume"]).arg(run).args(extra);
    c
}

/// A process started with its stdout and stderr in one temporary file, so that no pipe fills
/// while nobody reads it.
struct Logged {
    child: std::process::Child,
    log: std::fs::File,
}

impl Logged {
    fn spawn(mut c: Command) -> Logged {
        let log = tempfile::tempfile().unwrap();
        let child = c.stdout(log.try_clone().unwrap()).stderr(log.try_clone().unwrap()).spawn().unwrap();
        Logged { child, log }
    }

    /// Waits up to `limit` (then kills it): its exit status (None if it was killed) and output.
    fn wait(mut self, limit: Duration) -> (Option<std::process::ExitStatus>, Vec<u8>) {
        let t = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if t.elapsed() > limit {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        use std::io::{Read, Seek};
        let mut out = Vec::new();
        self.log.seek(std::io::SeekFrom::Start(0)).unwrap();
        self.log.read_to_end(&mut out).unwrap();
        (status, out)
    }
}

/// Runs `c` to its end within `limit` (killed and reported if it takes longer: a hang).
fn run_within(c: Command, limit: Duration) -> std::process::Output {
    let (status, stdout) = Logged::spawn(c).wait(limit);
    let Some(status) = status else {
        panic!("still running after {limit:?} (a hang):\n{}", String::from_utf8_lossy(&stdout));
    };
    std::process::Output { status, stdout, stderr: Vec::new() }
}

/// Runs `c` expecting a failure within `limit` (killed and reported if it takes longer: a hang).
fn run_fails_within(c: Command, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    let out = run_within(c, limit);
    let elapsed = t.elapsed();
    assert!(!out.status.success(), "the run should have failed:\n{}", text(&out));
    (text(&out), elapsed)
}

/// The trainable weights of VSRNet in a checkpoint (convolutions, BatchNorm gamma and beta), by
/// name, as flat f32 vectors.
fn weights(ckpt: &Path) -> Vec<(&'static str, Vec<f32>)> {
    use burn::module::Module;
    use burn::tensor::{Tensor, backend::Backend};
    fn v<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
    }
    let c = checkpoint::load::<B>(ckpt, &Default::default()).unwrap();
    let net = vsr::model::VsrNetConfig::new().init::<B>(&Default::default()).load_record(c.model);
    let (bn1, bn2) = (net.conv1.bn.as_ref().unwrap(), net.conv2.bn.as_ref().unwrap());
    vec![
        ("conv1.weight", v(net.conv1.conv.weight.val())),
        ("conv1.bn.gamma", v(bn1.gamma.val())),
        ("conv1.bn.beta", v(bn1.beta.val())),
        ("conv2.weight", v(net.conv2.conv.weight.val())),
        ("conv2.bn.gamma", v(bn2.gamma.val())),
        ("conv2.bn.beta", v(bn2.beta.val())),
        ("conv3.weight", v(net.conv3.weight.val())),
        ("conv3.bias", v(net.conv3.bias.as_ref().unwrap().val())),
    ]
}

/// The largest difference between two checkpoints' trainable weights, relative to the largest
/// weight of each tensor.
fn max_rel_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (weights(a), weights(b));
    let mut worst = 0f32;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x.len(), y.len(), "{name}");
        worst = worst.max(rel_diff(x, y));
    }
    worst
}

/// Largest |x - y| relative to the largest |x|.
fn rel_diff(x: &[f32], y: &[f32]) -> f32 {
    let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale
}

fn ckpt(runs: &Path, name: &str, step: u64) -> PathBuf {
    runs.join(name).join("checkpoints").join(checkpoint::step_name(step))
}

/// A copy of run `from` as `to` with only its checkpoint at `step` (to resume from it).
fn copy_run_at(runs: &Path, from: &str, to: &str, step: u64) {
    let dst = runs.join(to).join("checkpoints");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(runs.join(from).join("config.json"), runs.join(to).join("config.json")).unwrap();
    std::fs::copy(ckpt(runs, from, step), dst.join(checkpoint::step_name(step))).unwrap();
}

/// Float tolerance of the comparisons. The two runs sum the same two gradients in one f32
/// addition each (measured on the CPU backend: bit-identical weights, difference 0); the
/// tolerance leaves room for a backend whose reduction order differs, far below what a wrong
/// window, a missing average or another optimiser state gives (a broken shard: 0.89; one
/// BatchNorm group instead of two: 0.5).
const TOL: f32 = 1e-4;

/// 2 workers of 2 windows = 1 worker of 4 windows in 2 micro-batches, over 4 steps; resuming
/// either run at step 2 with the other layout gives the same weights at step 4; rank 0 alone
/// logs; the plain batch-4 run (one BatchNorm group) differs by far more than the tolerance.
#[test]
fn two_workers_equal_one_worker_with_two_micro_batches_and_resume_across_counts() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    let steps = ["--max-steps", "4", "--checkpoint-every", "2"];
    let out = run_ok(train_cmd(runs, &[&steps[..], &["--name", "dp2", "--gpus", "2"]].concat()));
    assert!(text(&out).contains("data-parallel on 2 workers"), "{}", text(&out));
    run_ok(train_cmd(runs, &[&steps[..], &["--name", "acc2", "--accumulate", "2"]].concat()));
    run_ok(train_cmd(runs, &[&steps[..], &["--name", "plain"]].concat()));

    let d = max_rel_diff(&ckpt(runs, "dp2", 4), &ckpt(runs, "acc2", 4));
    eprintln!("2 workers vs 2 micro-batches: {d:e}");
    assert!(d < TOL, "2 workers vs 2 micro-batches: weights differ by {d:e} (relative) after 4 steps");
    let plain = max_rel_diff(&ckpt(runs, "dp2", 4), &ckpt(runs, "plain", 4));
    eprintln!("2 workers vs one BatchNorm group: {plain:e}");
    assert!(plain > 100.0 * TOL, "the comparison cannot tell BatchNorm groups apart (plain differs by {plain:e})");

    // One loss per step (rank 0 alone logs), equal to the accumulating run's.
    let (a, b) = (scalars(&runs.join("dp2"), "train/loss"), scalars(&runs.join("acc2"), "train/loss"));
    assert_eq!(a.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1, 2, 3], "one train/loss per step");
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "loss at step {s}: {x} (2 workers) vs {y} (2 micro-batches)");
    }
    // Only rank 0 wrote: one set of event files, one checkpoint per checkpoint step.
    let names: Vec<_> = std::fs::read_dir(runs.join("dp2/checkpoints")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.len() <= 3, "{names:?}");

    // 2 workers -> 1 worker: resume dp2 at step 2 on one worker with 2 micro-batches.
    copy_run_at(runs, "dp2", "dp2to1", 2);
    let out = run_ok(resume_cmd(&runs.join("dp2to1"), &["--max-steps", "4", "--accumulate", "2"]));
    assert!(text(&out).contains("resuming from"), "{}", text(&out));
    let d = max_rel_diff(&ckpt(runs, "dp2", 4), &ckpt(runs, "dp2to1", 4));
    eprintln!("resumed 2 -> 1: {d:e}");
    assert!(d < TOL, "resumed on 1 worker: weights differ by {d:e} from the 2-worker run");

    // 1 worker -> 2 workers: resume acc2 at step 2 on two workers of one micro-batch each.
    copy_run_at(runs, "acc2", "acc2to2", 2);
    run_ok(resume_cmd(&runs.join("acc2to2"), &["--max-steps", "4", "--gpus", "2", "--accumulate", "1"]));
    let d = max_rel_diff(&ckpt(runs, "acc2", 4), &ckpt(runs, "acc2to2", 4));
    eprintln!("resumed 1 -> 2: {d:e}");
    assert!(d < TOL, "resumed on 2 workers: weights differ by {d:e} from the 1-worker run");
}

/// VSRNet's BatchNorm running statistics in a checkpoint (conv1's and conv2's mean and variance).
fn bn_stats(ckpt: &Path) -> Vec<Vec<f32>> {
    use burn::module::Module;
    let c = checkpoint::load::<B>(ckpt, &Default::default()).unwrap();
    let mut net = vsr::model::VsrNetConfig::new().init::<B>(&Default::default()).load_record(c.model);
    let v = |t: burn::tensor::Tensor<B, 1>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    net.batch_norms_mut().flat_map(|bn| [v(bn.running_mean.value_sync()), v(bn.running_var.value_sync())]).collect()
}

/// Precise BN with two workers: rank 0's BatchNorm statistics after a validation in the middle of
/// the run (step 2 of 4, while the other worker goes on to step 3) are those of one worker with
/// the same micro-batches, recomputed over the same windows with the same weights: nothing of
/// the other worker's leaks in. (The replicas keep their own running statistics.)
#[test]
fn precise_bn_with_two_workers_is_rank_0s_own() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    let steps = ["--max-steps", "4", "--checkpoint-every", "2", "--val-every", "2", "--precise-bn", "4"];
    run_ok(train_cmd(runs, &[&steps[..], &["--name", "dp2", "--gpus", "2"]].concat()));
    run_ok(train_cmd(runs, &[&steps[..], &["--name", "acc2", "--accumulate", "2"]].concat()));
    for step in [2, 4] {
        let (a, b) = (bn_stats(&ckpt(runs, "dp2", step)), bn_stats(&ckpt(runs, "acc2", step)));
        assert_eq!(a.len(), 4);
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.len(), y.len(), "statistic {k}");
            let d = rel_diff(x, y);
            assert!(d < TOL, "step {step}, statistic {k}: 2 workers vs 1 worker differ by {d:e} (relative)");
        }
    }
}

/// `n` ports free on 127.0.0.1 now (held together while picked, so they differ).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// `vsr train` as node `rank` of 2 on 127.0.0.1: `ports` = [master, node 0's, node 1's].
fn node_cmd(runs: &Path, ports: &[u16], rank: usize, extra: &[&str]) -> Command {
    let (master, port) = (ports[0].to_string(), ports[1 + rank].to_string());
    let args = [
        "--nodes", "2", "--node-rank", &rank.to_string(), "--master-addr", "127.0.0.1", "--master-port", &master,
        "--node-addr", "127.0.0.1", "--node-port", &port,
    ];
    train_cmd(runs, &[&args[..], extra].concat())
}

/// Two nodes (two processes, one worker each, on this machine through 127.0.0.1) of 2 windows
/// each train exactly as one worker of 4 windows in 2 micro-batches, over several steps (every
/// step is an all-reduce between the nodes); node 1 writes nothing.
#[test]
fn two_nodes_equal_one_worker_with_two_micro_batches() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    let node1_runs = tempfile::tempdir().unwrap();
    let steps = ["--max-steps", "3"];
    run_ok(train_cmd(runs, &[&steps[..], &["--name", "acc2", "--accumulate", "2"]].concat()));

    let ports = free_ports(3);
    let node = |rank: usize, dir: &Path| node_cmd(dir, &ports, rank, &[&steps[..], &["--name", "nodes2", "--collective-timeout", "120"]].concat());
    let n0 = Logged::spawn(node(0, runs));
    let n1 = run_within(node(1, node1_runs.path()), Duration::from_secs(180));
    let (status, out0) = n0.wait(Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()) && n1.status.success(),
        "node 0 ({status:?}, killed if None):\n{}\nnode 1 ({}):\n{}",
        String::from_utf8_lossy(&out0),
        n1.status,
        text(&n1)
    );

    let d = max_rel_diff(&ckpt(runs, "nodes2", 3), &ckpt(runs, "acc2", 3));
    eprintln!("2 nodes vs 2 micro-batches: {d:e}");
    assert!(d < TOL, "2 nodes vs 2 micro-batches: weights differ by {d:e} (relative) after 3 steps");
    let (a, b) = (scalars(&runs.join("nodes2"), "train/loss"), scalars(&runs.join("acc2"), "train/loss"));
    assert_eq!(a.len(), 3, "one train/loss per step: {a:?}");
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "loss at step {s}: {x} (2 nodes) vs {y} (2 micro-batches)");
    }
    let written: Vec<_> = std::fs::read_dir(node1_runs.path()).unwrap().collect();
    assert!(written.is_empty(), "node 1 wrote into its runs directory: {written:?}");
}

/// A node whose worker fails mid-run, with an error or by crashing (the process aborts: its
/// connections end without a closing handshake), ends; the other node does not hang: it ends
/// with an error naming the cause within the collective timeout.
#[test]
fn a_failing_node_ends_the_other_node() {
    for mode in ["error", "abort"] {
        let runs = tempfile::tempdir().unwrap();
        let runs = runs.path();
        let ports = free_ports(3);
        let node = |rank: usize| {
            let name = format!("fail{rank}");
            let mut c = node_cmd(runs, &ports, rank, &["--max-steps", "6", "--name", &name, "--collective-timeout", "5"]);
            c.env("VSR_TEST_FAIL_WORKER", format!("1:2:{mode}"));
            c
        };
        let n0 = Logged::spawn(node(0));
        let (msg1, _) = run_fails_within(node(1), Duration::from_secs(120));
        if mode == "error" {
            assert!(msg1.contains("injected failure at step 2"), "node 1:\n{msg1}");
        }
        let t = Instant::now();
        let (status, out0) = n0.wait(Duration::from_secs(60));
        let msg0 = String::from_utf8_lossy(&out0).into_owned();
        let Some(status) = status else {
            panic!("{mode}: node 0 still running 60 s after node 1 failed (a hang):\n{msg0}");
        };
        assert!(!status.success(), "{mode}: node 0 succeeded without its peer:\n{msg0}");
        assert!(msg0.contains("another node"), "{mode}: node 0 does not say why:\n{msg0}");
        assert!(!msg0.contains("panicked"), "{mode}: node 0 panicked:\n{msg0}");
        eprintln!("{mode}: node 0 ended {:?} after node 1", t.elapsed());
    }
}

/// A worker that returns an error, panics or hangs ends the whole run with an error naming it,
/// well within the collective timeout (hang: just after it), never a hang of the process.
#[test]
fn a_failing_worker_ends_the_run_with_its_error() {
    let runs = tempfile::tempdir().unwrap();
    let runs = runs.path();
    let cases = [
        ("error", "injected failure at step 1"),
        ("panic", "injected panic at step 1"),
        ("hang", "made no progress for 3 s"),
    ];
    for (mode, expect) in cases {
        let mut c = train_cmd(runs, &["--max-steps", "4", "--gpus", "2", "--name", mode, "--collective-timeout", "3"]);
        c.env("VSR_TEST_FAIL_WORKER", format!("1:1:{mode}"));
        let (msg, took) = run_fails_within(c, Duration::from_secs(120));
        assert!(msg.contains("worker 1"), "{mode}: the error does not name worker 1:\n{msg}");
        assert!(msg.contains(expect), "{mode}: expected {expect:?} in:\n{msg}");
        assert!(!msg.contains("panicked at") || mode == "panic", "{mode}: a panic escaped:\n{msg}");
        eprintln!("{mode}: ended in {took:?}");
    }
}

/// Settings refused before anything runs: a global batch that does not split across workers.
#[test]
fn a_batch_that_does_not_split_is_refused() {
    let runs = tempfile::tempdir().unwrap();
    let out = train_cmd(runs.path(), &["--max-steps", "1", "--gpus", "3"]).output().unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("--batch 4") && msg.contains("multiple of 3"), "{msg}");
}
