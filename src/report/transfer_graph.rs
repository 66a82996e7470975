//! The improves/hurts graph of a pairwise multi-task grid (Peng et al. 2020, Figure 2's
//! form): one node per task, an edge s → t for every pair run, labelled with Δ, t's score
//! when trained together with s minus its single-task score (mean over seeds), and
//! coloured by its sign only where a paired t-test over the seeds tells it from noise (the
//! reports' verdict, [`Judgement::of`]): green improves, red hurts, grey inside the noise (or
//! a single seed: dashed).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cells::signed_points;
use super::paired::{Claim, Judgement, Verdict};
use super::ReportError;
use crate::metrics::MeanStd;

/// One directed edge: `to`'s score change (a fraction) when trained together with `from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferEdge {
    pub from: String,
    pub to: String,
    /// Mean Δ over seeds (fraction: 0.012 = +1.2 points).
    pub mean: f64,
    /// Sample std of Δ over seeds; `None` with one seed.
    #[serde(default)]
    pub std: Option<f64>,
    /// How many seeds Δ is over.
    pub n: usize,
}

/// What an edge says, given the seeds' spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    Improves,
    Hurts,
    /// The seeds' scatter could explain Δ.
    InsideNoise,
    /// One seed: no spread to judge by.
    SingleRun,
}

impl TransferEdge {
    /// Whether this edge improves, hurts, or cannot be told from noise.
    pub fn transfer(&self) -> Transfer {
        let spread = MeanStd {
            mean: self.mean,
            std: self.std,
            n: self.n,
        };
        match Judgement::of(Some(&spread), Claim::Higher).verdict {
            Verdict::Confirmed => Transfer::Improves,
            Verdict::Refuted => Transfer::Hurts,
            Verdict::Noise => Transfer::InsideNoise,
            Verdict::OneRun | Verdict::NotRun => Transfer::SingleRun,
        }
    }
}

/// The whole graph: nodes `(key, label)` in drawing order, and the edges between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferGraph {
    pub title: String,
    pub nodes: Vec<(String, String)>,
    pub edges: Vec<TransferEdge>,
}

const WIDTH: f64 = 620.0;
const HEIGHT: f64 = 520.0;
const RADIUS: f64 = 170.0;
const NODE_R: f64 = 34.0;

/// Writes `graph` as an SVG file at `path`.
pub fn transfer_graph(path: &Path, graph: &TransferGraph) -> Result<(), ReportError> {
    let fail = |message: String| ReportError::Plot {
        path: path.to_path_buf(),
        message,
    };
    if graph.nodes.is_empty() {
        return Err(fail("a transfer graph needs at least one node".into()));
    }
    let (cx, cy) = (WIDTH / 2.0, HEIGHT / 2.0 + 10.0);
    let n = graph.nodes.len() as f64;
    let position = |key: &str| {
        let i = graph.nodes.iter().position(|(k, _)| k == key)?;
        let angle = -std::f64::consts::FRAC_PI_2 + 2.0 * std::f64::consts::PI * i as f64 / n;
        Some((cx + RADIUS * angle.cos(), cy + RADIUS * angle.sin()))
    };
    let mut svg = String::new();
    svg.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <defs>{}{}{}</defs>\n\
             <text x=\"{}\" y=\"28\" font-size=\"18\" text-anchor=\"middle\">{}</text>\n",
        marker("improves", "#1a9850"),
        marker("hurts", "#d73027"),
        marker("noise", "#999999"),
        WIDTH / 2.0,
        escape(&graph.title)
    ));
    for edge in &graph.edges {
        let (Some(a), Some(b)) = (position(&edge.from), position(&edge.to)) else {
            return Err(fail(format!(
                "edge {} → {} names a task that is not a node",
                edge.from, edge.to
            )));
        };
        if !edge.mean.is_finite() {
            return Err(fail(format!(
                "edge {} → {}: Δ is not a number",
                edge.from, edge.to
            )));
        }
        // a curve bent to the right of the direction of travel, so s → t and t → s part
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let length = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (ux, uy) = (dx / length, dy / length);
        let (nx, ny) = (-uy, ux);
        let bend = 28.0;
        let start = (a.0 + ux * NODE_R + nx * 8.0, a.1 + uy * NODE_R + ny * 8.0);
        let end = (
            b.0 - ux * (NODE_R + 6.0) + nx * 8.0,
            b.1 - uy * (NODE_R + 6.0) + ny * 8.0,
        );
        let control = ((a.0 + b.0) / 2.0 + nx * bend, (a.1 + b.1) / 2.0 + ny * bend);
        let (color, id, dash) = match edge.transfer() {
            Transfer::Improves => ("#1a9850", "improves", ""),
            Transfer::Hurts => ("#d73027", "hurts", ""),
            Transfer::InsideNoise => ("#999999", "noise", ""),
            Transfer::SingleRun => ("#999999", "noise", " stroke-dasharray=\"5,4\""),
        };
        let _ = writeln!(
            svg,
            "<path d=\"M {:.1} {:.1} Q {:.1} {:.1} {:.1} {:.1}\" fill=\"none\" stroke=\"{color}\" \
             stroke-width=\"2\"{dash} marker-end=\"url(#{id})\"/>",
            start.0, start.1, control.0, control.1, end.0, end.1
        );
        // the label at the curve's midpoint
        let mid = (
            0.25 * start.0 + 0.5 * control.0 + 0.25 * end.0,
            0.25 * start.1 + 0.5 * control.1 + 0.25 * end.1,
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{color}\" text-anchor=\"middle\">{}</text>",
            mid.0 + nx * 10.0,
            mid.1 + ny * 10.0 + 4.0,
            signed_points(edge.mean * 100.0)
        );
    }
    for (key, label) in &graph.nodes {
        let Some((x, y)) = position(key) else {
            continue;
        };
        let _ = writeln!(
            svg,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{NODE_R}\" fill=\"#f0f0f0\" stroke=\"#333\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            y + 4.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"12\" y=\"{:.1}\" font-size=\"12\"><tspan fill=\"#1a9850\">improves</tspan> / \
         <tspan fill=\"#d73027\">hurts</tspan> beyond the seeds' noise (paired t-test, 5 %); grey: inside it \
         (dashed: one seed). Edge s → t: Δ F1 of t trained with s, points.</text>\n</svg>",
        HEIGHT - 12.0
    );
    std::fs::write(path, svg).map_err(|e| fail(e.to_string()))
}

