//! The loader: worker threads read the windows of the next `prefetch` batches straight into the
//! batches' buffers; the caller takes finished batches in order.
//!
//! * **Order.** Batch `i` of epoch `e` holds windows `i*B .. (i+1)*B` of the epoch's plan
//!   ([`super::sampler`]): what a batch holds never depends on threads or timing, and a loader
//!   started at a [`LoaderState`] computes its first batch directly, decoding nothing before it.
//!   A data-parallel worker's loader reads only its [`Shard`](super::config::Shard) of each
//!   batch.
//! * **Work.** A free worker takes the earliest window of the next `prefetch` batches that it may
//!   take: the windows of a run go to one worker at a time, in order, preferably the worker that
//!   did the run's previous window (its decoder is positioned right after it); a window of the
//!   very next batch is taken by anyone free. Each worker owns its decoders.
//! * **Memory.** At most `prefetch` batches are being filled or waiting; each batch buffer is
//!   allocated once and handed to the caller.
//! * **Bad data.** A window that cannot be read (after the video source's retries) is left out
//!   of its batch, which comes out smaller; its file is named in [`Loader::skipped`] with the
//!   first reason. Whether a window can be read depends only on the file, so this too is the
//!   same on every run. Should every window of a whole epoch's worth of batches fail, the loader
//!   returns an error instead of spinning.
//! * **Shutdown.** Dropping the loader stops the workers after the window each is reading and
//!   joins them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::LoaderConfig;
use super::dataset::{Dataset, Scene};
use super::sampler::{self, Item, SceneWindows, WindowRef};
use super::{SourceKind, png};
use crate::error::{Error, Result};

/// Where a loader stands: the epoch and batch index of the next batch it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    pub batch: usize,
}

/// One batch on the host.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// RGB, 0..=255, channels last as decoders give them: (B, F, H, W, 3) row-major. The
    /// batch's tensor ([`upload`](super::upload)) is (B, 3, F, H, W).
    pub pixels: Vec<u8>,
    /// [B, 3, F, H, W], the shape of the batch's tensor; B is smaller than the configured batch for a short last batch, or when a
    /// window of this batch could not be read.
    pub dims: [usize; 5],
    /// The window each sequence of the batch shows.
    pub windows: Vec<WindowRef>,
    /// Top-left corner (y, x) of each window's crop in its frames.
    pub crops: Vec<[usize; 2]>,
    pub epoch: u64,
    /// Index of this batch within its epoch.
    pub index: usize,
}

/// What the workers have done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoaderStats {
    /// Windows read (including failed ones).
    pub windows: u64,
    /// Frames decoded, including those decoded only to reach a window.
    pub frames_decoded: u64,
    /// Seeks (video).
    pub seeks: u64,
    /// Decoders opened (video).
    pub opens: u64,
    /// Windows read again from an earlier keyframe after a failure (video).
    pub retries: u64,
    /// Windows that could not be read.
    pub failed_windows: u64,
    /// Files NVDEC could not decode, read by the CPU decoder instead (counted per worker).
    pub nvdec_fallbacks: u64,
    /// Worker time spent reading windows (wall clock), all workers together.
    pub read_seconds: f64,
    /// CPU time of the workers reading windows (what reading costs, whatever else runs on the
    /// machine).
    pub read_cpu_seconds: f64,
}

/// A crop: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Crop {
    pub y0: usize,
    pub x0: usize,
    pub h: usize,
    pub w: usize,
}

/// Reads windows of one source; one per worker thread, owning its decoders.
pub(crate) trait WindowReader {
    /// Writes `frames` frames of `scene` from frame `start`, cropped, into `out` as (F, h, w, 3).
    fn read(&mut self, scene: &Scene, start: usize, frames: usize, crop: Crop, out: &mut [u8], counters: &Counters) -> Result<()>;
}

/// Counters the readers update.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    windows: AtomicU64,
    frames: AtomicU64,
    seeks: AtomicU64,
    opens: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    nvdec_fallbacks: AtomicU64,
    read_ns: AtomicU64,
    read_cpu_ns: AtomicU64,
}

