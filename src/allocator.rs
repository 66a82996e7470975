//! Process-wide allocator settings: the engine's, and training's.
//!
//! glibc moves its mmap threshold up to the size of each large block freed (up to
//! 32 MiB): after a pipeline of 100,000 stages is loaded and its expansion stored, every
//! later buffer of a few MiB comes from the heap, where its pages stay resident once it
//! is freed, in whichever thread's arena held it. The engine fixes the threshold
//! ([`tune_for_engine`]): a run after an edit of a 100,000-stage matrix peaked at 225-257
//! MB resident with the moving one, 172-207 MB with it fixed (four runs each, #27).
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
/// The engine's threshold: glibc's own starting value, kept fixed.
const ENGINE_MMAP_THRESHOLD: i32 = 128 << 10;

/// Fixes the mmap threshold for the engine's work (glibc only; a no-op elsewhere), at
/// start-up: large blocks are mapped and given back to the kernel when freed. A stage
/// that runs a model switches to [`tune_for_training`] when it starts.
pub fn tune_for_engine() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters (under glibc's arena locks).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, ENGINE_MMAP_THRESHOLD);
    }
}

/// Applies the settings (glibc only; a no-op elsewhere), once per process, when training
/// (or any stage that runs a model) starts: not at start-up, because the same settings
/// keep a large pipeline's parse buffers (hundreds of MB at 100,000 stages, freed before
/// training) resident in `plan` and in a no-op `run` (#27).
pub fn tune_for_training() {
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: `mallopt` only changes allocator parameters (under glibc's arena locks).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    });
}

/// Gives the heap's free pages back to the kernel (glibc only; a no-op elsewhere). After
/// work spread over threads (each allocating from its own glibc arena), the memory those
/// threads freed stays with their arenas, where the main thread cannot reuse it; without
/// this, it would add to every later peak.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
