//! su2020 Fig. 4 as an SVG: for each trigger stem, a pair of bars (mean weight in positive
//! and in negative instances). `report::plot::bar_chart` draws one bar per label, whose
//! labels collide at two bars per stem, hence this grouped chart.

use std::fmt::Write as _;

use super::heatmap::escape_markup;
use super::triggers::TriggerWeight;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 44.0;
const POSITIVE: &str = "rgb(8,48,107)";
const NEGATIVE: &str = "rgb(158,202,225)";
const TICKS: usize = 5;

/// The grouped bar chart, or `None` when no trigger occurs at all. A stem missing from one
/// side gets no bar there (never a zero bar).
pub fn render_trigger_svg(triggers: &[TriggerWeight]) -> Option<String> {
    let shown: Vec<&TriggerWeight> = triggers
        .iter()
        .filter(|t| t.positive_mean.is_some() || t.negative_mean.is_some())
        .collect();
    let max = shown
        .iter()
        .flat_map(|t| [t.positive_mean, t.negative_mean])
        .flatten()
        .filter(|m| m.is_finite())
        .fold(0.0f64, f64::max);
    if shown.is_empty() || max <= 0.0 {
        return None;
    }
    let top_value = nice_ceiling(max);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let y_of = |v: f64| TOP + plot_h * (1.0 - v / top_value);
    let group = plot_w / shown.len() as f64;
    let bar = group * 0.35;

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"16\">Trigger-word weight in \
         positive and negative instances</text>\n",
        WIDTH / 2.0
    );
    // legend
    for (i, (label, colour)) in [("positive", POSITIVE), ("negative", NEGATIVE)]
        .iter()
        .enumerate()
    {
        let x = WIDTH - RIGHT - 170.0 + i as f64 * 85.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"30\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"40\">{label}</text>",
            x + 16.0
        );
    }
    // y axis with ticks
    for k in 0..=TICKS {
        let v = top_value * k as f64 / TICKS as f64;
        let y = y_of(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            format_tick(v)
        );
    }
    let _ = writeln!(
        svg,
        "<text transform=\"translate(16,{:.1}) rotate(-90)\" text-anchor=\"middle\">mean word α</text>",
        TOP + plot_h / 2.0
    );
    for (i, t) in shown.iter().enumerate() {
        let centre = LEFT + group * (i as f64 + 0.5);
        for (mean, count, x, colour, side) in [
            (
                t.positive_mean,
                t.positive_count,
                centre - bar,
                POSITIVE,
                "positive",
            ),
            (
                t.negative_mean,
                t.negative_count,
                centre,
                NEGATIVE,
                "negative",
            ),
        ] {
            let Some(mean) = mean.filter(|m| m.is_finite()) else {
                continue;
            };
            let y = y_of(mean);
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{colour}\">\
                 <title>{} {side}: {mean:.4} (n = {count})</title></rect>",
                TOP + plot_h - y,
                escape_markup(&t.stem)
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            HEIGHT - BOTTOM + 18.0,
            escape_markup(&t.stem)
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#000\"/>\n</svg>",
        TOP + plot_h
    );
    Some(svg)
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v > 0`.
fn nice_ceiling(v: f64) -> f64 {
    let scale = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * scale)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * scale)
}

fn format_tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(stem: &str, pos: Option<f64>, neg: Option<f64>) -> TriggerWeight {
        TriggerWeight {
            stem: stem.into(),
            positive_mean: pos,
            negative_mean: neg,
            positive_count: usize::from(pos.is_some()),
            negative_count: usize::from(neg.is_some()),
        }
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.043), 0.05);
        assert_eq!(nice_ceiling(0.02), 0.02);
        assert_eq!(nice_ceiling(0.021), 0.025);
        assert_eq!(nice_ceiling(0.6), 1.0);
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(0.025), "0.025");
    }

    #[test]
    fn bars_are_proportional_and_missing_means_get_no_bar() {
        let svg = render_trigger_svg(&[
            trigger("inhibit", Some(0.04), Some(0.01)),
            trigger("bind", None, Some(0.02)),
            trigger("absent", None, None),
        ])
        .unwrap();
        // three bars (+ legend swatches and the background), one label per shown stem
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains(">inhibit</text>") && svg.contains(">bind</text>"));
        assert!(!svg.contains("absent"));
        let heights: Vec<f64> = svg
            .split("<title>")
            .map(|chunk| chunk.rsplit("height=\"").next().unwrap())
            .take(3)
            .map(|h| h.split('"').next().unwrap().parse().unwrap())
            .collect();
        // inhibit + 0.04 is 4 × inhibit − 0.01, 2 × bind − 0.02
        assert!((heights[0] / heights[1] - 4.0).abs() < 0.01, "{heights:?}");
        assert!((heights[0] / heights[2] - 2.0).abs() < 0.01, "{heights:?}");
        assert!(render_trigger_svg(&[trigger("absent", None, None)]).is_none());
    }
}