impl Counters {
    pub fn frame_decoded(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }
    pub fn sought(&self) {
        self.seeks.fetch_add(1, Ordering::Relaxed);
    }
    pub fn opened(&self) {
        self.opens.fetch_add(1, Ordering::Relaxed);
    }
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub fn fell_back_to_cpu(&self) {
        self.nvdec_fallbacks.fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> LoaderStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoaderStats {
            windows: g(&self.windows),
            frames_decoded: g(&self.frames),
            seeks: g(&self.seeks),
            opens: g(&self.opens),
            retries: g(&self.retries),
            failed_windows: g(&self.failed),
            nvdec_fallbacks: g(&self.nvdec_fallbacks),
            read_seconds: g(&self.read_ns) as f64 * 1e-9,
            read_cpu_seconds: g(&self.read_cpu_ns) as f64 * 1e-9,
        }
    }
}

/// CPU time of the calling thread, ns (0 where unknown).
fn thread_cpu_ns() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime fills the struct it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
    }
    0
}

/// Frame `f` of a window `out` of `frames` frames laid out (frames, h, w, 3).
pub(crate) fn frame_slot(out: &mut [u8], frames: usize, f: usize) -> &mut [u8] {
    assert!(f < frames && out.len() % frames == 0);
    let plane = out.len() / frames;
    &mut out[f * plane..][..plane]
}

