//! Runs → medians per cell, paired ratios, and the markdown tables.
//!
//! A ratio is computed *within* a repetition (the runs of one repetition follow each other
//! within seconds, so slow drifts of machine load hit both sides), then the median over
//! repetitions is taken.

use crate::stats::{Summary, median};
use crate::upstream::BodySize;
use serde::Serialize;
use std::fmt::Write;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Upstream body size.
    pub size: BodySize,
    /// Connections.
    pub concurrency: usize,
    /// `closed` or `rate N/s`.
    pub mode: String,
    /// Repetition number, from 0.
    pub rep: usize,
    /// D, P, W, …
    pub target: String,
    /// What it measured.
    pub summary: Summary,
    /// Requests the fake upstream answered during the run (warm-up included).
    pub upstream_hits: u64,
    /// The gateway's RSS right after the run, KiB (W and its variants only).
    pub gateway_rss_kib: Option<u64>,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// Medians over the repetitions of one target in one cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Upstream body size.
    pub size: BodySize,
    /// Connections.
    pub concurrency: usize,
    /// `closed` or `rate N/s`.
    pub mode: String,
    /// D, P, W, …
    pub target: String,
    /// Median requests per second.
    pub rps: f64,
    /// Median p50, µs.
    pub p50_us: f64,
    /// Median p90, µs.
    pub p90_us: f64,
    /// Median p99, µs.
    pub p99_us: f64,
    /// Largest maximum over the repetitions, µs.
    pub max_us: u32,
    /// Errors summed over the repetitions.
    pub errors: u64,
    /// Repetitions.
    pub reps: usize,
}

/// `a` compared with `b` in one cell, paired within repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Upstream body size.
    pub size: BodySize,
    /// Connections.
    pub concurrency: usize,
    /// `closed` or `rate N/s`.
    pub mode: String,
    /// The numerator / minuend (e.g. W).
    pub a: String,
    /// The baseline (e.g. P).
    pub b: String,
    /// Median of a.rps / b.rps.
    pub throughput_ratio: f64,
    /// Median of a.p50 − b.p50, µs.
    pub p50_delta_us: f64,
    /// Median of a.p99 − b.p99, µs.
    pub p99_delta_us: f64,
    /// Repetitions that had both.
    pub pairs: usize,
}

type Key = (BodySize, usize, String);

