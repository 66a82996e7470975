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
/// processes it has waited for (`getrusage`): a cold run's cost split between the engine
/// and the stages' `sh`; `pipe bench engine` reads it around its start-up floor.
pub fn cpu_seconds() -> Option<(f64, f64)> {
    let of = |who| {
        // SAFETY: an all-zero `rusage` is a valid value of this plain C struct, and
        // `getrusage` only writes into it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is valid for writes for the duration of the call.
        (unsafe { libc::getrusage(who, &mut usage) } == 0).then(|| rusage_cpu_seconds(&usage))
    };
    Some((of(libc::RUSAGE_SELF)?, of(libc::RUSAGE_CHILDREN)?))
}

/// User + system seconds of `usage` (from `getrusage` or `wait4`).
pub fn rusage_cpu_seconds(usage: &libc::rusage) -> f64 {
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The process's resident memory now (Linux: `/proc/self/statm`, in pages of 4 KiB).
fn resident_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1024 * 1024))
}
