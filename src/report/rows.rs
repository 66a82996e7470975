//! Result rows: one upstream stage instance's metrics, history and statistics, with the
//! matrix coordinates that place it in a table.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ReportError;

/// The files of a stage output that a report reads (see [`ResultRow::load`]): its metrics,
/// its training history and its corpus statistics, each optional.
pub const ROW_FILES: [&str; 3] = ["metrics.json", "history.json", "stats.json"];

/// One result a report can place: the artifact of one stage instance bound to a report input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The report input name it is bound under (e.g. `results`).
    pub input: String,
    /// Expanded stage instance name, e.g. `evaluate[head=cls,seed=1,task=ddi]`.
    pub stage: String,
    /// Stage key (hex), so a reader can rerun exactly this cell.
    pub key: String,
    /// Matrix coordinates (`task`, `head`, `seed`, `fold`, ...).
    pub coords: BTreeMap<String, Value>,
    /// Contents of `metrics.json` (fractions 0..1), or `null` when the artifact has none.
    pub metrics: Value,
    /// Contents of `history.json` (`{"epochs": [{"epoch", "train_loss", "dev_f1", ...}]}`).
    #[serde(default)]
    pub history: Option<Value>,
    /// Contents of `stats.json` (corpus statistics: split → label → count).
    #[serde(default)]
    pub stats: Option<Value>,
    /// The artifact's directory (not serialized), for `embed` to copy files from.
    #[serde(skip)]
    pub dir: Option<std::path::PathBuf>,
}

impl ResultRow {
    /// Reads a row from an artifact at `path`: a stage output directory (its `metrics.json`,
    /// `history.json` and `stats.json`, each optional) or a single JSON file (taken as the
    /// metrics).
    pub fn load(
        input: &str,
        stage: &str,
        key: &str,
        coords: BTreeMap<String, Value>,
        path: &Path,
    ) -> Result<ResultRow, ReportError> {
        let (metrics, history, stats) = if path.is_file() {
            (read_json(path)?, None, None)
        } else {
            let [metrics, history, stats] = ROW_FILES;
            (
                read_json_if_present(&path.join(metrics))?.unwrap_or(Value::Null),
                read_json_if_present(&path.join(history))?,
                read_json_if_present(&path.join(stats))?,
            )
        };
        Ok(ResultRow {
            input: input.to_string(),
            stage: stage.to_string(),
            key: key.to_string(),
            coords,
            metrics,
            history,
            stats,
            dir: path.is_dir().then(|| path.to_path_buf()),
        })
    }

    /// The number at a dotted path into the metrics (`f1`, `pooled.f1`,
    /// `per_class.effect.f1`), if there is one.
    pub fn metric(&self, path: &str) -> Option<f64> {
        path.split('.')
            .try_fold(&self.metrics, |v, part| v.get(part))
            .and_then(Value::as_f64)
    }

    /// The value this row has for a filter name: `input`, `stage`, `key`, or a coordinate
    /// (`null` when the row has no such coordinate).
    pub fn field(&self, name: &str) -> Value {
        match name {
            "input" => Value::String(self.input.clone()),
            "stage" => Value::String(self.stage.clone()),
            "key" => Value::String(self.key.clone()),
            _ => self.coords.get(name).cloned().unwrap_or(Value::Null),
        }
    }

    /// Whether every `(name, value)` filter holds (numbers compare by value: 1 == 1.0).
    pub fn matches(&self, filters: &[(String, Value)]) -> bool {
        filters
            .iter()
            .all(|(name, want)| same_value(&self.field(name), want))
    }
}

/// JSON equality with numbers compared as numbers.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Renders a coordinate value the way matrix names print it (`ddi`, `3`).
pub fn coord_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn read_json(path: &Path) -> Result<Value, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ReportError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_json_if_present(path: &Path) -> Result<Option<Value>, ReportError> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> ResultRow {
        ResultRow {
            input: "results".into(),
            stage: "evaluate[seed=1]".into(),
            key: "abc".into(),
            coords: [("task".into(), json!("ddi")), ("seed".into(), json!(1))].into(),
            metrics: json!({"f1": 0.5, "pooled": {"f1": 0.25}, "n": 3}),
            history: None,
            stats: None,
            dir: None,
        }
    }

    #[test]
    fn dotted_metric_paths() {
        let r = row();
        assert_eq!(r.metric("f1"), Some(0.5));
        assert_eq!(r.metric("pooled.f1"), Some(0.25));
        assert_eq!(r.metric("pooled.p"), None);
        assert_eq!(r.metric("n"), Some(3.0));
    }

    #[test]
    fn filters_on_coords_and_input() {
        let r = row();
        assert!(r.matches(&[("task".into(), json!("ddi")), ("seed".into(), json!(1.0))]));
        assert!(r.matches(&[("input".into(), json!("results"))]));
        assert!(!r.matches(&[("task".into(), json!("ppi"))]));
        assert!(!r.matches(&[("head".into(), json!("cls"))]));
    }
}
