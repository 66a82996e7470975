//! Sentence-similarity scores (BIOSSES, as BLUE and Peng et al. report them): Pearson's r
//! (the headline), Spearman's ρ (Pearson's r of the ranks, tied values given the average
//! of the ranks they span) and the mean squared error.

use super::MetricsError;

/// `r = Σ (x_i − x̄)(y_i − ȳ) / √(Σ (x_i − x̄)² · Σ (y_i − ȳ)²)`; an error for fewer than two
/// values, different lengths, or a constant side (r undefined).
pub fn pearson(x: &[f64], y: &[f64]) -> Result<f64, MetricsError> {
    check(x, y)?;
    let n = x.len() as f64;
    let x_bar = x.iter().sum::<f64>() / n;
    let y_bar = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - x_bar, b - y_bar);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return Err(MetricsError::Empty(
            "correlation undefined: one side is constant".into(),
        ));
    }
    Ok(sxy / (sxx * syy).sqrt())
}

/// Spearman's ρ: Pearson's r of [`average_ranks`] of `x` and of `y`.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<f64, MetricsError> {
    check(x, y)?;
    pearson(&average_ranks(x), &average_ranks(y))
}

/// `(1/n) Σ (ŷ_i − y_i)²`.
pub fn mse(pred: &[f64], gold: &[f64]) -> Result<f64, MetricsError> {
    check(pred, gold)?;
    Ok(pred
        .iter()
        .zip(gold)
        .map(|(p, g)| (p - g).powi(2))
        .sum::<f64>()
        / pred.len() as f64)
}

/// 1-based ranks of `values`; tied values share the mean of the ranks they occupy
/// (`[10, 20, 20, 30]` → `[1, 2.5, 2.5, 4]`).
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // positions start..end hold ranks start+1..=end; their mean
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

fn check(x: &[f64], y: &[f64]) -> Result<(), MetricsError> {
    if x.len() != y.len() {
        return Err(MetricsError::LengthMismatch {
            gold: y.len(),
            pred: x.len(),
        });
    }
    if x.len() < 2 {
        return Err(MetricsError::Empty(format!(
            "a correlation needs at least 2 pairs, got {}",
            x.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_by_hand() {
        // x̄ = 2.5, ȳ = 3; dx = (−1.5, −0.5, 0.5, 1.5), dy = (−2, 0, −1, 3)
        // Σdxdy = 3 + 0 − 0.5 + 4.5 = 7; Σdx² = 5; Σdy² = 14 → r = 7/√70
        let r = pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 6.0]).unwrap();
        assert!((r - 7.0 / 70f64.sqrt()).abs() < 1e-12, "{r}");
        // perfectly anti-correlated
        let r = pearson(&[0.0, 1.0, 2.0], &[4.0, 2.0, 0.0]).unwrap();
        assert!((r + 1.0).abs() < 1e-12);
        assert!(pearson(&[1.0, 1.0], &[0.0, 2.0]).is_err(), "constant side");
        assert!(pearson(&[1.0], &[1.0]).is_err());
        assert!(pearson(&[1.0, 2.0], &[1.0]).is_err());
    }

    #[test]
    fn ties_get_the_average_rank() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 30.0]),
            [1.0, 2.5, 2.5, 4.0]
        );
        assert_eq!(average_ranks(&[3.0, 1.0, 3.0, 3.0]), [3.0, 1.0, 3.0, 3.0]);
    }

    #[test]
    fn spearman_by_hand_with_ties() {
        // x = [1, 2, 2, 3] → ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 4] → ranks [1, 3, 2, 4]
        // mean 2.5 both; dx = (−1.5, 0, 0, 1.5), dy = (−1.5, 0.5, −0.5, 1.5)
        // Σdxdy = 2.25 + 0 + 0 + 2.25 = 4.5; Σdx² = 4.5; Σdy² = 5 → ρ = 4.5/√22.5
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((rho - 4.5 / 22.5f64.sqrt()).abs() < 1e-12, "{rho}");
        // a monotone but non-linear relation: ρ = 1, r < 1
        let (x, y) = ([1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 100.0]);
        assert!((spearman(&x, &y).unwrap() - 1.0).abs() < 1e-12);
        assert!(pearson(&x, &y).unwrap() < 0.95);
    }

    #[test]
    fn mse_by_hand() {
        // errors 0.5, −1, 0 → (0.25 + 1 + 0) / 3
        let m = mse(&[2.5, 1.0, 3.0], &[2.0, 2.0, 3.0]).unwrap();
        assert!((m - 1.25 / 3.0).abs() < 1e-12);
    }
}
