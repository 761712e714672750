//! Data-parallel workers: one thread per device, each running its replica of the training loop,
//! watched so that a worker that fails or hangs stops the whole run with its error instead of
//! leaving the others blocked in a collective forever.
//!
//! * A worker that returns an error or panics: the others are told to stop, the collective is
//!   reset (workers blocked in an all-reduce get an error at once), and the run ends with the
//!   failed worker's error, naming it.
//! * A worker that hangs: every worker marks when it starts and ends waiting in a collective
//!   ([`Progress`]). When one has waited longer than the timeout, the run ends with an error that
//!   names the workers that never came (or, when every worker of this process is waiting,
//!   blames the other nodes).
//!
//! The threads are not joined after a failure (a hung one never would be): the process is
//! expected to end with the error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What the watchdog knows of each worker of this process.
pub struct Progress {
    start: Instant,
    /// Per worker: since when (ms after `start`, plus one) it waits in a collective; 0: not.
    waiting: Vec<AtomicU64>,
    /// Per worker: the step it is at.
    steps: Vec<AtomicU64>,
    /// Set when the run is being stopped because of a failure: workers return at their next step.
    abort: AtomicBool,
    /// Set by Ctrl-C (copied from the caller's flag): workers vote to stop after this step.
    stop: AtomicBool,
}

impl Progress {
    pub fn new(workers: usize) -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            waiting: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            steps: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            abort: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    /// Worker `local` starts (`true`) or ends waiting in a collective.
    pub fn set_waiting(&self, local: usize, on: bool) {
        let v = if on { self.start.elapsed().as_millis() as u64 + 1 } else { 0 };
        self.waiting[local].store(v, Ordering::SeqCst);
    }

    pub fn set_step(&self, local: usize, step: u64) {
        self.steps[local].store(step, Ordering::SeqCst);
    }

    /// Whether the run is being stopped after another worker's failure.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// Whether Ctrl-C was pressed.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The local worker that has waited in a collective longer than `timeout`, with what the
    /// others are doing, if any.
    fn stuck(&self, timeout: Duration, ranks: &[usize]) -> Option<(usize, String)> {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let since: Vec<u64> = self.waiting.iter().map(|w| w.load(Ordering::SeqCst)).collect();
        let waited = |i: usize| since[i] != 0 && now - since[i] > timeout.as_millis() as u64;
        let first = (0..since.len()).find(|&i| waited(i))?;
        let absent: Vec<usize> = (0..since.len()).filter(|&i| since[i] == 0).collect();
        let step = self.steps[first].load(Ordering::SeqCst);
        let t = timeout.as_secs_f64();
        Some(if absent.is_empty() {
            (
                ranks[first],
                format!(
                    "every worker of this process waited more than {t:.0} s in a collective at step {step}: another node \
                     stopped, hangs or cannot be reached (raise --collective-timeout if validation or checkpoints take longer)"
                ),
            )
        } else {
            let names: Vec<String> =
                absent.iter().map(|&i| format!("worker {} (at step {})", ranks[i], self.steps[i].load(Ordering::SeqCst))).collect();
            (
                ranks[absent[0]],
                format!(
                    "{} made no progress for {t:.0} s while worker {} waited for it in the gradient all-reduce at step {step} \
                     (raise --collective-timeout if validation or checkpoints take longer)",
                    names.join(", "),
                    ranks[first]
                ),
            )
        })
    }
}

/// One worker to start: its global rank, a name for messages (the device), and what it works on.
pub struct WorkerInput<I> {
    pub rank: usize,
    pub name: String,
    pub input: I,
}

/// How long a failed run waits for the other workers to wind down before returning.
const GRACE: Duration = Duration::from_secs(10);

