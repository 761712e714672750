//! `VSR_PROFILE=<file>` (built with the `profile` feature): a sampling profile of the process's CPU
//! time, every thread, for finding where host time goes on machines without perf or Nsight
//! Systems. Written when the command ends as collapsed stacks, one line per distinct stack:
//! `thread;outermost;...;innermost samples` (the input of flamegraph.pl and inferno).
//! `VSR_PROFILE_DELAY=<seconds>` starts sampling that long after launch, past start-up's kernel
//! compilation and tuning; `VSR_PROFILE_HZ` sets the rate (default 997 samples per second of CPU).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

type Guard = pprof::ProfilerGuard<'static>;

static GUARD: Mutex<Option<Guard>> = Mutex::new(None);

/// Where the profile goes, or None when `VSR_PROFILE` is unset.
fn target() -> Option<PathBuf> {
    std::env::var_os("VSR_PROFILE").filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map(Some).map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(None),
    }
}

/// Starts sampling (at once, or after `VSR_PROFILE_DELAY` on a thread of its own) when
/// `VSR_PROFILE` is set.
pub fn start() -> anyhow::Result<()> {
    if target().is_none() {
        return Ok(());
    }
    let hz: i32 = env_number("VSR_PROFILE_HZ")?.unwrap_or(997);
    let delay: f64 = env_number("VSR_PROFILE_DELAY")?.unwrap_or(0.0);
    let begin = move || -> anyhow::Result<()> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(hz)
            // unwinding from inside these can fail in a signal handler; names matched as
            // substrings, so "libc.so" (not "libc", which would also drop libcuda and libcudnn)
            .blocklist(&["libc.so", "libgcc_s", "libpthread", "vdso"])
            .build()
            .context("starting the sampling profiler (VSR_PROFILE)")?;
        *GUARD.lock().unwrap() = Some(guard);
        Ok(())
    };
    if delay > 0.0 {
        std::thread::Builder::new()
            .name("vsr-profile".into())
            .spawn(move || {
                std::thread::sleep(Duration::from_secs_f64(delay));
                if let Err(e) = begin() {
                    eprintln!("warning: {e:#}");
                }
            })
            .context("starting the profiler's thread")?;
        Ok(())
    } else {
        begin()
    }
}

/// Stops sampling and writes the collapsed stacks to `VSR_PROFILE` (nothing when sampling never
/// started).
pub fn finish() -> anyhow::Result<()> {
    let Some(path) = target() else { return Ok(()) };
    let Some(guard) = GUARD.lock().unwrap().take() else {
        eprintln!("warning: VSR_PROFILE: the run ended before sampling started (VSR_PROFILE_DELAY)");
        return Ok(());
    };
    let report = guard.report().build().context("building the profile (VSR_PROFILE)")?;
    let mut lines: Vec<(String, isize)> = report
        .data
        .iter()
        .map(|(frames, &count)| {
            let mut line = frames.thread_name_or_id().replace([';', ' '], "_");
            // innermost first in pprof's frames: outermost first in a collapsed stack
            for symbol in frames.frames.iter().rev().flat_map(|f| f.iter().rev()) {
                line.push(';');
                line.push_str(&symbol.name().replace([';', ' '], "_"));
            }
            (line, count)
        })
        .collect();
    lines.sort();
    let text: String = lines.iter().map(|(l, c)| format!("{l} {c}\n")).collect();
    std::fs::write(&path, text).with_context(|| format!("writing the profile to {}", path.display()))?;
    eprintln!("profile: {} samples in {} stacks written to {}", lines.iter().map(|l| l.1).sum::<isize>(), lines.len(), path.display());
    Ok(())
}
