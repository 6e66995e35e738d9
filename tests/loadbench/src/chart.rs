//! A small SVG line chart of latency against concurrency: p50 solid, p99 dashed, one colour per
//! target, logarithmic latency axis. Written by hand to keep the harness free of a plotting
//! dependency.

use std::fmt::Write;

/// One target's line.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// (concurrency, p50 µs, p99 µs), in the order of the x axis.
    pub points: Vec<(usize, u32, u32)>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = ["#4c78a8", "#f58518", "#e45756", "#54a24b", "#b279a2", "#9d755d"];

/// Render `series` against the concurrency levels `xs` with `title` on top.
pub fn latency_chart(title: &str, xs: &[usize], series: &[Series]) -> String {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|&(_, p50, p99)| [p50, p99]))
        .filter(|&v| v > 0);
    let (min, max) = values.fold((u32::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (min, max) = if max == 0 { (10, 1000) } else { (min, max) };
    // Whole decades of microseconds around the data.
    let lo_exp = (min as f64).log10().floor() as i32;
    let hi_exp = ((max as f64).log10().ceil() as i32).max(lo_exp + 1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |micros: f64| {
        let t = (micros.max(1.0).log10() - lo_exp as f64) / (hi_exp - lo_exp) as f64;
        TOP + plot_h * (1.0 - t)
    };
    let x = |index: usize| {
        if xs.len() <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * index as f64 / (xs.len() - 1) as f64
        }
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Horizontal grid at 1, 2 and 5 of every decade, labelled in µs or ms.
    for exp in lo_exp..=hi_exp {
        for step in [1.0, 2.0, 5.0] {
            let micros = step * 10f64.powi(exp);
            if micros > 10f64.powi(hi_exp) {
                break;
            }
            let gy = y(micros);
            let stroke = if step == 1.0 { "#bbb" } else { "#e6e6e6" };
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="{stroke}"/>"#,
                LEFT + plot_w
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                gy + 4.0,
                duration_label(micros)
            );
        }
    }
    for (index, concurrency) in xs.iter().enumerate() {
        let gx = x(index);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#e6e6e6"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{concurrency}</text>"#,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrent connections (closed loop)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );

    for (number, s) in series.iter().enumerate() {
        let colour = COLOURS[number % COLOURS.len()];
        let positions: Vec<(f64, f64, f64)> = s
            .points
            .iter()
            .filter_map(|&(c, p50, p99)| {
                let index = xs.iter().position(|&x| x == c)?;
                Some((x(index), y(p50 as f64), y(p99 as f64)))
            })
            .collect();
        for (dash, pick) in [("", 1usize), (r#" stroke-dasharray="6 4""#, 2)] {
            let path: Vec<String> = positions
                .iter()
                .map(|p| {
                    let py = if pick == 1 { p.1 } else { p.2 };
                    format!("{:.1},{:.1}", p.0, py)
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
        }
        for p in &positions {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"/><circle cx="{:.1}" cy="{:.1}" r="3" fill="white" stroke="{colour}"/>"#,
                p.0, p.1, p.0, p.2
            );
        }
        let ly = TOP + 10.0 + 22.0 * number as f64;
        let lx = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    let note_y = TOP + 10.0 + 22.0 * series.len() as f64 + 10.0;
    let lx = WIDTH - RIGHT + 16.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{lx}" y1="{note_y}" x2="{}" y2="{note_y}" stroke="#444" stroke-width="2"/><text x="{}" y="{}">p50</text>"##,
        lx + 24.0,
        lx + 30.0,
        note_y + 4.0
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="#444" stroke-width="2" stroke-dasharray="6 4"/><text x="{}" y="{}">p99</text>"##,
        note_y + 20.0,
        lx + 24.0,
        note_y + 20.0,
        lx + 30.0,
        note_y + 24.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn duration_label(micros: f64) -> String {
    if micros >= 1000.0 {
        format!("{} ms", trim(micros / 1000.0))
    } else {
        format!("{} µs", trim(micros))
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, base: u32) -> Series {
        Series {
            name: name.into(),
            points: vec![
                (1, base, base * 3),
                (16, base * 10, base * 40),
                (64, base * 40, base * 90),
            ],
        }
    }

    /// The chart is one well-formed SVG element with a legend entry, a p50 and a p99 line per
    /// target, and escaped text.
    #[test]
    fn chart_has_a_line_pair_and_legend_per_series() {
        let svg = latency_chart(
            "D < P & W",
            &[1, 16, 64],
            &[series("D", 90), series("P", 200), series("W", 450)],
        );
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(svg.matches(r#"stroke-dasharray="6 4""#).count(), 3 + 1);
        for name in [">D<", ">P<", ">W<"] {
            assert!(svg.contains(name), "legend {name}");
        }
        assert!(svg.contains("D &lt; P &amp; W"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    /// Higher latency is drawn higher up (smaller y), on a log scale.
    #[test]
    fn larger_latency_is_higher() {
        let svg = latency_chart(
            "t",
            &[1],
            &[Series {
                name: "a".into(),
                points: vec![(1, 100, 10_000)],
            }],
        );
        let circles: Vec<f64> = svg
            .match_indices("cy=\"")
            .map(|(i, _)| {
                let rest = &svg[i + 4..];
                rest[..rest.find('"').unwrap_or(0)].parse().unwrap_or(f64::NAN)
            })
            .collect();
        assert_eq!(circles.len(), 2);
        assert!(circles[1] < circles[0], "p99 above p50: {circles:?}");
        assert_eq!(duration_label(2000.0), "2 ms");
        assert_eq!(duration_label(50.0), "50 µs");
    }
}
