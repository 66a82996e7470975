//! Length-bucketed batches of instance indices.
//!
//! Real sentences average 55–80 word pieces, so padding every batch to `max_len` wastes
//! much of the compute. Training batches are drawn as in bucketing iterators: shuffle all
//! instances, cut the order into chunks of [`CHUNK_BATCHES`] batches, sort each chunk by
//! length, cut it into batches and shuffle the batch order. Each batch is then padded only
//! to its own longest instance.

use super::rng::SplitMix64;

/// Batches per sorting chunk: large enough that neighbours have similar lengths, small
/// enough that batches still mix instances from across the data.
pub const CHUNK_BATCHES: usize = 50;

/// The batches of one training epoch (every index in `0..lengths.len()` exactly once).
pub fn train_batches(
    lengths: &[usize],
    batch_size: usize,
    rng: &mut SplitMix64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for chunk in order.chunks_mut(batch_size * CHUNK_BATCHES) {
        // stable sort: equal lengths keep their shuffled order
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

/// The batches of one epoch without bucketing: the shuffled order cut into consecutive
/// batches (every index in `0..n` exactly once). The caller pads each to a fixed length.
pub fn shuffled_batches(n: usize, batch_size: usize, rng: &mut SplitMix64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Batches for inference: all instances sorted by length (least padding), no shuffling.
pub fn eval_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Padded tokens over real tokens for these batches (1.0 = no padding).
pub fn padding_ratio(lengths: &[usize], batches: &[Vec<usize>]) -> f64 {
    let real: usize = lengths.iter().sum();
    let padded: usize = batches
        .iter()
        .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap_or(0))
        .sum();
    if real == 0 {
        1.0
    } else {
        padded as f64 / real as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(n: usize) -> Vec<usize> {
        let mut rng = SplitMix64::new(11);
        (0..n).map(|_| 10 + rng.below(110)).collect()
    }

    #[test]
    fn every_instance_once_per_epoch() {
        let lengths = lengths(1000);
        let batches = train_batches(&lengths, 32, &mut SplitMix64::new(1));
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 32));
    }

    #[test]
    fn bucketing_cuts_padding_against_random_batches() {
        let lengths = lengths(3200);
        let bucketed = train_batches(&lengths, 32, &mut SplitMix64::new(1));
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        SplitMix64::new(1).shuffle(&mut order);
        let random: Vec<Vec<usize>> = order.chunks(32).map(<[usize]>::to_vec).collect();
        let (b, r) = (
            padding_ratio(&lengths, &bucketed),
            padding_ratio(&lengths, &random),
        );
        assert!(b < 1.05, "bucketed padding ratio {b}");
        assert!(r > 1.3, "random padding ratio {r}");
    }

    #[test]
    fn epochs_differ_and_seeds_reproduce() {
        let lengths = lengths(500);
        let mut rng = SplitMix64::new(5);
        let e1 = train_batches(&lengths, 16, &mut rng);
        let e2 = train_batches(&lengths, 16, &mut rng);
        assert_ne!(e1, e2);
        assert_eq!(e1, train_batches(&lengths, 16, &mut SplitMix64::new(5)));
    }

    #[test]
    fn shuffled_batches_cover_every_instance_once_and_reproduce() {
        let mut rng = SplitMix64::new(3);
        let e1 = shuffled_batches(1000, 32, &mut rng);
        let e2 = shuffled_batches(1000, 32, &mut rng);
        for epoch in [&e1, &e2] {
            let mut seen: Vec<usize> = epoch.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..1000).collect::<Vec<_>>());
            assert!(epoch.iter().all(|b| !b.is_empty() && b.len() <= 32));
        }
        assert_ne!(e1, e2);
        assert_eq!(e1, shuffled_batches(1000, 32, &mut SplitMix64::new(3)));
    }

    #[test]
    fn eval_batches_are_sorted_and_complete() {
        let lengths = lengths(100);
        let batches = eval_batches(&lengths, 32);
        let flat: Vec<usize> = batches.iter().flatten().copied().collect();
        assert_eq!(flat.len(), 100);
        assert!(flat.windows(2).all(|w| lengths[w[0]] <= lengths[w[1]]));
    }
}