/// Copies the `crop` of a packed RGB picture (`stride` bytes a row) into frame `f` of a window
/// `out` laid out (frames, crop.h, crop.w, 3): row by row, channels last as decoded.
pub(crate) fn write_frame(out: &mut [u8], frames: usize, f: usize, crop: Crop, rgb: &[u8], stride: usize) {
    let row = crop.w * 3;
    assert_eq!(out.len(), frames * crop.h * row);
    for (y, dst) in frame_slot(out, frames, f).chunks_exact_mut(row).enumerate() {
        dst.copy_from_slice(&rgb[(crop.y0 + y) * stride + crop.x0 * 3..][..row]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Win {
    Pending,
    Busy,
    Done,
    Failed,
}

/// A batch being filled.
struct Slot {
    epoch: u64,
    index: usize,
    items: Vec<Item>,
    /// B windows of `window_bytes`; workers write their window through a raw pointer (see
    /// [`Task`]), never moved or freed while a window is busy.
    buf: Box<[u8]>,
    status: Vec<Win>,
    left: usize,
}

struct State {
    stop: bool,
    /// Global number (epoch * batches_per_epoch + index) of the batch the caller gets next.
    next: u64,
    /// First global number not to deliver (u64::MAX when repeating).
    end: u64,
    plans: HashMap<u64, Arc<Vec<Item>>>,
    slots: BTreeMap<u64, Slot>,
    /// Runs (epoch, run) with a window being read.
    busy_runs: HashSet<(u64, u32)>,
    /// The worker that read a run's last window.
    owner: HashMap<(u64, u32), usize>,
    skipped: Vec<(PathBuf, String)>,
    /// Batches in a row that came out empty.
    empty_streak: usize,
    fatal: Option<String>,
}

struct Shared {
    dataset: Arc<Dataset>,
    /// Usable scenes: index into the dataset's entries, and the sampler's view.
    scene_index: Vec<usize>,
    scenes: Vec<SceneWindows>,
    cfg: LoaderConfig,
    crop: (usize, usize),
    window_bytes: usize,
    batches_per_epoch: usize,
    decoders_per_worker: usize,
    /// NVDEC, one per worker, when video is decoded on the GPU.
    #[cfg(feature = "video")]
    nvdec: Mutex<Vec<super::nvdec::Nvdec>>,
    counters: Counters,
    state: Mutex<State>,
    /// Workers wait here for work.
    work: Condvar,
    /// The caller waits here for a finished batch.
    ready: Condvar,
}

/// A window a worker reads: where, and where to write it.
struct Task {
    g: u64,
    j: usize,
    item: Item,
    epoch: u64,
    out: *mut u8,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn plan(&self, st: &mut State, epoch: u64) -> Arc<Vec<Item>> {
        st.plans
            .entry(epoch)
            .or_insert_with(|| Arc::new(sampler::plan(&self.scenes, &self.cfg, self.crop, epoch)))
            .clone()
    }

    fn slot<'a>(&self, st: &'a mut State, g: u64) -> &'a mut Slot {
        if !st.slots.contains_key(&g) {
            let bpe = self.batches_per_epoch as u64;
            let (epoch, index) = (g / bpe, (g % bpe) as usize);
            let plan = self.plan(st, epoch);
            let b = self.cfg.batch;
            let batch = &plan[index * b..((index + 1) * b).min(plan.len())];
            let items = batch[self.cfg.shard.range(batch.len())].to_vec();
            let n = items.len();
            st.slots.insert(
                g,
                Slot {
                    epoch,
                    index,
                    items,
                    buf: vec![0u8; n * self.window_bytes].into_boxed_slice(),
                    status: vec![Win::Pending; n],
                    left: n,
                },
            );
        }
        st.slots.get_mut(&g).expect("just made")
    }

    /// The window worker `me` reads next, if any.
    fn pick(&self, st: &mut State, me: usize) -> Option<Task> {
        let horizon = st.end.min(st.next.saturating_add(self.cfg.prefetch as u64));
        let mut urgent = None;
        let mut chosen = None;
        'scan: for g in st.next..horizon {
            let slot = self.slot(st, g);
            let (epoch, n) = (slot.epoch, slot.items.len());
            for j in 0..n {
                let slot = st.slots.get(&g).expect("made above");
                if slot.status[j] != Win::Pending {
                    continue;
                }
                let run = (epoch, slot.items[j].run);
                if st.busy_runs.contains(&run) {
                    continue;
                }
                match st.owner.get(&run) {
                    Some(&o) if o != me => {
                        if g == st.next && urgent.is_none() {
                            urgent = Some((g, j));
                        }
                    }
                    _ => {
                        chosen = Some((g, j));
                        break 'scan;
                    }
                }
            }
        }
        let (g, j) = chosen.or(urgent)?;
        let wb = self.window_bytes;
        let slot = st.slots.get_mut(&g).expect("scanned");
        slot.status[j] = Win::Busy;
        let item = slot.items[j];
        let epoch = slot.epoch;
        // SAFETY: j < items.len(), the buffer holds items.len() windows of wb bytes.
        let out = unsafe { slot.buf.as_mut_ptr().add(j * wb) };
        st.busy_runs.insert((epoch, item.run));
        st.owner.insert((epoch, item.run), me);
        Some(Task { g, j, item, epoch, out })
    }

    fn finish(&self, st: &mut State, task: &Task, result: Result<()>) {
        let slot = st.slots.get_mut(&task.g).expect("a slot with a busy window stays");
        slot.status[task.j] = if result.is_ok() { Win::Done } else { Win::Failed };
        slot.left -= 1;
        st.busy_runs.remove(&(task.epoch, task.item.run));
        self.counters.windows.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            let path = &self.dataset.entries()[self.scene_index[task.item.scene as usize]].path;
            if !st.skipped.iter().any(|(p, _)| p == path) {
                let reason = super::dataset::strip_path(&e.to_string(), path);
                eprintln!("warning: {}: skipping unreadable windows: {reason}", path.display());
                st.skipped.push((path.clone(), reason));
            }
        }
    }

    fn reader(&self) -> Box<dyn WindowReader> {
        match self.dataset.kind() {
            SourceKind::Png => Box::new(png::PngReader::default()),
            #[cfg(feature = "video")]
            SourceKind::Video => {
                let gpu = self.nvdec.lock().unwrap_or_else(|e| e.into_inner()).pop();
                Box::new(super::video::VideoReader::new(self.decoders_per_worker, gpu))
            }
            #[cfg(not(feature = "video"))]
            SourceKind::Video => unreachable!("Dataset::open refuses video without the `video` feature"),
        }
    }
}

