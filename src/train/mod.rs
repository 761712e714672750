//! Training: the pieces of the original's `main.py` that stand on their own. The loop itself
//! (loader, optimiser, validation, logging, checkpoints) builds on these.

pub mod scaler;
pub mod schedule;

pub use scaler::LossScaler;
pub use schedule::CyclicLr;
