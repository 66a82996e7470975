//! A small, fixed pseudo-random generator for reproducible shuffles: SplitMix64
//! (Steele, Lea & Flood 2014), seeded from blake3(seed, purpose). It is part of `pipe`,
//! not a dependency, so a seed gives the same folds in every version and on every platform.
//! (`train::rng::SplitMix64` has the same step but draws `below` by multiply-shift and is
//! seeded by stream numbers; keeping the two apart keeps every cached split and training
//! order what it was.)

/// SplitMix64 state.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator for `seed`, independent for each `purpose` (e.g. `"kfold"`, `"dev/3"`).
    pub fn new(seed: u64, purpose: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"pipe-shuffle-v1\0");
        h.update(&seed.to_le_bytes());
        h.update(purpose.as_bytes());
        let bytes = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes.as_bytes()[..8]);
        SplitMix64 {
            state: u64::from_le_bytes(first),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn same_seed_same_order_other_seed_other_order() {
        let base: Vec<u32> = (0..50).collect();
        let shuffled = |seed, purpose| {
            let mut v = base.clone();
            SplitMix64::new(seed, purpose).shuffle(&mut v);
            v
        };
        assert_eq!(shuffled(7, "kfold"), shuffled(7, "kfold"));
        assert_ne!(shuffled(7, "kfold"), shuffled(8, "kfold"));
        assert_ne!(shuffled(7, "kfold"), shuffled(7, "dev"));
        let mut sorted = shuffled(7, "kfold");
        sorted.sort();
        assert_eq!(sorted, base);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(1, "t");
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            seen[r.below(6) as usize] += 1;
        }
        // Each of 6 outcomes has expectation 1000; 5 sigma ≈ 150.
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
    }
}