fn worker(sh: Arc<Shared>, me: usize) {
    let mut reader = sh.reader();
    let frames = sh.cfg.frames;
    let (h, w) = sh.crop;
    let mut st = lock(&sh.state);
    loop {
        if st.stop {
            return;
        }
        let Some(task) = sh.pick(&mut st, me) else {
            st = sh.work.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        drop(st);
        let scene = &sh.dataset.entries()[sh.scene_index[task.item.scene as usize]];
        let crop = Crop { y0: task.item.y0 as usize, x0: task.item.x0 as usize, h, w };
        // SAFETY: the scheduler gave this window to this worker alone (status Busy); its slot
        // and buffer stay in place until the window is finished below.
        let out = unsafe { std::slice::from_raw_parts_mut(task.out, sh.window_bytes) };
        let (t, cpu) = (Instant::now(), thread_cpu_ns());
        let result = match catch_unwind(AssertUnwindSafe(|| reader.read(scene, task.item.start as usize, frames, crop, out, &sh.counters))) {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                reader = sh.reader();
                Err(Error::Media { path: scene.path.clone(), reason: format!("internal error while reading a window: {msg}") })
            }
        };
        sh.counters.read_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        sh.counters.read_cpu_ns.fetch_add(thread_cpu_ns().saturating_sub(cpu), Ordering::Relaxed);
        st = lock(&sh.state);
        sh.finish(&mut st, &task, result);
        sh.ready.notify_all();
        sh.work.notify_all();
    }
}

