//! Learning rate: linear warm-up to the peak, then linear decay towards zero (the schedule
//! of BERT fine-tuning), as a pure function of the update index so a resumed run needs no
//! scheduler state.

/// Linear warm-up over the first `warmup_steps` updates, linear decay over the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearWarmupDecay {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LinearWarmupDecay {
    /// `warmup` is the fraction of `total_steps` spent warming up (0.1 in BERT fine-tuning).
    pub fn new(peak: f64, warmup: f64, total_steps: usize) -> Self {
        let warmup_steps = (warmup.clamp(0.0, 1.0) * total_steps as f64).round() as usize;
        LinearWarmupDecay {
            peak,
            warmup_steps: warmup_steps.min(total_steps),
            total_steps,
        }
    }

    /// Learning rate of update `step` (0-based):
    /// `peak·(step+1)/W` while `step < W`, then `peak·(S−step)/(S−W)`; never zero inside
    /// the run, so no update is wasted.
    pub fn lr(&self, step: usize) -> f64 {
        let (w, s) = (self.warmup_steps, self.total_steps);
        if step < w {
            self.peak * (step + 1) as f64 / w as f64
        } else if step < s {
            self.peak * (s - step) as f64 / (s - w) as f64
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_peaks_and_decays_linearly() {
        let s = LinearWarmupDecay::new(2e-5, 0.1, 100);
        assert_eq!(s.warmup_steps, 10);
        assert!((s.lr(0) - 2e-6).abs() < 1e-18);
        assert!((s.lr(9) - 2e-5).abs() < 1e-18);
        assert!((s.lr(10) - 2e-5).abs() < 1e-18);
        assert!((s.lr(55) - 2e-5 * 45.0 / 90.0).abs() < 1e-18);
        assert!((s.lr(99) - 2e-5 / 90.0).abs() < 1e-18);
        assert_eq!(s.lr(100), 0.0);
        let lrs: Vec<f64> = (0..100).map(|i| s.lr(i)).collect();
        assert!(lrs[..10].windows(2).all(|w| w[0] < w[1]));
        assert!(lrs[10..].windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn no_warmup_starts_at_peak() {
        let s = LinearWarmupDecay::new(1.0, 0.0, 4);
        assert_eq!(
            (0..4).map(|i| s.lr(i)).collect::<Vec<_>>(),
            vec![1.0, 0.75, 0.5, 0.25]
        );
    }
}
