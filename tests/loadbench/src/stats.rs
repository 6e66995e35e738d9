//! Percentiles and medians. Latencies are kept whole (one `u32` of microseconds per request)
//! rather than in a histogram: a few minutes of loopback load is a few million numbers at most,
//! and exact percentiles need no error bound in the report.

use serde::Serialize;

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Successful requests counted in the measured window.
    pub requests: u64,
    /// Failed requests (transport errors, timeouts, non-2xx, unexpected bodies).
    pub errors: u64,
    /// Successful requests per second over the measured window.
    pub rps: f64,
    /// Latency percentiles and maximum, in microseconds.
    pub p50_us: u32,
    /// 90th percentile.
    pub p90_us: u32,
    /// 99th percentile.
    pub p99_us: u32,
    /// Slowest request.
    pub max_us: u32,
}

impl Summary {
    /// Summarise `latencies_us` (any order) of `requests` successes over `seconds`.
    pub fn from_latencies(mut latencies_us: Vec<u32>, errors: u64, seconds: f64) -> Self {
        latencies_us.sort_unstable();
        let requests = latencies_us.len() as u64;
        Self {
            requests,
            errors,
            rps: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            p50_us: percentile(&latencies_us, 0.50),
            p90_us: percentile(&latencies_us, 0.90),
            p99_us: percentile(&latencies_us, 0.99),
            max_us: latencies_us.last().copied().unwrap_or(0),
        }
    }
}

/// Nearest-rank percentile of an ascending slice: the smallest value with at least `q` of the
/// samples at or below it. `0` for an empty slice.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of `values` (mean of the middle two for an even count); `0` when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest rank: p50 of 1..=100 is 50, p99 is 99, p100 is the maximum; one sample is every
    /// percentile.
    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), 50);
        assert_eq!(percentile(&values, 0.90), 90);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 1.0), 100);
        assert_eq!(percentile(&values, 0.0), 1);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
        // 10 samples: p99 is the 10th, p90 the 9th.
        let ten: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&ten, 0.99), 10);
        assert_eq!(percentile(&ten, 0.90), 9);
    }

    /// A summary sorts its input and computes the rate over the window.
    #[test]
    fn summary_sorts_and_rates() {
        let summary = Summary::from_latencies(vec![300, 100, 200, 400], 2, 2.0);
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.rps, 2.0);
        assert_eq!(summary.p50_us, 200);
        assert_eq!(summary.max_us, 400);
    }

    /// Medians of odd and even counts; non-finite values are ignored.
    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert_eq!(median(&[]), 0.0);
    }
}
