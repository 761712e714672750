//! Errors of the `vsr` library. Each names the file it is about and what was wrong with it.

use std::path::PathBuf;

/// Result alias of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can refuse, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint could not be parsed (not a `torch.save` file, truncated, corrupted).
    #[error("{path}: not a readable checkpoint: {reason}")]
    CheckpointFormat { path: PathBuf, reason: String },
    /// A checkpoint parsed, but its tensors do not fit the model.
    #[error("{path}: checkpoint does not match {model}: {}", .problems.join("; "))]
    CheckpointMismatch {
        path: PathBuf,
        model: &'static str,
        problems: Vec<String>,
    },
    /// A backend was asked for that this build or this machine cannot provide.
    #[error("{0}")]
    Backend(String),
    /// A tensor fixture or safetensors file was malformed.
    #[error("{path}: {reason}")]
    Tensors { path: PathBuf, reason: String },
    /// A video could not be opened, demuxed, decoded or written (missing, truncated, not a
    /// video, no video stream, an encoder refusing its settings).
    #[error("{path}: {reason}")]
    Media { path: PathBuf, reason: String },
    /// Invalid arguments or inputs (shape, frame count, sizes).
    #[error("{0}")]
    Invalid(String),
    /// Data-parallel training: the gradient all-reduce between the workers failed (a worker or
    /// node stopped, the collective was reset after another worker's failure, a timeout).
    #[error("collective: {0}")]
    Collective(String),
    /// Data-parallel training: one worker failed, which stopped the whole run.
    #[error("worker {rank} ({device}) failed: {error}")]
    Worker {
        /// The worker's global rank.
        rank: usize,
        device: String,
        /// What went wrong (shown in this error's message, so not chained as its source).
        error: Box<Error>,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
