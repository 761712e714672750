//! What a run tells its user: TensorBoard event files under the run directory, a progress bar
//! per epoch on a terminal (loss, LR, it/s, ETA), plain log lines otherwise.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::tfevents::EventWriter;
use crate::error::Result;
use crate::image::RgbImage;

/// The TensorBoard writer and the console.
pub struct RunLog {
    events: EventWriter,
    bar: Option<ProgressBar>,
    terminal: bool,
    last_line: Instant,
    /// Plain lines at most this often when not on a terminal.
    line_every: Duration,
    /// (data wait, upload, step) ms of every step of this process, for [`RunLog::timing`].
    times: Vec<[f32; 3]>,
}

/// Steps this process ran before [`RunLog::timing`] counts them (kernel selection, allocator
/// growth, the prefetch queue filling).
pub const TIMING_WARMUP: usize = 10;

/// One training step, as logged.
#[derive(Debug, Clone, Copy)]
pub struct StepLog {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub scale: f64,
    pub skipped: u64,
    /// Waiting for the loader's workers.
    pub data_ms: f64,
    /// Copying the batch to the device (see [`crate::data::DeviceBatch::upload`]).
    pub upload_ms: f64,
    pub step_ms: f64,
}

impl RunLog {
    pub fn create(run_dir: &Path) -> Result<RunLog> {
        Ok(RunLog {
            events: EventWriter::create(run_dir)?,
            bar: None,
            terminal: std::io::stdout().is_terminal(),
            last_line: Instant::now() - Duration::from_secs(3600),
            line_every: Duration::from_secs(10),
            times: Vec::new(),
        })
    }

    /// Where the time of this process's steps went, after the first [`TIMING_WARMUP`]: "N steps:
    /// step median .. ms, data wait mean .. ms (p99 ..), upload mean .. ms"; None before there
    /// are any.
    pub fn timing(&self) -> Option<String> {
        let t = self.times.get(TIMING_WARMUP..).filter(|t| !t.is_empty())?;
        let sorted = |k: usize| {
            let mut v: Vec<f32> = t.iter().map(|x| x[k]).collect();
            v.sort_by(f32::total_cmp);
            v
        };
        let (data, upload, step) = (sorted(0), sorted(1), sorted(2));
        let at = |v: &[f32], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        Some(format!(
            "{} steps (after the first {TIMING_WARMUP}): step median {:.1} ms; data wait mean {:.3} ms (p99 {:.3}); upload mean {:.2} ms",
            t.len(),
            at(&step, 0.5),
            mean(&data),
            at(&data, 0.99),
            mean(&upload)
        ))
    }

    /// The event writer, for values the loop logs itself.
    pub fn events(&mut self) -> &mut EventWriter {
        &mut self.events
    }

    /// Starts the progress display of an epoch of `len` steps, `done` of them already taken.
    pub fn start_epoch(&mut self, epoch: u64, epochs: u64, len: u64, done: u64) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        bar.set_position(done);
        bar.reset_eta();
        self.bar = Some(bar);
    }

    /// Logs a step to TensorBoard and the console.
    pub fn step(&mut self, s: &StepLog) -> Result<()> {
        let ev = &mut self.events;
        ev.scalar("train/loss", s.step, s.loss)?;
        ev.scalar("train/lr", s.step, s.lr)?;
        ev.scalar("train/loss_scale", s.step, s.scale)?;
        ev.scalar("train/skipped_steps", s.step, s.skipped as f64)?;
        ev.scalar("time/data_ms", s.step, s.data_ms)?;
        ev.scalar("time/upload_ms", s.step, s.upload_ms)?;
        self.times.push([s.data_ms as f32, s.upload_ms as f32, s.step_ms as f32]);
        ev.scalar("time/step_ms", s.step, s.step_ms)?;
        let msg = format!("loss {:.5} lr {:.2e}", s.loss, s.lr);
        match &self.bar {
            Some(bar) => {
                bar.set_message(msg);
                bar.inc(1);
            }
            None if self.last_line.elapsed() >= self.line_every => {
                self.last_line = Instant::now();
                println!(
                    "epoch {} step {} {msg} data {:.2} ms step {:.1} ms{}",
                    s.epoch + 1,
                    s.step,
                    s.data_ms,
                    s.step_ms,
                    if s.scale != 1.0 { format!(" scale {:.0} skipped {}", s.scale, s.skipped) } else { String::new() }
                );
            }
            None => {}
        }
        Ok(())
    }

    /// Ends the epoch's progress display.
    pub fn end_epoch(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }

    /// A line for the user that does not break the progress bar.
    pub fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// An image to TensorBoard.
    pub fn image(&mut self, tag: &str, step: u64, img: &RgbImage) -> Result<()> {
        let png = img.encode_png()?;
        self.events.image(tag, step, img.width, img.height, &png)
    }
}