/// Runs `work` for every input on its own thread and returns their outputs in input order; the
/// first failure (error, panic, or a collective wait longer than `timeout`) ends the run with
/// [`Error::Worker`] naming the worker. `reset` unblocks workers waiting in a collective (see
/// [`super::collective::reset`]). `stop` (Ctrl-C) is passed on to the workers through
/// [`Progress::stop_requested`].
pub fn run_workers<I, T, F>(
    inputs: Vec<WorkerInput<I>>,
    timeout: Duration,
    stop: &AtomicBool,
    reset: fn(),
    work: F,
) -> Result<Vec<T>>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(usize, I, Arc<Progress>) -> Result<T> + Send + Sync + 'static,
{
    let n = inputs.len();
    let progress = Progress::new(n);
    let work = Arc::new(work);
    let (tx, rx) = mpsc::channel::<(usize, Result<T>)>();
    let mut ranks = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    for (local, w) in inputs.into_iter().enumerate() {
        ranks.push(w.rank);
        names.push(w.name.clone());
        let (tx, work, progress) = (tx.clone(), work.clone(), progress.clone());
        let input = w.input;
        std::thread::Builder::new()
            .name(format!("vsr-worker-{}", w.rank))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(local, input, progress)));
                let r = r.unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(Error::Invalid(format!("panicked: {msg}")))
                });
                let _ = tx.send((local, r));
            })
            .map_err(|e| Error::Invalid(format!("cannot start worker thread {}: {e}", w.rank)))?;
    }
    drop(tx);
    let fail = |local: usize, error: Error| -> Error {
        progress.abort.store(true, Ordering::SeqCst);
        reset();
        Error::Worker { rank: ranks[local], device: names[local].clone(), error: Box::new(error) }
    };
    let mut outputs: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut done = 0;
    while done < n {
        progress.stop.store(stop.load(Ordering::SeqCst), Ordering::SeqCst);
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((local, Ok(out))) => {
                outputs[local] = Some(out);
                done += 1;
            }
            Ok((local, Err(e))) => {
                let err = fail(local, e);
                wind_down(&rx, done + 1, n);
                return Err(err);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some((rank, why)) = progress.stuck(timeout, &ranks) {
                    let local = ranks.iter().position(|&r| r == rank).unwrap_or(0);
                    let err = fail(local, Error::Collective(why));
                    wind_down(&rx, done, n);
                    return Err(err);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Invalid("the worker threads ended without a result".into()));
            }
        }
    }
    Ok(outputs.into_iter().map(|o| o.expect("every worker reported")).collect())
}

/// After a failure: gives the other workers (now aborting) a little time to return, so that
/// their loaders stop cleanly; a hung one is left behind.
fn wind_down<T>(rx: &mpsc::Receiver<(usize, Result<T>)>, mut done: usize, n: usize) {
    let until = Instant::now() + GRACE;
    while done < n {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || rx.recv_timeout(left).is_err() {
            return;
        }
        done += 1;
    }
}

/// The test hook `VSR_TEST_FAIL_WORKER=<rank>:<step>[:error|panic|hang|abort]`: worker `rank`
/// fails at step `step` the way asked (default: error; `abort` ends the process at once, as a
/// crash or `kill -9` would: no destructor runs, no connection is closed cleanly). For the tests
/// of failure handling only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFailure {
    pub rank: usize,
    pub step: u64,
    pub mode: FailMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Error,
    Panic,
    Hang,
    Abort,
}

impl InjectedFailure {
    pub const VAR: &'static str = "VSR_TEST_FAIL_WORKER";

    /// The failure asked for in the environment, if any (a malformed value is an error).
    pub fn from_env() -> Result<Option<InjectedFailure>> {
        let Ok(v) = std::env::var(Self::VAR) else { return Ok(None) };
        let bad = || Error::Invalid(format!("{}={v}: expected <rank>:<step>[:error|panic|hang|abort]", Self::VAR));
        let mut parts = v.split(':');
        let rank = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let step = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let mode = match parts.next() {
            None | Some("error") => FailMode::Error,
            Some("panic") => FailMode::Panic,
            Some("hang") => FailMode::Hang,
            Some("abort") => FailMode::Abort,
            Some(_) => return Err(bad()),
        };
        Ok(Some(InjectedFailure { rank, step, mode }))
    }

    /// Fails as asked if this is the worker and step.
    pub fn check(&self, rank: usize, step: u64) -> Result<()> {
        if (rank, step) != (self.rank, self.step) {
            return Ok(());
        }
        match self.mode {
            FailMode::Error => Err(Error::Invalid(format!("injected failure at step {step} ({})", Self::VAR))),
            FailMode::Panic => panic!("injected panic at step {step} ({})", Self::VAR),
            FailMode::Hang => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            FailMode::Abort => std::process::abort(),
        }
    }
}
