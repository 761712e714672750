//! Which windows an epoch visits, in which order, with which crop.
//!
//! Every window of every usable scene (windows of F frames at the stride, inside one scene) is
//! visited once per epoch. The order and the crops are a pure function of (seed, epoch, window):
//! the same whatever the number of threads, and any batch of any epoch can be computed without
//! the ones before it (resume).
//!
//! **Shuffle.** DALI's VideoReader shuffles its list of windows once, with a fixed seed, and then
//! draws from a shuffle buffer of `initial_fill` windows; with a keyframe every 4 frames each
//! window costs a seek and up to 3 extra decodes on the GPU. On CPUs we keep decoders going
//! forward instead: windows come in *runs* of [`RUN_WINDOWS`] consecutive windows of one scene.
//! Each epoch the runs are shuffled (every scene, every part of a scene, in a new order), and a
//! buffer of `initial_fill` runs is open at once: each next window is the next window of a run
//! picked at random from the buffer; a finished run is replaced by the next run of the shuffled
//! list. A batch therefore mixes windows of up to `initial_fill` places of the data set, while a
//! decoder that follows one run decodes every frame of it exactly once, without seeking.
//! Without shuffle (validation): scenes in name order, windows in order.

use serde::{Deserialize, Serialize};

use super::config::{CropMode, LoaderConfig};
use super::dataset::Scene;

/// Consecutive windows of one scene that an epoch visits as one run (see the module doc): a
/// seek every 8 windows, 24 frames at F = 3.
pub const RUN_WINDOWS: usize = 8;

/// A window: `frames` frames of scene `scene` from frame `start` (0-based, presentation order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowRef {
    pub scene: String,
    pub start: usize,
}

/// SplitMix64: small, fast, and stable forever (the sampling must not change with a crate
/// version).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }
}

/// Mixes words into one seed.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    let mut r = Rng::new(0x5eed_0f_d474);
    let mut h = 0u64;
    for &p in parts {
        r.0 ^= p.wrapping_add(h);
        h = r.next_u64();
    }
    h
}

/// FNV-1a of a name, so that a scene's crops do not depend on the other scenes.
pub(crate) fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

const TAG_RUNS: u64 = 1;
const TAG_PICKS: u64 = 2;
const TAG_CROP: u64 = 3;

/// One window of an epoch's plan: scene index (into the loader's usable scenes), first frame,
/// crop offset, and the run it belongs to (a number unique within the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    pub scene: u32,
    pub start: u32,
    pub y0: u32,
    pub x0: u32,
    pub run: u32,
}

/// The usable scenes as the sampler sees them.
#[derive(Debug, Clone)]
pub(crate) struct SceneWindows {
    pub name: String,
    pub windows: usize,
    pub height: usize,
    pub width: usize,
}

impl SceneWindows {
    pub fn of(scenes: &[Scene], frames: usize, stride: usize) -> Vec<(usize, SceneWindows)> {
        scenes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.num_windows(frames, stride) > 0)
            .map(|(i, s)| {
                let windows = s.num_windows(frames, stride);
                (i, SceneWindows { name: s.name.clone(), windows, height: s.height, width: s.width })
            })
            .collect()
    }
}

/// Batches per epoch for `windows` windows.
pub(crate) fn batches_per_epoch(windows: usize, batch: usize, drop_last: bool) -> usize {
    if drop_last { windows / batch } else { windows.div_ceil(batch) }
}

