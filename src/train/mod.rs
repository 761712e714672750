//! Training (`vsr train`): the original's `main.py` with its defects fixed.
//!
//! - [`config`]: the run's settings ([`TrainConfig`]), saved with every checkpoint.
//! - [`step`]: one optimisation step ([`Trainer`]): VSRNet forward with a frozen FlowNetSD, MSE
//!   against the true HR frame, backward, Adam with weight decay ([`adam`]); fp16 with fp32
//!   master weights and dynamic loss scaling ([`LossScaler`]).
//! - [`schedule`]: the triangular cyclic learning rate ([`CyclicLr`]).
//! - [`run`]: the loop: data, steps, validation ([`validate`]), logging ([`log`], TensorBoard
//!   files by [`tfevents`]), atomic checkpoints and exact resume ([`checkpoint`]).
//! - Data-parallel training on several devices and nodes: [`collective`] (the gradient
//!   all-reduce, burn-collective) and [`parallel`] (worker threads, watchdog, failures).

pub mod adam;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod log;
pub mod parallel;
pub mod run;
pub mod scaler;
pub mod schedule;
pub mod step;
pub mod tfevents;
pub mod validate;

pub use config::TrainConfig;
pub use collective::Cluster;
pub use run::{Parallel, RunSummary, train, train_on};
pub use scaler::LossScaler;
pub use schedule::CyclicLr;
pub use adam::AdamSettings;
pub use step::{StepOutcome, Trainer};
