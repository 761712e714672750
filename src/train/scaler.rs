//! Dynamic loss scaling for fp16 training: start at 2^32; on any inf/NaN gradient halve the
//! scale and skip the step; after 1000 clean steps double it.

use serde::{Deserialize, Serialize};

/// State of the dynamic loss scaler (saved in checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Clean steps since the last change of scale.
    pub clean_steps: u64,
    /// Steps skipped because of inf/NaN gradients, over the run.
    pub skipped_steps: u64,
    pub growth_interval: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self { scale: 2f64.powi(32), clean_steps: 0, skipped_steps: 0, growth_interval: 1000 }
    }
}

impl LossScaler {
    /// The scaler a fresh run starts with: disabled in fp32.
    pub fn for_precision(precision: crate::precision::Precision) -> Self {
        match precision {
            crate::precision::Precision::Fp32 => LossScaler::disabled(),
            crate::precision::Precision::Fp16 => LossScaler::default(),
        }
    }

    /// A scaler that never scales (fp32 training).
    pub fn disabled() -> Self {
        Self { scale: 1.0, growth_interval: u64::MAX, ..Self::default() }
    }

    /// Records the outcome of a step; returns whether the step may be applied.
    pub fn update(&mut self, grads_finite: bool) -> bool {
        if !grads_finite {
            self.scale = (self.scale / 2.0).max(1.0);
            self.clean_steps = 0;
            self.skipped_steps += 1;
            return false;
        }
        self.clean_steps += 1;
        if self.clean_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.clean_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_and_doubles_after_clean_interval() {
        let mut s = LossScaler::default();
        assert_eq!(s.scale, 4294967296.0);
        assert!(!s.update(false));
        assert_eq!((s.scale, s.skipped_steps), (2147483648.0, 1));
        for _ in 0..999 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 2147483648.0);
        assert!(s.update(true));
        assert_eq!((s.scale, s.clean_steps), (4294967296.0, 0));
    }
}
