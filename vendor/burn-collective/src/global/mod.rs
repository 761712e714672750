pub(crate) mod node;
pub(crate) mod shared;
// vsr patch: nameable by users (it is in `CollectiveError::Global`).
pub use shared::GlobalCollectiveError;

#[cfg(feature = "orchestrator")]
pub mod orchestrator;
#[cfg(feature = "orchestrator")]
pub use orchestrator::*;

mod base;
pub use base::*;
