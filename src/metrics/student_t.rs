//! Student's t distribution with an integer number of degrees of freedom: the tail
//! probability a paired t-test over seeds needs (`report::paired`).
//!
//! Exact finite sums (Abramowitz & Stegun 26.7.3 and 26.7.4), no gamma function: with
//! θ = atan(t / √ν), A(t | ν) = P(|T| < t) is
//! - ν odd: (2/π)·(θ + sin θ·(cos θ + (2/3)·cos³ θ + … + (2·4···(ν−3))/(1·3···(ν−2))·cos^(ν−2) θ)),
//!   the bracket empty for ν = 1;
//! - ν even: sin θ·(1 + (1/2)·cos² θ + … + (1·3···(ν−3))/(2·4···(ν−2))·cos^(ν−2) θ).

use std::f64::consts::PI;

/// P(T > t) for T with `nu` ≥ 1 degrees of freedom (the one-sided p-value of a t
/// statistic `t`). `t` may be ±∞ (a spread of exactly 0).
pub fn upper_tail(t: f64, nu: usize) -> f64 {
    assert!(nu >= 1, "Student's t needs at least one degree of freedom");
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    let a = central_mass(t.abs(), nu);
    let tail = (1.0 - a) / 2.0;
    if t >= 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// A(t | ν) = P(|T| < t) for t ≥ 0 (A & S 26.7.3/4).
fn central_mass(t: f64, nu: usize) -> f64 {
    let theta = (t / (nu as f64).sqrt()).atan();
    let (sin, cos) = theta.sin_cos();
    let cos2 = cos * cos;
    if nu % 2 == 1 {
        // θ + sin θ·Σ_{k=0}^{(ν−3)/2} c_k·cos^(2k+1) θ with c_0 = 1, c_k = c_{k−1}·2k/(2k+1)
        let mut term = cos;
        let mut sum = 0.0;
        for k in 0..(nu - 1) / 2 {
            if k > 0 {
                term *= cos2 * (2 * k) as f64 / (2 * k + 1) as f64;
            }
            sum += term;
        }
        (2.0 / PI) * (theta + sin * sum)
    } else {
        // sin θ·Σ_{k=0}^{(ν−2)/2} c_k·cos^(2k) θ with c_0 = 1, c_k = c_{k−1}·(2k−1)/(2k)
        let mut term = 1.0;
        let mut sum = 0.0;
        for k in 0..nu / 2 {
            if k > 0 {
                term *= cos2 * (2 * k - 1) as f64 / (2 * k) as f64;
            }
            sum += term;
        }
        sin * sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn one_and_two_degrees_in_closed_form() {
        for t in [-3.0, -0.5, 0.0, 0.7, 2.0, 6.314, 40.0] {
            // ν = 1 is the Cauchy distribution: P(T > t) = 1/2 − atan(t)/π
            assert!(close(upper_tail(t, 1), 0.5 - f64::atan(t) / PI, 1e-12));
            // ν = 2: P(T > t) = 1/2 − t / (2·√(t² + 2))
            let two = 0.5 - t / (2.0 * (t * t + 2.0f64).sqrt());
            assert!(close(upper_tail(t, 2), two, 1e-12), "t={t}");
        }
    }

    #[test]
    fn printed_critical_values() {
        // one-sided 5 % points of a t table: ν = 1, 2, 3, 4, 9, 29
        for (nu, t) in [
            (1, 6.314),
            (2, 2.920),
            (3, 2.353),
            (4, 2.132),
            (9, 1.833),
            (29, 1.699),
        ] {
            assert!(close(upper_tail(t, nu), 0.05, 5e-4), "ν={nu}");
        }
        // two-sided 5 % (one-sided 2.5 %): ν = 2, 10
        assert!(close(upper_tail(4.303, 2), 0.025, 2e-4));
        assert!(close(upper_tail(2.228, 10), 0.025, 2e-4));
    }

    #[test]
    fn symmetric_and_infinite() {
        for nu in 1..8 {
            assert!(close(upper_tail(0.0, nu), 0.5, 1e-12));
            assert!(close(
                upper_tail(1.3, nu) + upper_tail(-1.3, nu),
                1.0,
                1e-12
            ));
        }
        assert_eq!(upper_tail(f64::INFINITY, 2), 0.0);
        assert_eq!(upper_tail(f64::NEG_INFINITY, 2), 1.0);
    }
}
