//! SVG plots for reports (pure Rust, `plotters`): line plots (training curves, per-layer Δ,
//! slicing-rate curves), bar charts with error bars, and heat maps (attention weights).

use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::ReportError;

const SIZE: (u32, u32) = (720, 420);
const FONT: &str = "sans-serif";

/// One named line: `(x, y)` points in drawing order. Non-finite points are skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line plot of one or more series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// One bar, with an optional symmetric error (e.g. the std over seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    #[serde(default)]
    pub err: Option<f64>,
}

/// A bar chart (bars in the given order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub bars: Vec<Bar>,
}

/// A heat map: `values[row][col]`, rows labelled top to bottom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatMap {
    pub title: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

fn fail(path: &Path, message: impl std::fmt::Display) -> ReportError {
    ReportError::Plot {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// `lo..hi` widened by 5 % (and to a unit interval around a single value).
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5)..(hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad)..(hi + pad)
}

/// Draws `plot` to an SVG file at `path`.
pub fn line_plot(path: &Path, plot: &LinePlot) -> Result<(), ReportError> {
    let points: Vec<(f64, f64)> = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if points.is_empty() {
        return Err(fail(path, "no finite points to plot"));
    }
    let (x_lo, x_hi) = min_max(points.iter().map(|p| p.0));
    let (y_lo, y_hi) = min_max(points.iter().map(|p| p.1));
    // Integer x (epochs, layers): integer ticks only.
    let integer_x = points.iter().all(|p| p.0.fract() == 0.0) && x_hi - x_lo <= 40.0;
    let x_ticks = if integer_x {
        (x_hi - x_lo) as usize + 1
    } else {
        10
    };
    // The legend goes to whichever right-hand corner has fewer points.
    let (x_mid, y_mid) = ((x_lo + x_hi) / 2.0, (y_lo + y_hi) / 2.0);
    let upper_right = points
        .iter()
        .filter(|p| p.0 >= x_mid && p.1 >= y_mid)
        .count();
    let lower_right = points
        .iter()
        .filter(|p| p.0 >= x_mid && p.1 < y_mid)
        .count();
    let legend_at = if upper_right <= lower_right {
        SeriesLabelPosition::UpperRight
    } else {
        SeriesLabelPosition::LowerRight
    };

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(padded(x_lo, x_hi), padded(y_lo, y_hi))
        .map_err(|e| fail(path, e))?;
    let x_format = |x: &f64| {
        if integer_x {
            format!("{x:.0}")
        } else {
            format!("{x}")
        }
    };
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_labels(x_ticks)
        .x_label_formatter(&x_format)
        .x_desc(plot.x_label.as_str())
        .y_desc(plot.y_label.as_str())
        .draw()
        .map_err(|e| fail(path, e))?;
    for (i, s) in plot.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| fail(path, e))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| fail(path, e))?;
    }
    if plot.series.len() > 1 || plot.series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .position(legend_at)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()
            .map_err(|e| fail(path, e))?;
    }
    root.present().map_err(|e| fail(path, e))
}

/// Draws `chart` to an SVG file at `path`; error bars where a bar has `err`.
pub fn bar_chart(path: &Path, chart: &BarChart) -> Result<(), ReportError> {
    if chart.bars.is_empty() || chart.bars.iter().any(|b| !b.value.is_finite()) {
        return Err(fail(
            path,
            "a bar chart needs at least one bar and finite values",
        ));
    }
    let lows = chart.bars.iter().map(|b| b.value - b.err.unwrap_or(0.0));
    let highs = chart.bars.iter().map(|b| b.value + b.err.unwrap_or(0.0));
    let y_lo = min_max(lows).0.min(0.0);
    let y_hi = min_max(highs).1.max(0.0);
    let n = chart.bars.len();
    let labels: Vec<String> = chart.bars.iter().map(|b| b.label.clone()).collect();

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    // Bar i is centred on x = i; the axis spans -0.5..n-0.5.
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), padded(y_lo, y_hi))
        .map_err(|e| fail(path, e))?;
    let label_of = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    ctx.configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n + 1)
        .x_label_formatter(&label_of)
        .y_desc(chart.y_label.as_str())
        .draw()
        .map_err(|e| fail(path, e))?;
    let color = Palette99::pick(0).to_rgba();
    let half = 0.35;
    ctx.draw_series(chart.bars.iter().enumerate().map(|(i, b)| {
        let x = i as f64;
        Rectangle::new([(x - half, 0.0), (x + half, b.value)], color.filled())
    }))
    .map_err(|e| fail(path, e))?;
    ctx.draw_series(chart.bars.iter().enumerate().filter_map(|(i, b)| {
        let e = b.err.filter(|e| e.is_finite())?;
        let x = i as f64;
        Some(PathElement::new(
            vec![(x, b.value - e), (x, b.value + e)],
            BLACK.stroke_width(2),
        ))
    }))
    .map_err(|e| fail(path, e))?;
    root.present().map_err(|e| fail(path, e))
}