fn keys(runs: &[RunRecord]) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::new();
    for run in runs {
        let key = (run.size, run.concurrency, run.mode.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

fn in_cell<'a>(runs: &'a [RunRecord], key: &'a Key) -> impl Iterator<Item = &'a RunRecord> + 'a {
    runs.iter()
        .filter(move |r| r.size == key.0 && r.concurrency == key.1 && r.mode == key.2)
}

/// Medians per (cell, target), in the order the runs were made.
pub fn aggregate(runs: &[RunRecord]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for key in keys(runs) {
        let mut targets: Vec<&str> = Vec::new();
        for run in in_cell(runs, &key) {
            if !targets.contains(&run.target.as_str()) {
                targets.push(&run.target);
            }
        }
        for target in targets {
            let of: Vec<&Summary> = in_cell(runs, &key)
                .filter(|r| r.target == target)
                .map(|r| &r.summary)
                .collect();
            let pick = |f: fn(&Summary) -> f64| median(&of.iter().map(|s| f(s)).collect::<Vec<_>>());
            cells.push(Cell {
                size: key.0,
                concurrency: key.1,
                mode: key.2.clone(),
                target: target.to_owned(),
                rps: pick(|s| s.rps),
                p50_us: pick(|s| s.p50_us as f64),
                p90_us: pick(|s| s.p90_us as f64),
                p99_us: pick(|s| s.p99_us as f64),
                max_us: of.iter().map(|s| s.max_us).max().unwrap_or(0),
                errors: of.iter().map(|s| s.errors).sum(),
                reps: of.len(),
            });
        }
    }
    cells
}

/// Paired comparisons `a` vs `b` in every cell that has both.
pub fn ratios(runs: &[RunRecord], pairs: &[(&str, &str)]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for key in keys(runs) {
        for &(a, b) in pairs {
            let mut throughput = Vec::new();
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            for run_a in in_cell(runs, &key).filter(|r| r.target == a) {
                let Some(run_b) = in_cell(runs, &key).find(|r| r.target == b && r.rep == run_a.rep) else {
                    continue;
                };
                let (sa, sb) = (&run_a.summary, &run_b.summary);
                if sb.rps > 0.0 {
                    throughput.push(sa.rps / sb.rps);
                }
                p50.push(sa.p50_us as f64 - sb.p50_us as f64);
                p99.push(sa.p99_us as f64 - sb.p99_us as f64);
            }
            if p50.is_empty() {
                continue;
            }
            out.push(Ratio {
                size: key.0,
                concurrency: key.1,
                mode: key.2.clone(),
                a: a.to_owned(),
                b: b.to_owned(),
                throughput_ratio: median(&throughput),
                p50_delta_us: median(&p50),
                p99_delta_us: median(&p99),
                pairs: p50.len(),
            });
        }
    }
    out
}

/// `1234 µs` → `1.23 ms`; below a millisecond in µs.
pub fn micros(value: f64) -> String {
    if value.abs() >= 1000.0 {
        format!("{:.2} ms", value / 1000.0)
    } else {
        format!("{value:.0} µs")
    }
}

/// The two markdown tables.
pub fn markdown(cells: &[Cell], ratios: &[Ratio]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| body | conns | mode | target | req/s | p50 | p90 | p99 | max | errors |"
    );
    let _ = writeln!(md, "|---|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for c in cells {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            c.size,
            c.concurrency,
            c.mode,
            c.target,
            c.rps,
            micros(c.p50_us),
            micros(c.p90_us),
            micros(c.p99_us),
            micros(c.max_us as f64),
            c.errors
        );
    }
    if !ratios.is_empty() {
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "| body | conns | mode | pair | throughput ratio | Δ p50 | Δ p99 | pairs |"
        );
        let _ = writeln!(md, "|---|---:|---|---|---:|---:|---:|---:|");
        for r in ratios {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} vs {} | {:.2} | {} | {} | {} |",
                r.size,
                r.concurrency,
                r.mode,
                r.a,
                r.b,
                r.throughput_ratio,
                micros(r.p50_delta_us),
                micros(r.p99_delta_us),
                r.pairs
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, rep: usize, rps: f64, p50: u32) -> RunRecord {
        RunRecord {
            size: BodySize::K1,
            concurrency: 16,
            mode: "closed".into(),
            rep,
            target: target.into(),
            summary: Summary {
                requests: 1,
                errors: 0,
                rps,
                p50_us: p50,
                p90_us: p50,
                p99_us: p50 * 2,
                max_us: p50 * 3,
            },
            upstream_hits: 0,
            gateway_rss_kib: None,
            first_error: None,
        }
    }

    /// Ratios pair runs of the same repetition before taking the median, so a noisy repetition
    /// that slows both sides does not skew the result.
    #[test]
    fn ratios_pair_within_repetitions() {
        let runs = vec![
            run("P", 0, 1000.0, 100),
            run("W", 0, 900.0, 150),
            // A noisy repetition: both halved.
            run("P", 1, 500.0, 200),
            run("W", 1, 450.0, 300),
            run("P", 2, 1000.0, 100),
            run("W", 2, 800.0, 160),
        ];
        let ratios = ratios(&runs, &[("W", "P"), ("P", "D")]);
        assert_eq!(ratios.len(), 1, "no D runs, so no P vs D row");
        let r = &ratios[0];
        assert_eq!(r.pairs, 3);
        assert!((r.throughput_ratio - 0.9).abs() < 1e-9, "{}", r.throughput_ratio);
        assert_eq!(r.p50_delta_us, 60.0);

        let cells = aggregate(&runs);
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].target, "P");
        assert_eq!(cells[0].rps, 1000.0);
        assert_eq!(cells[1].max_us, 900);
        let md = markdown(&cells, &ratios);
        assert!(
            md.contains("| 1k | 16 | closed | W vs P | 0.90 | 60 µs |"),
            "{md}"
        );
    }
}
