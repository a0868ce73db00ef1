//! Experiment outputs: SVG line plots, Markdown tables and run identifiers.

#[cfg(feature = "plots")]
use std::path::Path;

#[cfg(feature = "plots")]
use plotters::prelude::*;

#[cfg(feature = "plots")]
use crate::{Error, Result};

/// One named curve of a line plot.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(x, y)` points in drawing order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A named series.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

#[cfg(feature = "plots")]
fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let mut b: Option<((f64, f64), (f64, f64))> = None;
    for &(x, y) in pts {
        b = Some(match b {
            None => ((x, x), (y, y)),
            Some(((x0, x1), (y0, y1))) => ((x0.min(x), x1.max(x)), (y0.min(y), y1.max(y))),
        });
    }
    b.map(|((x0, x1), (y0, y1))| {
        let pad = |lo: f64, hi: f64| {
            let d = if hi > lo { (hi - lo) * 0.05 } else { 0.5 };
            (lo - d, hi + d)
        };
        (pad(x0, x1), pad(y0, y1))
    })
}

/// Renders a line plot as SVG text (feature `plots`).
#[cfg(feature = "plots")]
pub fn line_plot_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<String> {
    let ((x0, x1), (y0, y1)) =
        bounds(series).ok_or_else(|| Error::Plot(format!("plot '{title}' has no finite point")))?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 440)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| Error::Plot(e.to_string());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Renders and writes a line plot atomically (feature `plots`).
#[cfg(feature = "plots")]
pub fn write_line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let svg = line_plot_svg(title, x_label, y_label, series)?;
    crate::fs::write_atomic(path, svg.as_bytes())
}

/// A GitHub-flavoured Markdown table.
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out.push_str(&format!(
        "|{}\n",
        headers.iter().map(|_| "---|").collect::<String>()
    ));
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out
}

/// `YYYYMMDD-HHMMSS` in UTC for a Unix time (Hinnant's civil-from-days algorithm).
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A fresh run identifier: UTC time stamp plus seed, e.g. `20261126-173012-s42`.
pub fn run_id(seed: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{}-s{seed}", utc_stamp(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_matches_known_dates() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_798_295_025), "20261226-142345");
    }

    #[cfg(feature = "plots")]
    #[test]
    fn plot_is_valid_svg_with_every_series_in_the_legend() {
        let s = vec![
            Series::new("train", vec![(1.0, 3.0), (2.0, 2.0), (3.0, f64::NAN)]),
            Series::new("valid", vec![(1.0, 3.5), (3.0, 2.5)]),
        ];
        let svg = line_plot_svg("loss", "step", "nats", &s).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("train") && svg.contains("valid"));
    }

    #[cfg(feature = "plots")]
    #[test]
    fn plot_without_points_is_an_error() {
        assert!(line_plot_svg("x", "a", "b", &[Series::new("e", vec![])]).is_err());
    }

    #[test]
    fn markdown_table_has_a_separator_row() {
        let t = markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