/// Batches of windows, read ahead on worker threads. See the module doc.
pub struct Loader {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Starts the workers; the first batch returned is the one at `start`.
    pub fn new(dataset: Arc<Dataset>, cfg: LoaderConfig, start: LoaderState) -> Result<Loader> {
        let crop = cfg.check(&dataset)?;
        let usable = SceneWindows::of(dataset.entries(), cfg.frames, cfg.stride);
        let (scene_index, scenes): (Vec<usize>, Vec<SceneWindows>) = usable.into_iter().unzip();
        let mut skipped = dataset.skipped().to_vec();
        for s in dataset.entries().iter().filter(|s| s.frames < cfg.frames) {
            skipped.push((s.path.clone(), format!("{} frames, fewer than the {} of a window", s.frames, cfg.frames)));
        }
        let windows: usize = scenes.iter().map(|s| s.windows).sum();
        let batches_per_epoch = sampler::batches_per_epoch(windows, cfg.batch, cfg.drop_last);
        if batches_per_epoch == 0 {
            return Err(Error::Invalid(format!(
                "{}: {windows} window(s) of {} frames, fewer than one batch of {}",
                dataset.dir().display(),
                cfg.frames,
                cfg.batch
            )));
        }
        let bpe = batches_per_epoch as u64;
        let next = start.epoch.saturating_mul(bpe).saturating_add((start.batch as u64).min(bpe));
        let end = if cfg.repeat { u64::MAX } else { (next / bpe + 1) * bpe };
        let workers = cfg.worker_count();
        // NVDEC is set up here, so that a GPU that cannot decode is one error before any thread.
        #[cfg(feature = "video")]
        let nvdec = match (dataset.kind(), cfg.decoder) {
            (SourceKind::Video, super::VideoDecoder::Nvdec(gpu)) => (0..workers).map(|_| super::nvdec::Nvdec::new(gpu)).collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        let shared = Arc::new(Shared {
            #[cfg(feature = "video")]
            nvdec: Mutex::new(nvdec),
            window_bytes: 3 * cfg.frames * crop.0 * crop.1,
            decoders_per_worker: (cfg.max_open_decoders / workers).max(1),
            dataset,
            scene_index,
            scenes,
            crop,
            batches_per_epoch,
            counters: Counters::default(),
            state: Mutex::new(State {
                stop: false,
                next,
                end,
                plans: HashMap::new(),
                slots: BTreeMap::new(),
                busy_runs: HashSet::new(),
                owner: HashMap::new(),
                skipped,
                empty_streak: 0,
                fatal: None,
            }),
            work: Condvar::new(),
            ready: Condvar::new(),
            cfg,
        });
        let mut threads = Vec::with_capacity(workers);
        for id in 0..workers {
            let sh = shared.clone();
            let spawned = std::thread::Builder::new().name(format!("vsr-data-{id}")).spawn(move || worker(sh, id));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let loader = Loader { shared, threads };
                    drop(loader);
                    return Err(Error::Invalid(format!("cannot start a data loading thread: {e}")));
                }
            }
        }
        Ok(Loader { shared, threads })
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.shared.batches_per_epoch
    }

    /// Crop size (h, w) of every window.
    pub fn crop_size(&self) -> (usize, usize) {
        self.shared.crop
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.shared.cfg
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.shared.dataset
    }

    /// The next batch, waiting for it if needed; None only at the end of a pass (`repeat` off).
    pub fn next_batch(&mut self) -> Option<Result<HostBatch>> {
        let sh = &self.shared;
        let mut st = lock(&sh.state);
        loop {
            if let Some(msg) = &st.fatal {
                return Some(Err(Error::Invalid(msg.clone())));
            }
            if st.next >= st.end {
                return None;
            }
            let g = st.next;
            if st.slots.get(&g).is_some_and(|s| s.left == 0) {
                let slot = st.slots.remove(&g).expect("checked");
                st.next += 1;
                let epoch_now = st.next / sh.batches_per_epoch as u64;
                st.plans.retain(|&e, _| e >= epoch_now);
                st.owner.retain(|&(e, _), _| e >= epoch_now);
                sh.work.notify_all();
                match self.assemble(slot) {
                    Some(batch) => {
                        st.empty_streak = 0;
                        return Some(Ok(batch));
                    }
                    None => {
                        st.empty_streak += 1;
                        if st.empty_streak >= sh.batches_per_epoch {
                            let list: Vec<String> = st.skipped.iter().map(|(p, r)| format!("{}: {r}", p.display())).collect();
                            st.fatal = Some(format!(
                                "{}: no window of {} batches in a row could be read: {}",
                                sh.dataset.dir().display(),
                                st.empty_streak,
                                list.join("; ")
                            ));
                        }
                        continue;
                    }
                }
            }
            // make sure the workers know about this batch
            sh.work.notify_all();
            let (guard, timeout) = sh.ready.wait_timeout(st, Duration::from_millis(500)).unwrap_or_else(|e| e.into_inner());
            st = guard;
            if timeout.timed_out() && self.threads.iter().all(|t| t.is_finished()) {
                st.fatal = Some("the data loading threads stopped unexpectedly".into());
            }
        }
    }

    /// Whether [`Loader::next_batch`] would return without waiting.
    pub fn ready(&self) -> bool {
        let st = lock(&self.shared.state);
        st.fatal.is_some() || st.next >= st.end || st.slots.get(&st.next).is_some_and(|s| s.left == 0)
    }

    /// A finished slot as a batch, without the windows that failed; None when all failed.
    fn assemble(&self, slot: Slot) -> Option<HostBatch> {
        let sh = &self.shared;
        let (h, w) = sh.crop;
        let wb = sh.window_bytes;
        let good: Vec<usize> = (0..slot.items.len()).filter(|&j| slot.status[j] == Win::Done).collect();
        if good.is_empty() {
            return None;
        }
        let pixels = if good.len() == slot.items.len() {
            slot.buf.into_vec()
        } else {
            let mut v = Vec::with_capacity(good.len() * wb);
            for &j in &good {
                v.extend_from_slice(&slot.buf[j * wb..(j + 1) * wb]);
            }
            v
        };
        let windows = good
            .iter()
            .map(|&j| {
                let it = slot.items[j];
                WindowRef { scene: sh.scenes[it.scene as usize].name.clone(), start: it.start as usize }
            })
            .collect();
        let crops = good.iter().map(|&j| [slot.items[j].y0 as usize, slot.items[j].x0 as usize]).collect();
        Some(HostBatch { pixels, dims: [good.len(), 3, sh.cfg.frames, h, w], windows, crops, epoch: slot.epoch, index: slot.index })
    }

    /// Position of the next batch (after the last one returned).
    pub fn state(&self) -> LoaderState {
        let next = lock(&self.shared.state).next;
        let bpe = self.shared.batches_per_epoch as u64;
        LoaderState { epoch: next / bpe, batch: (next % bpe) as usize }
    }

    /// Scenes left out (unreadable at open, shorter than a window) and files with windows that
    /// could not be read, each with the (first) reason.
    pub fn skipped(&self) -> Vec<(PathBuf, String)> {
        lock(&self.shared.state).skipped.clone()
    }

    pub fn stats(&self) -> LoaderStats {
        self.shared.counters.snapshot()
    }
}

impl Iterator for Loader {
    type Item = Result<HostBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.work.notify_all();
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
