//! Messages of the libraries under vsr (Burn, burn-collective, CubeCL, wgpu) on stderr: warnings
//! and errors by default, `VSR_LOG=error|warn|info|debug|trace` for more or less.
//!
//! Installed first thing, so that no library installs its own: burn-collective's servers would
//! otherwise set up a tracing subscriber printing every INFO line (one per tensor transfer in a
//! multi-node run). vsr takes both global slots: the `log` logger below, and a tracing
//! subscriber that drops events (the libraries vsr uses report through `log`).

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr(LevelFilter);

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.0
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            eprintln!("{} {}: {}", record.level().as_str().to_lowercase(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

/// The level `VSR_LOG` asks for (warn when unset or not a level).
fn level() -> LevelFilter {
    std::env::var("VSR_LOG").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(LevelFilter::Warn)
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let level = level();
    if log::set_boxed_logger(Box::new(Stderr(level))).is_ok() {
        log::set_max_level(level);
    }
}
