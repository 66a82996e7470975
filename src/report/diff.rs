//! `pipe diff`: the score cells that differ between two runs (two profiles, two caches).
//! Rows are matched by report input and matrix coordinates, not by key (keys differ
//! whenever params do).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::cells::{percent, signed_points};
use super::rows::coord_text;
use super::ResultRow;

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
        let cell = c
            .coords
            .iter()
            .map(|(k, v)| format!("{k}={}", coord_text(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let delta = c
            .delta()
            .map_or("—".to_string(), |d| signed_points(d * 100.0));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            c.input,
            if cell.is_empty() { "—" } else { &cell },
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
}
