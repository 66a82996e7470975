//! Mean and sample standard deviation over seeds or folds.

use serde::{Deserialize, Serialize};

/// Mean ± sample standard deviation of `n` values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    /// Sample standard deviation (n − 1 denominator); `None` when n < 2.
    pub std: Option<f64>,
    pub n: usize,
}

impl MeanStd {
    /// Mean and sample std of `values`; `None` for an empty slice.
    pub fn of(values: &[f64]) -> Option<MeanStd> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n >= 2).then(|| {
            let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Some(MeanStd { mean, std, n })
    }

    /// The one-sided p-value of "the mean is above 0" by a one-sample t-test (for paired
    /// differences: the paired t-test): P(T ≥ t) for t = mean / (std / √n) on n − 1 degrees
    /// of freedom. `None` below two values. A spread of exactly 0 gives 0 (all above), 1 (all
    /// below) or ½ (all 0).
    pub fn p_above_zero(&self) -> Option<f64> {
        let std = self.std?;
        let t = if std > 0.0 {
            self.mean / (std / (self.n as f64).sqrt())
        } else if self.mean == 0.0 {
            0.0
        } else {
            self.mean.signum() * f64::INFINITY
        };
        Some(super::student_t::upper_tail(t, self.n - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_std_by_hand() {
        // mean 0.5; squared deviations .01, 0, .01 → sum .02 / (3 − 1) = .01 → std .1
        let s = MeanStd::of(&[0.4, 0.5, 0.6]).unwrap();
        assert!((s.mean - 0.5).abs() < 1e-15);
        assert!((s.std.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(s.n, 3);
    }

    #[test]
    fn one_value_has_no_std_and_none_has_no_mean() {
        let s = MeanStd::of(&[0.7]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (0.7, None, 1));
        assert!(MeanStd::of(&[]).is_none());
    }
}