fn marker(id: &str, color: &str) -> String {
    format!(
        "<marker id=\"{id}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" \
         fill=\"{color}\"/></marker>"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An edge over 3 seeds (1 without a std).
    fn edge(from: &str, to: &str, mean: f64, std: Option<f64>) -> TransferEdge {
        TransferEdge {
            from: from.into(),
            to: to.into(),
            mean,
            std,
            n: if std.is_some() { 3 } else { 1 },
        }
    }

    #[test]
    fn an_edge_is_coloured_only_beyond_the_seeds_noise() {
        // 3 seeds: t = mean / (std / √3) must pass 2.92 (one-sided 5 %, 2 degrees)
        assert_eq!(
            edge("a", "b", 0.02, Some(0.01)).transfer(),
            Transfer::Improves
        );
        assert_eq!(
            edge("a", "b", -0.02, Some(0.01)).transfer(),
            Transfer::Hurts
        );
        // t = 1.5·√3 = 2.6: beyond one std, not beyond chance
        assert_eq!(
            edge("a", "b", 0.015, Some(0.01)).transfer(),
            Transfer::InsideNoise
        );
        assert_eq!(edge("a", "b", 0.02, None).transfer(), Transfer::SingleRun);
    }

    #[test]
    fn the_svg_has_a_node_per_task_and_an_arrow_per_edge() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("g.svg");
        let graph = TransferGraph {
            title: "pairwise MTL".into(),
            nodes: vec![
                ("ddi".into(), "DDI".into()),
                ("chem".into(), "BC5CDR <chem>".into()),
            ],
            edges: vec![
                edge("ddi", "chem", 0.021, Some(0.01)),
                edge("chem", "ddi", -0.004, Some(0.01)),
            ],
        };
        transfer_graph(&path, &graph).unwrap_or_else(|e| panic!("{e}"));
        let svg = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches("marker-end=\"url(#improves)\"").count(), 1);
        assert_eq!(svg.matches("marker-end=\"url(#noise)\"").count(), 1);
        assert!(svg.contains(">+2.1<") && svg.contains(">−0.4<"), "{svg}");
        assert!(svg.contains("BC5CDR &lt;chem&gt;"));
        let bad = TransferGraph {
            edges: vec![edge("ddi", "hoc", 0.0, None)],
            ..graph
        };
        assert!(transfer_graph(&path, &bad).is_err());
    }
}