/// Draws `map` to an SVG file at `path`: white (minimum) to dark blue (maximum).
pub fn heat_map(path: &Path, map: &HeatMap) -> Result<(), ReportError> {
    let rows = map.values.len();
    let cols = map.values.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 || map.values.iter().any(|r| r.len() != cols) {
        return Err(fail(
            path,
            "a heat map needs a non-empty rectangular matrix",
        ));
    }
    if map.row_labels.len() != rows || map.col_labels.len() != cols {
        return Err(fail(
            path,
            "a heat map needs one label per row and per column",
        ));
    }
    let (lo, hi) = min_max(map.values.iter().flatten().copied());
    let span = if hi - lo > 1e-12 { hi - lo } else { 1.0 };

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    // Cell (r, c) is centred on x = c, y = rows − 1 − r (row 0 at the top).
    let mut ctx = ChartBuilder::on(&root)
        .caption(&map.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(-0.5..(cols as f64 - 0.5), -0.5..(rows as f64 - 0.5))
        .map_err(|e| fail(path, e))?;
    let at_integer = |v: f64| {
        let i = v.round();
        ((v - i).abs() < 1e-6 && i >= 0.0).then_some(i as usize)
    };
    let col_label = |x: &f64| {
        at_integer(*x)
            .and_then(|c| map.col_labels.get(c))
            .cloned()
            .unwrap_or_default()
    };
    let row_label = |y: &f64| {
        at_integer(*y)
            .and_then(|i| rows.checked_sub(i + 1))
            .and_then(|r| map.row_labels.get(r))
            .cloned()
            .unwrap_or_default()
    };
    ctx.configure_mesh()
        .disable_mesh()
        .x_labels(cols + 1)
        .y_labels(rows + 1)
        .x_label_formatter(&col_label)
        .y_label_formatter(&row_label)
        .draw()
        .map_err(|e| fail(path, e))?;
    let cells = map.values.iter().enumerate().flat_map(|(r, row)| {
        row.iter().enumerate().map(move |(c, &v)| {
            let t = if v.is_finite() { (v - lo) / span } else { 0.0 };
            let shade = |full: f64| (255.0 - t * (255.0 - full)).round() as u8;
            let (x, y) = (c as f64, (rows - 1 - r) as f64);
            Rectangle::new(
                [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                RGBColor(shade(8.0), shade(48.0), shade(107.0)).filled(),
            )
        })
    });
    ctx.draw_series(cells).map_err(|e| fail(path, e))?;
    root.present().map_err(|e| fail(path, e))
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_plot_writes_an_svg_with_the_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.svg");
        let plot = LinePlot {
            title: "train loss".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: vec![
                Series {
                    name: "seed=1".into(),
                    points: vec![(1.0, 0.9), (2.0, 0.5), (3.0, 0.3)],
                },
                Series {
                    name: "seed=2".into(),
                    points: vec![(1.0, 1.0), (2.0, f64::NAN), (3.0, 0.4)],
                },
            ],
        };
        line_plot(&path, &plot).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("seed=1") && svg.contains("seed=2"));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn bar_chart_and_heat_map_write_svgs() {
        let dir = tempfile::tempdir().unwrap();
        let bars = BarChart {
            title: "F1".into(),
            y_label: "F1 (%)".into(),
            bars: vec![
                Bar {
                    label: "cls".into(),
                    value: 80.0,
                    err: Some(1.0),
                },
                Bar {
                    label: "sll_att".into(),
                    value: -2.0,
                    err: None,
                },
            ],
        };
        bar_chart(&dir.path().join("bars.svg"), &bars).unwrap();
        let one = BarChart {
            bars: bars.bars[..1].to_vec(),
            ..bars.clone()
        };
        bar_chart(&dir.path().join("one.svg"), &one).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("bars.svg")).unwrap();
        assert!(svg.contains("sll_att") && svg.contains("<rect"));

        let map = HeatMap {
            title: "attention".into(),
            row_labels: vec!["a".into(), "b".into()],
            col_labels: vec!["x".into(), "y".into(), "z".into()],
            values: vec![vec![0.1, 0.2, 0.7], vec![0.3, 0.3, 0.4]],
        };
        // PLOT_OUT=DIR keeps the heat map there, to look at it.
        let out = std::env::var_os("PLOT_OUT").map_or(dir.path().to_path_buf(), Into::into);
        heat_map(&out.join("att.svg"), &map).unwrap();
        let bad = HeatMap {
            values: vec![vec![0.1], vec![0.3, 0.3]],
            ..map
        };
        assert!(heat_map(&dir.path().join("bad.svg"), &bad).is_err());
    }

    #[test]
    fn empty_plots_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let plot = LinePlot {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![],
        };
        assert!(line_plot(&dir.path().join("e.svg"), &plot).is_err());
    }
}
