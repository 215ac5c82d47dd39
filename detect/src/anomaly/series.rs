//! Sentinel-style daily read-volume series per caller IP ("Azure Key Vault access TimeSeries
//! anomaly"): each completed day's count of successful SecretGet/KeyGet/VaultGet from an IP is
//! compared with a linear trend fitted to the previous days (up to 14, missing days = 0); the
//! residual is judged against the 10th–90th percentile range of the history's residuals
//! (a Tukey-style fence), and only positive anomalies over a baseline above `min_baseline` count.
//! With fewer than 14 days no weekly seasonality can be estimated, so none is removed.

use serde::{Deserialize, Serialize};

/// Parameters (`[models.ip_series]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeriesConfig {
    pub enabled: bool,
    /// Days of history used (Sentinel: 14).
    pub days: usize,
    /// Fewer complete days of history than this: no verdict.
    pub min_days: usize,
    /// Anomaly when (residual − p90) / (p90 − p10) exceeds this (Sentinel: 3).
    pub threshold: f64,
    /// Ignore IPs whose expected count is at or below this (Sentinel: 25).
    pub min_baseline: f64,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig {
            enabled: true,
            days: 14,
            min_days: 5,
            threshold: 3.0,
            min_baseline: 25.0,
        }
    }
}

/// The verdict on one day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub expected: f64,
    pub actual: f64,
    pub score: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Judges `actual` against `history` (oldest first, one value per day, missing days as 0).
/// Returns the verdict when it is a positive anomaly over a large enough baseline.
pub fn judge(history: &[f64], actual: f64, cfg: &SeriesConfig) -> Option<Verdict> {
    let n = history.len();
    if n < cfg.min_days.max(3) {
        return None;
    }
    let nf = n as f64;
    let mean_t = (nf - 1.0) / 2.0;
    let mean_x = history.iter().sum::<f64>() / nf;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, x) in history.iter().enumerate() {
        let dt = t as f64 - mean_t;
        sxy += dt * (x - mean_x);
        sxx += dt * dt;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let intercept = mean_x - slope * mean_t;
    let mut resid: Vec<f64> = history
        .iter()
        .enumerate()
        .map(|(t, x)| x - (intercept + slope * t as f64))
        .collect();
    resid.sort_by(|a, b| a.total_cmp(b));
    let (p10, p90) = (percentile(&resid, 0.1), percentile(&resid, 0.9));
    let expected = (intercept + slope * nf).max(0.0);
    let spread = (p90 - p10).max(1.0);
    let score = (actual - expected - p90) / spread;
    (expected > cfg.min_baseline && score > cfg.threshold).then_some(Verdict {
        expected,
        actual,
        score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [
            0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
        ];
        assert!((percentile(&v, 0.1) - 10.0).abs() < 1e-12);
        assert!((percentile(&v, 0.9) - 90.0).abs() < 1e-12);
    }

    #[test]
    fn a_steady_series_flags_a_spike_not_its_noise() {
        let cfg = SeriesConfig::default();
        let hist = [290.0, 286.0, 288.0, 291.0, 287.0, 289.0, 290.0];
        assert_eq!(judge(&hist, 292.0, &cfg), None);
        let v = judge(&hist, 600.0, &cfg).expect("spike");
        assert!((v.expected - 289.6).abs() < 1.0, "{v:?}");
        assert!(v.score > 3.0);
        // Negative anomalies are not reported.
        assert_eq!(judge(&hist, 0.0, &cfg), None);
    }

    #[test]
    fn a_trend_is_expected_and_small_baselines_are_ignored() {
        let cfg = SeriesConfig::default();
        // Growing by 10 a day: 170 tomorrow is on the line.
        let hist: Vec<f64> = (0..10).map(|d| 70.0 + 10.0 * d as f64).collect();
        assert_eq!(judge(&hist, 171.0, &cfg), None);
        assert!(judge(&hist, 400.0, &cfg).is_some());
        // A quiet IP (baseline 5) can triple without alerting.
        assert_eq!(judge(&[5.0, 4.0, 6.0, 5.0, 5.0, 4.0], 60.0, &cfg), None);
        // Too little history: no verdict.
        assert_eq!(judge(&[300.0, 300.0], 900.0, &cfg), None);
    }
}
