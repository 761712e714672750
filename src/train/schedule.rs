//! The triangular cyclic learning rate of the original (`main.py`), exactly:
//!
//! ```text
//! cycle = floor(1 + it / (2 s))
//! x     = |it / s - 2 cycle + 1|
//! lr    = min_lr + (max_lr - min_lr) * max(0, 1 - x)
//! ```
//! with step size `s = 2 x (batches per epoch)`: the rate climbs from `min_lr` to `max_lr` over
//! two epochs and falls back over the next two.

use serde::{Deserialize, Serialize};

/// Triangular cyclic LR (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CyclicLr {
    pub min_lr: f64,
    pub max_lr: f64,
    /// Half a cycle, in iterations.
    pub step_size: f64,
}

impl CyclicLr {
    /// The original's schedule for an epoch of `batches_per_epoch` iterations.
    pub fn for_epoch(min_lr: f64, max_lr: f64, batches_per_epoch: usize) -> Self {
        Self { min_lr, max_lr, step_size: (2 * batches_per_epoch.max(1)) as f64 }
    }

    /// Learning rate at iteration `it` (0-based, counted over the whole run).
    pub fn lr(&self, it: u64) -> f64 {
        let it = it as f64;
        let s = self.step_size;
        let cycle = (1.0 + it / (2.0 * s)).floor();
        let x = (it / s - 2.0 * cycle + 1.0).abs();
        self.min_lr + (self.max_lr - self.min_lr) * (1.0 - x).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked out by hand from the formula: s = 4 (2 batches per epoch), 1e-4 .. 1e-3.
    #[test]
    fn matches_hand_computed_values() {
        let lr = CyclicLr::for_epoch(1e-4, 1e-3, 2);
        assert_eq!(lr.step_size, 4.0);
        // it=0: cycle 1, x = |0 - 2 + 1| = 1 -> min_lr
        // it=1: x = |0.25 - 1| = 0.75 -> 1e-4 + 9e-4 * 0.25 = 3.25e-4
        // it=2: x = 0.5 -> 5.5e-4; it=3: x = 0.25 -> 7.75e-4; it=4: x = 0 -> 1e-3
        // it=6: x = |1.5 - 1| = 0.5 -> 5.5e-4; it=8: cycle 2, x = |2 - 4 + 1| = 1 -> 1e-4
        // it=10: cycle 2, x = |2.5 - 3| = 0.5 -> 5.5e-4
        let expected = [
            (0, 1e-4),
            (1, 3.25e-4),
            (2, 5.5e-4),
            (3, 7.75e-4),
            (4, 1e-3),
            (5, 7.75e-4),
            (6, 5.5e-4),
            (7, 3.25e-4),
            (8, 1e-4),
            (10, 5.5e-4),
            (12, 1e-3),
        ];
        for (it, want) in expected {
            let got = lr.lr(it);
            assert!((got - want).abs() < 1e-12, "it {it}: {got} != {want}");
        }
    }

    #[test]
    fn constant_when_min_equals_max() {
        let lr = CyclicLr::for_epoch(1e-3, 1e-3, 7);
        assert!((0..100).all(|it| (lr.lr(it) - 1e-3).abs() < 1e-15));
    }
}