/// The windows of `epoch` in the order batches take them.
pub(crate) fn plan(scenes: &[SceneWindows], cfg: &LoaderConfig, crop: (usize, usize), epoch: u64) -> Vec<Item> {
    // runs: (scene, first window, windows)
    let mut runs: Vec<(u32, u32, u32)> = Vec::new();
    for (si, s) in scenes.iter().enumerate() {
        let mut w = 0;
        while w < s.windows {
            let n = RUN_WINDOWS.min(s.windows - w);
            runs.push((si as u32, w as u32, n as u32));
            w += n;
        }
    }
    let total: usize = scenes.iter().map(|s| s.windows).sum();
    let mut order: Vec<(u32, u32)> = Vec::with_capacity(total); // (run, window index in scene)
    if cfg.shuffle {
        let mut rng = Rng::new(mix(&[cfg.seed, epoch, TAG_RUNS]));
        for i in (1..runs.len()).rev() {
            runs.swap(i, rng.below(i + 1));
        }
        let mut picks = Rng::new(mix(&[cfg.seed, epoch, TAG_PICKS]));
        let lanes = cfg.initial_fill.max(1).min(runs.len());
        // each lane: (run, windows of it taken)
        let mut active: Vec<(usize, u32)> = (0..lanes).map(|r| (r, 0)).collect();
        let mut next_run = lanes;
        while !active.is_empty() {
            let j = picks.below(active.len());
            let (r, taken) = active[j];
            order.push((r as u32, runs[r].1 + taken));
            if taken + 1 < runs[r].2 {
                active[j].1 += 1;
            } else if next_run < runs.len() {
                active[j] = (next_run, 0);
                next_run += 1;
            } else {
                active.remove(j);
            }
        }
    } else {
        for (r, &(_, first, n)) in runs.iter().enumerate() {
            order.extend((0..n).map(|k| (r as u32, first + k)));
        }
    }
    let (ch, cw) = crop;
    order
        .into_iter()
        .map(|(run, w)| {
            let si = runs[run as usize].0;
            let s = &scenes[si as usize];
            let start = w as usize * cfg.stride;
            let (y0, x0) = match cfg.crop {
                CropMode::Random { .. } => {
                    let mut rng = Rng::new(mix(&[cfg.seed, epoch, name_hash(&s.name), start as u64, TAG_CROP]));
                    // even offsets in [0, size - crop]
                    let y = 2 * rng.below((s.height - ch) / 2 + 1);
                    let x = 2 * rng.below((s.width - cw) / 2 + 1);
                    (y, x)
                }
                CropMode::Centre { .. } | CropMode::Full => (((s.height - ch) / 2) & !1, ((s.width - cw) / 2) & !1),
            };
            Item { scene: si, start: start as u32, y0: y0 as u32, x0: x0 as u32, run }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenes() -> Vec<SceneWindows> {
        [("a", 20), ("b", 3), ("c", 11)]
            .into_iter()
            .map(|(n, w)| SceneWindows { name: n.into(), windows: w, height: 136, width: 320 })
            .collect()
    }

    #[test]
    fn every_window_once_in_runs() {
        let cfg = LoaderConfig::train(3, 2, 64, 128, 5);
        let s = scenes();
        let p = plan(&s, &cfg, (64, 128), 0);
        assert_eq!(p.len(), 34);
        let mut seen: Vec<(u32, u32)> = p.iter().map(|i| (i.scene, i.start)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 34, "a window visited twice");
        // within a run, windows come in increasing order and from one scene
        let mut last: std::collections::HashMap<u32, (u32, u32)> = Default::default();
        for i in &p {
            if let Some(&(scene, start)) = last.get(&i.run) {
                assert_eq!(scene, i.scene);
                assert_eq!(i.start, start + 3, "run {} goes out of order", i.run);
            }
            last.insert(i.run, (i.scene, i.start));
            assert!(i.y0 % 2 == 0 && i.x0 % 2 == 0 && i.y0 as usize + 64 <= 136 && i.x0 as usize + 128 <= 320);
        }
        // a new order each epoch, the same for the same epoch
        assert_eq!(plan(&s, &cfg, (64, 128), 0), p);
        assert_ne!(plan(&s, &cfg, (64, 128), 1), p);
        // not the sequential order
        assert!(p.windows(2).any(|w| w[0].scene != w[1].scene));
    }

    #[test]
    fn validation_order_is_sequential_and_centred() {
        let mut cfg = LoaderConfig::val(3, 4);
        cfg.crop = CropMode::Full;
        let p = plan(&scenes(), &cfg, (128, 320), 9);
        let got: Vec<(u32, u32)> = p.iter().map(|i| (i.scene, i.start)).take(3).collect();
        assert_eq!(got, vec![(0, 0), (0, 3), (0, 6)]);
        assert!(p.iter().all(|i| (i.y0, i.x0) == (4, 0)));
    }

    #[test]
    fn rng_below_is_uniform_enough() {
        let mut r = Rng::new(1);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[r.below(3)] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }
}
