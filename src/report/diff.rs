//! `pipe diff`: the score cells that differ between two runs (two profiles, two caches).
//! Rows are matched by report input and matrix coordinates, not by key (keys differ
//! whenever params do).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::cells::{percent, signed_points};
use super::paired::{Claim, PairedDifference, PairingError};
use super::rows::coord_text;
use super::ResultRow;
use crate::metrics::MeanStd;

/// Sub-objects of metrics.json that are not headline scores.
const SKIPPED: &[&str] = &["per_class", "confusion", "per_fold", "std", "per_type"];
/// Count fields (not fractions).
const COUNTS: &[&str] = &["tp", "fp", "fn", "n", "n_folds", "support"];

/// One score that differs between run A and run B (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricChange {
    pub input: String,
    pub coords: BTreeMap<String, Value>,
    /// Dotted path into metrics.json (`f1`, `pooled.f1`).
    pub metric: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub key_a: Option<String>,
    pub key_b: Option<String>,
}

impl MetricChange {
    /// B − A (fractions), when both exist.
    pub fn delta(&self) -> Option<f64> {
        Some(self.b? - self.a?)
    }
}

/// Headline scores (fractions) of a metrics.json, by dotted path: numbers at the top level
/// and one level down (`pooled.f1`, `mean.f1`), without counts, stds and per-class tables.
fn scores(metrics: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(top) = metrics.as_object() else {
        return out;
    };
    for (k, v) in top {
        if SKIPPED.contains(&k.as_str()) || COUNTS.contains(&k.as_str()) {
            continue;
        }
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.insert(k.clone(), x);
                }
            }
            Value::Object(inner) => {
                for (k2, v2) in inner {
                    if COUNTS.contains(&k2.as_str()) {
                        continue;
                    }
                    if let Some(x) = v2.as_f64() {
                        out.insert(format!("{k}.{k2}"), x);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn identity(r: &ResultRow) -> (String, String) {
    (
        r.input.clone(),
        serde_json::to_string(&r.coords).unwrap_or_default(),
    )
}

/// Every headline score that differs between `a` and `b`, including scores of cells that
/// exist on one side only; rows with the same key on both sides are identical by
/// construction and skipped. Sorted by input, coordinates, metric.
pub fn diff_metrics(a: &[ResultRow], b: &[ResultRow]) -> Vec<MetricChange> {
    let index = |rows: &[ResultRow]| -> BTreeMap<(String, String), ResultRow> {
        rows.iter().map(|r| (identity(r), r.clone())).collect()
    };
    let (ia, ib) = (index(a), index(b));
    let mut ids: Vec<&(String, String)> = ia.keys().chain(ib.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut changes = Vec::new();
    for id in ids {
        let (ra, rb) = (ia.get(id), ib.get(id));
        if let (Some(x), Some(y)) = (ra, rb) {
            if x.key == y.key {
                continue;
            }
        }
        let sa = ra.map(|r| scores(&r.metrics)).unwrap_or_default();
        let sb = rb.map(|r| scores(&r.metrics)).unwrap_or_default();
        let mut names: Vec<&String> = sa.keys().chain(sb.keys()).collect();
        names.sort();
        names.dedup();
        let Some(any) = ra.or(rb) else { continue };
        for name in names {
            let (va, vb) = (sa.get(name).copied(), sb.get(name).copied());
            if va == vb {
                continue;
            }
            changes.push(MetricChange {
                input: any.input.clone(),
                coords: any.coords.clone(),
                metric: name.clone(),
                a: va,
                b: vb,
                key_a: ra.map(|r| r.key.clone()),
                key_b: rb.map(|r| r.key.clone()),
            });
        }
    }
    changes
}

/// Which rows and scores `pipe diff` shows: report inputs and metrics by name (empty: all).
#[derive(Debug, Clone, Default)]
pub struct DiffSelection {
    pub inputs: Vec<String>,
    pub metrics: Vec<String>,
}

impl DiffSelection {
    /// Keeps the rows of the selected inputs; an input or metric that no row of either side
    /// has is an error naming the ones there are.
    pub fn apply(&self, a: &mut Vec<ResultRow>, b: &mut Vec<ResultRow>) -> Result<(), String> {
        let known = |names: &[String], what: &str, there: Vec<String>| -> Result<(), String> {
            match names.iter().find(|n| !there.contains(n)) {
                Some(bad) => Err(format!(
                    "no {what} `{bad}` in either profile's results (there are: {})",
                    there.join(", ")
                )),
                None => Ok(()),
            }
        };
        let mut inputs: Vec<String> = a.iter().chain(b.iter()).map(|r| r.input.clone()).collect();
        inputs.sort();
        inputs.dedup();
        known(&self.inputs, "report input", inputs)?;
        if !self.inputs.is_empty() {
            a.retain(|r| self.inputs.contains(&r.input));
            b.retain(|r| self.inputs.contains(&r.input));
        }
        let mut metrics: Vec<String> = a
            .iter()
            .chain(b.iter())
            .flat_map(|r| scores(&r.metrics).into_keys())
            .collect();
        metrics.sort();
        metrics.dedup();
        known(&self.metrics, "metric", metrics)
    }

    fn shows(&self, metric: &str) -> bool {
        self.metrics.is_empty() || self.metrics.iter().any(|m| m == metric)
    }
}

/// Keeps the changes of the selected metrics.
pub fn select_metrics(changes: Vec<MetricChange>, selection: &DiffSelection) -> Vec<MetricChange> {
    changes
        .into_iter()
        .filter(|c| selection.shows(&c.metric))
        .collect()
}

/// One score of a cell whose runs differ along a coordinate (`seed`): each side's mean
/// over its runs and the paired differences B − A over the runs both have.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedChange {
    pub input: String,
    /// The cell's coordinates without the pairing one.
    pub coords: BTreeMap<String, Value>,
    pub metric: String,
    pub a: Option<MeanStd>,
    pub b: Option<MeanStd>,
    /// B − A, run by run.
    pub b_minus_a: PairedDifference,
}

/// [`diff_metrics`] with the runs of a cell that differ only in coordinate `over` taken
/// together: a row per cell and score with both sides' mean ± std and the paired
/// differences. Cells whose every run has the same key on both sides are left out.
pub fn diff_paired(
    a: &[ResultRow],
    b: &[ResultRow],
    over: &str,
    selection: &DiffSelection,
) -> Result<Vec<PairedChange>, PairingError> {
    let (ga, gb) = (cells_over(a, over), cells_over(b, over));
    let mut ids: Vec<&(String, String)> = ga.keys().chain(gb.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        let none = Vec::new();
        let (ra, rb) = (ga.get(id).unwrap_or(&none), gb.get(id).unwrap_or(&none));
        let keys = |rows: &[&ResultRow]| {
            let mut k: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();
            k.sort();
            k
        };
        if keys(ra) == keys(rb) {
            continue;
        }
        let Some(any) = ra.first().or(rb.first()) else {
            continue;
        };
        let (input, coords) = (&id.0, cell_coords(any, over));
        let mut names: Vec<String> = ra
            .iter()
            .chain(rb.iter())
            .flat_map(|r| scores(&r.metrics).into_keys())
            .filter(|m| selection.shows(m))
            .collect();
        names.sort();
        names.dedup();
        for metric in names {
            let spread = |rows: &[&ResultRow]| {
                let values: Vec<f64> = rows.iter().filter_map(|r| r.metric(&metric)).collect();
                MeanStd::of(&values)
            };
            out.push(PairedChange {
                input: input.clone(),
                coords: coords.clone(),
                a: spread(ra),
                b: spread(rb),
                b_minus_a: PairedDifference::of(rb, ra, over, &metric)?,
                metric,
            });
        }
    }
    Ok(out)
}

/// The runs of `rows` by cell: input and coordinates without `over`.
fn cells_over<'r>(
    rows: &'r [ResultRow],
    over: &str,
) -> BTreeMap<(String, String), Vec<&'r ResultRow>> {
    let mut cells: BTreeMap<(String, String), Vec<&ResultRow>> = BTreeMap::new();
    for r in rows {
        let coords = serde_json::to_string(&cell_coords(r, over)).unwrap_or_default();
        cells.entry((r.input.clone(), coords)).or_default().push(r);
    }
    cells
}

/// The coordinates of `row`'s cell: its own without `over`.
fn cell_coords(row: &ResultRow, over: &str) -> BTreeMap<String, Value> {
    let mut coords = row.coords.clone();
    coords.remove(over);
    coords
}

/// "42.6 ± 6.4 (3)": mean ± sample std in percent and the number of runs.
fn spread_text(s: &Option<MeanStd>) -> String {
    match s {
        None => "—".to_string(),
        Some(MeanStd {
            mean, std: None, ..
        }) => format!("{} (1)", percent(*mean, 1)),
        Some(MeanStd {
            mean,
            std: Some(std),
            n,
        }) => format!("{} ± {:.1} ({n})", percent(*mean, 1), std * 100.0),
    }
}

/// A markdown table of `changes`, pooled over coordinate `over`.
pub fn render_paired_markdown(
    changes: &[PairedChange],
    over: &str,
    label_a: &str,
    label_b: &str,
) -> String {
    if changes.is_empty() {
        return format!("No score differs between {label_a} and {label_b}.\n");
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| input | cell | metric | {label_a} | {label_b} | {label_b} − {label_a}, paired by {over} | p |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for c in changes {
        let p = c.b_minus_a.judge(Claim::NoChange).p_text();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.input,
            cell_text(&c.coords),
            c.metric,
            spread_text(&c.a),
            spread_text(&c.b),
            c.b_minus_a.text().unwrap_or_else(|| "—".to_string()),
            p.as_deref().unwrap_or("—")
        );
    }
    let _ = writeln!(
        s,
        "\nPercent, mean ± sample std (runs); the paired column pairs the runs with the same \
         {over} (— = no run on both sides); p: a two-sided paired t-test of that difference \
         against 0 (— below two pairs)."
    );
    s
}

/// `head=cls, seed=1`, or `—` for a cell without coordinates.
fn cell_text(coords: &BTreeMap<String, Value>) -> String {
    let cell = coords
        .iter()
        .map(|(k, v)| format!("{k}={}", coord_text(v)))
        .collect::<Vec<_>>()
        .join(", ");
    if cell.is_empty() {
        "—".to_string()
    } else {
        cell
    }
}

/// A markdown table of `changes` (percent, one decimal; Δ = B − A in points).
pub fn render_diff_markdown(changes: &[MetricChange], label_a: &str, label_b: &str) -> String {
    if changes.is_empty() {
        return format!("No score differs between {label_a} and {label_b}.\n");
    }
    let mut s = String::new();
    let _ = writeln!(s, "| input | cell | metric | {label_a} | {label_b} | Δ |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    let show = |v: Option<f64>| v.map_or("—".to_string(), |x| percent(x, 1));
    for c in changes {
        let delta = c
            .delta()
            .map_or("—".to_string(), |d| signed_points(d * 100.0));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            c.input,
            cell_text(&c.coords),
            c.metric,
            show(c.a),
            show(c.b),
            delta
        );
    }
    if changes.iter().any(|c| c.a.is_none() || c.b.is_none()) {
        let _ = writeln!(s, "\n— = no such result in that run.");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(head: &str, key: &str, metrics: Value) -> ResultRow {
        ResultRow {
            input: "results".into(),
            stage: format!("evaluate[head={head}]"),
            key: key.into(),
            coords: [("head".to_string(), json!(head))].into(),
            metrics,
            history: None,
            stats: None,
            dir: None,
        }
    }

    #[test]
    fn changed_added_and_unchanged_cells() {
        let a = vec![
            row("cls", "k1", json!({"f1": 0.80, "precision": 0.7, "tp": 3})),
            row("att", "k2", json!({"f1": 0.81})),
            row("lstm", "k3", json!({"f1": 0.5})),
        ];
        let b = vec![
            row(
                "cls",
                "k4",
                json!({"f1": 0.82, "precision": 0.7, "tp": 5, "pooled": {"f1": 0.9}}),
            ),
            row("att", "k2", json!({"f1": 0.99})), // same key: skipped
            row("bilstm", "k5", json!({"f1": 0.6})),
        ];
        let changes = diff_metrics(&a, &b);
        let summary: Vec<(String, &str, Option<f64>, Option<f64>)> = changes
            .iter()
            .map(|c| (coord_text(&c.coords["head"]), c.metric.as_str(), c.a, c.b))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("bilstm".to_string(), "f1", None, Some(0.6)),
                ("cls".to_string(), "f1", Some(0.80), Some(0.82)),
                ("cls".to_string(), "pooled.f1", None, Some(0.9)),
                ("lstm".to_string(), "f1", Some(0.5), None),
            ]
        );
        let md = render_diff_markdown(&changes, "smoke", "cpu");
        assert!(
            md.contains("| results | head=cls | f1 | 80.0 | 82.0 | +2.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| results | head=lstm | f1 | 50.0 | — | — |"),
            "{md}"
        );
        assert_eq!(
            render_diff_markdown(&[], "a", "b"),
            "No score differs between a and b.\n"
        );
    }

    fn seeded(head: &str, seed: i64, key: &str, f1: f64) -> ResultRow {
        let mut r = row(head, key, json!({"f1": f1, "precision": 0.5}));
        r.coords.insert("seed".into(), json!(seed));
        r
    }

    #[test]
    fn runs_taken_together_over_the_seed() {
        let a = vec![
            seeded("att", 1, "a1", 0.290),
            seeded("att", 2, "a2", 0.325),
            seeded("att", 3, "a3", 0.381),
            seeded("cls", 1, "c1", 0.30),
        ];
        let b = vec![
            seeded("att", 1, "b1", 0.375),
            seeded("att", 2, "b2", 0.403),
            seeded("cls", 1, "c1", 0.30), // the same result on both sides: left out
        ];
        let f1_only = DiffSelection {
            inputs: Vec::new(),
            metrics: vec!["f1".into()],
        };
        let changes = diff_paired(&a, &b, "seed", &f1_only).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changes.len(), 1, "{changes:?}");
        let att = &changes[0];
        assert_eq!(att.coords, [("head".to_string(), json!("att"))].into());
        // A: (29.0 + 32.5 + 38.1) / 3 = 33.2; B − A by seed: +8.5, +7.8 → +8.15 ± 0.49;
        // t = 8.15 / (0.495 / √2) = 23.3 on 1 degree: 2·(1/2 − atan(23.3)/π) = 0.027
        let md = render_paired_markdown(&changes, "seed", "cpu", "warm");
        assert!(
            md.contains("| results | head=att | f1 | 33.2 ± 4.6 (3) | 38.9 ± 2.0 (2) | +8.2 ± 0.5 (higher in 2 of 2) | p = 0.027 |"),
            "{md}"
        );
        let mut a = a;
        let mut b = b;
        let unknown = DiffSelection {
            inputs: vec!["eval".into()],
            metrics: Vec::new(),
        };
        let err = unknown.apply(&mut a, &mut b).unwrap_err();
        assert_eq!(
            err,
            "no report input `eval` in either profile's results (there are: results)"
        );
    }
}
