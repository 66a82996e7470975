//! Process-wide allocator settings for training.
//!
//! A training step allocates and frees many tensors of a few MiB each. glibc serves
//! blocks above its (dynamic) mmap threshold with fresh `mmap`s and returns freed memory
//! to the kernel eagerly, so every step pays page faults and zeroing again (about 11% of a
//! MiniLM step in the profile in `.notes/SPEED.md`). Raising both thresholds keeps those
//! blocks in the heap for reuse; the cost is a higher resident size after a peak.

/// Blocks below this size come from the heap, not from a fresh `mmap`.
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap is returned to the kernel only above this size.
const TRIM_THRESHOLD: i32 = i32::MAX;

/// Applies the settings (glibc only; a no-op elsewhere). Call once, at start-up, before
/// threads start allocating.
pub fn tune_for_training() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
