//! The networks: FlowNetSD (optical flow) and VSRNet (super-resolution), and the warp that joins
//! them.

pub mod blocks;
pub mod flownet_sd;
pub mod vsrnet;
pub mod warp;

pub use flownet_sd::{FlowNetSD, FlowNetSDConfig};
pub use vsrnet::{FlowEstimator, FlowInput, Frozen, SrOutput, VsrNet, VsrNetConfig, VsrOutput};
