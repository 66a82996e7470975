//! A small seeded random number generator (SplitMix64) whose whole state is one `u64`,
//! so a checkpoint can store it and a resumed run draws the same numbers.

use serde::{Deserialize, Serialize};

/// SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, passes BigCrush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    pub state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator for one purpose of one run: `seed` mixed with a stream number, so streams
    /// (shuffling of epoch 3, dropout of step 17, …) do not overlap.
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut mixer = SplitMix64::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        SplitMix64::new(mixer.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Serializes every use of the backend's generator by training code in this process.
///
/// burn's CPU backend keeps one process-wide generator: `Device::seed` replaces it and every
/// random op (parameter initialization, dropout masks) advances it. Two training stages in
/// one process (`--jobs`), or two tests in one test binary, would interleave their draws and
/// lose reproducibility; holding this lock from the `seed` call to the last draw prevents it.
static BACKEND_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `draw` (random ops that need no particular seed, e.g. test inputs) while no seeded
/// user is between its `seed` call and its last draw, so it cannot shift their draws.
pub fn unseeded_draw<R>(draw: impl FnOnce() -> R) -> R {
    let _guard = BACKEND_GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    draw()
}

/// Builds a module with [`unseeded_draw`] and draws all its parameters there too (burn
/// draws a parameter's initial value lazily, on first use: a test module touched later,
/// outside the lock, would draw into a seeded user's stream).
#[cfg(test)]
pub(crate) fn unseeded_module<M: burn::module::Module>(make: impl FnOnce() -> M) -> M {
    unseeded_draw(|| {
        let module = make();
        crate::train::classifier::initialize_params(&module);
        module
    })
}

/// Seeds the backend's generator for `device` with `seed` and keeps every other user of it
/// waiting until the returned guard is dropped (for code that draws in several places, such
/// as tests building a model; must not call [`with_backend_seed`] while holding it).
pub fn hold_backend_seed(
    device: &burn::tensor::Device,
    seed: u64,
) -> std::sync::MutexGuard<'static, ()> {
    let guard = BACKEND_GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    device.seed(seed);
    guard
}

/// Seeds the backend's generator for `device` with `seed` and runs `draw` while no other
/// [`with_backend_seed`] caller can draw from it.
pub fn with_backend_seed<R>(
    device: &burn::tensor::Device,
    seed: u64,
    draw: impl FnOnce() -> R,
) -> R {
    let _guard = BACKEND_GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    device.seed(seed);
    // dropout masks on this thread follow the same stream, drawn in parallel
    let _stream = crate::model::fused::SeededStream::start(seed);
    draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let a: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            SplitMix64::stream(7, 1).next_u64(),
            SplitMix64::stream(7, 2).next_u64()
        );
    }

    #[test]
    fn shuffle_is_a_permutation_and_mixes() {
        let mut v: Vec<usize> = (0..100).collect();
        SplitMix64::new(1).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }

    #[test]
    fn below_covers_the_range_evenly() {
        let mut rng = SplitMix64::new(3);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[rng.below(5)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
