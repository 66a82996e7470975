//! Dropout masks drawn in parallel from the backend's own generator stream.
//!
//! burn's `Dropout` on `flex` draws its Bernoulli(1 − p) mask from the backend's ChaCha12
//! generator one element at a time, each draw going through a freshly built sampler; that
//! is ~9 % of a training step. The stream is seekable: element `i` of a call reads the
//! 64-bit draw made of words `w₀ + 2i` and `w₀ + 2i + 1`, where `w₀` is where the call
//! starts. [`draw_mask`] computes the same mask in parallel chunks, each seeking its own
//! copy of the generator, so a seeded run gets the masks it got before, bit for bit.
//!
//! The stream position lives here, per thread, between [`SeededStream::start`] (called
//! where training code seeds the backend, `train::rng::with_backend_seed`) and the end of
//! that scope; outside such a scope the caller falls back to burn's dropout.

use std::cell::Cell;

use chacha20::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use rayon::prelude::*;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 15;

thread_local! {
    /// The generator seed and the next unread word of the stream, while a seeded scope is
    /// open on this thread.
    static STREAM: Cell<Option<([u8; 32], u128)>> = const { Cell::new(None) };
}

/// An open seeded scope; dropping it closes the scope (and restores an enclosing one).
pub struct SeededStream {
    previous: Option<([u8; 32], u128)>,
}

impl SeededStream {
    /// Opens a scope whose draws follow the backend generator seeded with `seed`
    /// (`StdRng::seed_from_u64(seed)`, which is ChaCha12 on the expanded seed).
    pub fn start(seed: u64) -> Self {
        let key = ChaCha12Rng::seed_from_u64(seed).get_seed();
        SeededStream {
            previous: STREAM.with(|s| s.replace(Some((key, 0)))),
        }
    }
}

impl Drop for SeededStream {
    fn drop(&mut self) {
        STREAM.with(|s| s.set(self.previous));
    }
}

/// rand's `Bernoulli::new(p)` threshold: a draw `v` is a success when `v < p·2⁶⁴`.
/// `None` for p = 1 (rand then returns `true` without drawing).
fn threshold(p: f64) -> Option<u64> {
    (p < 1.0).then_some((p * 2.0 * (1u64 << 63) as f64) as u64)
}

/// Whether this thread is inside a [`SeededStream`] scope (so [`draw_mask`] will draw).
pub fn in_seeded_scope() -> bool {
    STREAM.with(Cell::get).is_some()
}

/// The next `n` Bernoulli(`p_keep`) draws of this thread's stream as 1.0 / 0.0, or `None`
/// when no seeded scope is open. Advances the stream as burn's sampler would.
pub fn draw_mask(n: usize, p_keep: f64) -> Option<Vec<f32>> {
    let (key, start) = STREAM.with(Cell::get)?;
    let Some(limit) = threshold(p_keep) else {
        return Some(vec![1.0; n]);
    };
    let mut mask = vec![0.0f32; n];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = ChaCha12Rng::from_seed(key);
            rng.set_word_pos(start + 2 * (c * CHUNK) as u128);
            for m in chunk {
                *m = if rng.next_u64() < limit { 1.0 } else { 0.0 };
            }
        });
    STREAM.with(|s| s.set(Some((key, start + 2 * n as u128))));
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_chunks_read_the_sequential_stream() {
        let _scope = SeededStream::start(42);
        let n = 3 * CHUNK + 17;
        let first = draw_mask(n, 0.9).expect("scope open");
        let second = draw_mask(5, 0.9).expect("scope open");
        let mut rng = ChaCha12Rng::seed_from_u64(42);
        let limit = threshold(0.9).expect("p < 1");
        let sequential: Vec<f32> = (0..n + 5)
            .map(|_| if rng.next_u64() < limit { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(first, sequential[..n]);
        assert_eq!(second, sequential[n..]);
        let kept = first.iter().sum::<f32>() / n as f32;
        assert!((0.89..0.91).contains(&kept), "{kept}");
    }

    #[test]
    fn no_scope_no_mask_and_scopes_nest() {
        assert!(draw_mask(4, 0.5).is_none());
        let outer = SeededStream::start(1);
        let a = draw_mask(4, 0.5);
        {
            let _inner = SeededStream::start(2);
            draw_mask(4, 0.5);
        }
        let b = draw_mask(4, 0.5);
        drop(outer);
        assert!(draw_mask(4, 0.5).is_none());
        let _again = SeededStream::start(1);
        let expected = draw_mask(8, 0.5).expect("scope open");
        let mut both = a.expect("outer");
        both.extend(b.expect("outer"));
        assert_eq!(
            both, expected,
            "the inner scope does not move the outer stream"
        );
    }
}
