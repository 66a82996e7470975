//! Where a command's time goes, phase by phase: with `PIPE_TIMINGS=1` each phase's
//! wall time and the resident memory after it are printed on stderr as it ends (as
//! `cargo build --timings` is for a build).
//! This is how the engine's costs at 100,000 stages were found (#27); off, a phase mark
//! costs one relaxed atomic load.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// 0: not read yet, 1: off, 2: on.
static ENABLED: AtomicU8 = AtomicU8::new(0);
static LAST: Mutex<Option<Instant>> = Mutex::new(None);

fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("PIPE_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0");
            ENABLED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        v => v == 2,
    }
}

/// Starts the clock (the first phase counts from here).
pub fn start() {
    if enabled() {
        if let Ok(mut last) = LAST.lock() {
            *last = Some(Instant::now());
        }
    }
}

/// Ends phase `name`: prints the time since the last mark (or [`start`]).
pub fn mark(name: &str) {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    let Ok(mut last) = LAST.lock() else { return };
    let since = last.map(|t| now - t).unwrap_or_default();
    *last = Some(now);
    let cpu = cpu_seconds().map_or(String::new(), |(own, children)| {
        format!("  cpu so far: {own:.2} s pipe, {children:.2} s its processes")
    });
    eprintln!(
        "timings: {name:<32} {:>7.3} s {:>7} MiB resident{cpu}",
        since.as_secs_f64(),
        resident_mib().map_or("?".to_string(), |m| m.to_string())
    );
}

/// CPU seconds (user + system) so far of this process's own threads and of the child
/// processes it has waited for (Linux: `/proc/self/stat`, fields 14-17, in clock ticks):
/// a cold run's cost split between the engine and the stages' `sh`.
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    if ticks.len() < 4 || per_second <= 0.0 {
        return None;
    }
    Some((
        (ticks[0] + ticks[1]) / per_second,
        (ticks[2] + ticks[3]) / per_second,
    ))
}

/// The process's resident memory now (Linux: `/proc/self/statm`, in pages of 4 KiB).
fn resident_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1024 * 1024))
}
