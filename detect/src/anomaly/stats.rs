//! Tail probabilities for hourly counts.
//!
//! Counts of one series (principal × vault × operation family per hour) are over-dispersed:
//! people work in sessions, so an hour is either empty or busy. A Poisson model would call
//! every session an outlier; a negative binomial with the series' own dispersion (method of
//! moments: `r = mean² / (var − mean)`) does not. When the series is not over-dispersed the
//! Poisson is used.

use statrs::distribution::{DiscreteCDF, NegativeBinomial, Poisson};

/// Mean and variance of a series, with its hours of history (empty hours included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub mean: f64,
    pub var: f64,
}

impl Moments {
    /// From running sums over `n` hours.
    pub fn from_sums(sum: f64, sumsq: f64, n: f64) -> Option<Moments> {
        if n < 1.0 {
            return None;
        }
        let mean = sum / n;
        let var = (sumsq / n - mean * mean).max(0.0);
        Some(Moments { mean, var })
    }
}

/// P(X ≥ k) for a count with expected value `lambda` and the dispersion of `m`.
pub fn upper_tail(k: u64, lambda: f64, m: Moments) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let lambda = lambda.max(1e-3);
    let p = if m.var > m.mean * 1.05 && m.mean > 0.0 {
        // Keep the series' shape (r), centre it on this hour's expectation.
        let r = (m.mean * m.mean / (m.var - m.mean)).max(1e-3);
        let prob = r / (r + lambda);
        match NegativeBinomial::new(r, prob) {
            Ok(nb) => nb.sf(k - 1),
            Err(_) => f64::NAN,
        }
    } else {
        match Poisson::new(lambda) {
            Ok(po) => po.sf(k - 1),
            Err(_) => f64::NAN,
        }
    };
    if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) }
}

/// `-log10(p)`, capped so that p = 0 (underflow) stays finite.
pub fn surprise(p: f64) -> f64 {
    if p <= 1e-300 { 300.0 } else { -p.log10() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_tail_matches_the_closed_form() {
        // P(X >= 1 | λ = 2) = 1 - e^-2.
        let m = Moments {
            mean: 2.0,
            var: 2.0,
        };
        assert!((upper_tail(1, 2.0, m) - (1.0 - (-2.0f64).exp())).abs() < 1e-12);
        // P(X >= 3 | λ = 1) = 1 - e^-1 (1 + 1 + 1/2).
        let m = Moments {
            mean: 1.0,
            var: 1.0,
        };
        let want = 1.0 - (-1.0f64).exp() * 2.5;
        assert!((upper_tail(3, 1.0, m) - want).abs() < 1e-12);
        assert_eq!(upper_tail(0, 1.0, m), 1.0);
    }

    #[test]
    fn negative_binomial_tail_matches_the_closed_form() {
        // r = 1 is geometric: P(X >= k) = (1-p)^k with p = r / (r + λ).
        // mean 1, var 2 → r = 1.
        let m = Moments {
            mean: 1.0,
            var: 2.0,
        };
        let lambda = 3.0;
        let p: f64 = 1.0 / (1.0 + lambda);
        for k in [1u64, 2, 5, 10] {
            let want = (1.0 - p).powi(k as i32);
            assert!((upper_tail(k, lambda, m) - want).abs() < 1e-9, "k={k}");
        }
    }

    #[test]
    fn over_dispersion_makes_sessions_unsurprising() {
        // A user: mostly empty hours, sometimes ten events. Ten is rare for a Poisson with the
        // same mean, ordinary for the fitted negative binomial.
        let m = Moments::from_sums(200.0, 2000.0, 400.0).unwrap(); // mean 0.5, var 4.75
        let nb = upper_tail(10, 0.5, m);
        let po = upper_tail(
            10,
            0.5,
            Moments {
                mean: 0.5,
                var: 0.5,
            },
        );
        assert!(nb > 1e-3, "{nb}");
        assert!(po < 1e-9, "{po}");
        // A steady machine at ~90/h: 2000 in an hour is essentially impossible.
        let steady = Moments {
            mean: 90.0,
            var: 220.0,
        };
        assert!(surprise(upper_tail(2000, 90.0, steady)) > 50.0);
        assert!(upper_tail(100, 90.0, steady) > 0.1);
    }
}
