//! JSON-lines and JSON-array relation corpora (AIMed's `test_k.json`, user layouts):
//! fields are dotted paths (`relation.0.entity_1_idx`), mentions are tagged, marked or
//! given as character spans.

use std::path::Path;

use serde_json::Value;

use super::{line_error, parse_fold, parse_split, RawRecord, ReadConfig, ReadOutput};
use crate::data::corpus_spec::{Column, EntityStyle};
use crate::data::entity::{self, Span};
use crate::data::DataError;

/// Whether the file holds one record per line or one JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Lines,
    Array,
}

/// The value at a dotted path (`a.0.b`: numbers index arrays).
pub fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn field_path<'c>(col: &'c Option<Column>, name: &str) -> Result<Option<&'c str>, DataError> {
    match col {
        None => Ok(None),
        Some(Column::Name(n)) => Ok(Some(n)),
        Some(Column::Index(i)) => Err(DataError::Param {
            param: format!("layout.{name}"),
            message: format!("JSON fields are named (dotted paths), not indexed ({i})"),
        }),
    }
}

/// Parses a span value: `[s, e]`, `[[s, e], ...]` (first start, last end), or a
/// `"s-e"` / `"s-e;c-d"` string. Returns a half-open char span.
pub fn parse_span(v: &Value, end_inclusive: bool) -> Result<Span, String> {
    let pairs: Vec<(u64, u64)> = match v {
        Value::String(s) => s
            .split(';')
            .map(|part| {
                let (a, b) = part
                    .trim()
                    .split_once('-')
                    .ok_or_else(|| format!("span `{s}` is not `start-end`"))?;
                match (a.trim().parse(), b.trim().parse()) {
                    (Ok(a), Ok(b)) => Ok((a, b)),
                    _ => Err(format!("span `{s}` is not `start-end`")),
                }
            })
            .collect::<Result<_, String>>()?,
        Value::Array(a) if a.len() == 2 && a.iter().all(Value::is_u64) => {
            vec![(a[0].as_u64().unwrap_or(0), a[1].as_u64().unwrap_or(0))]
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_array) => a
            .iter()
            .map(|p| parse_span(p, false).map(|s| (s.start as u64, s.end as u64)))
            .collect::<Result<_, String>>()?,
        other => {
            return Err(format!(
                "span {other} is not [start, end], [[start, end], ...] or \"start-end\""
            ))
        }
    };
    let start = pairs.iter().map(|p| p.0).min().unwrap_or(0) as usize;
    let end = pairs.iter().map(|p| p.1).max().unwrap_or(0) as usize;
    Ok(Span {
        start,
        end: if end_inclusive { end + 1 } else { end },
    })
}

/// Reads a JSON-lines (`Shape::Lines`) or JSON (`Shape::Array`) file.
pub fn read(
    path: &Path,
    display: &str,
    shape: Shape,
    config: &ReadConfig,
) -> Result<ReadOutput, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut out = ReadOutput::default();
    match shape {
        Shape::Lines => {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let rec = serde_json::from_str::<Value>(line)
                    .map_err(|e| line_error(display, i + 1, format!("not valid JSON: {e}")))
                    .and_then(|v| record(&v, i + 1, display, config));
                out.records.push(rec);
            }
        }
        Shape::Array => {
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| line_error(display, e.line(), format!("not valid JSON: {e}")))?;
            let array = match &config.layout.records {
                Some(p) => at(&doc, p),
                None => Some(&doc),
            }
            .and_then(Value::as_array)
            .ok_or_else(|| {
                DataError::Invalid(format!(
                    "{display}: expected an array of records{}",
                    config
                        .layout
                        .records
                        .as_ref()
                        .map(|p| format!(" at `{p}`"))
                        .unwrap_or_default()
                ))
            })?;
            for (i, v) in array.iter().enumerate() {
                // For a JSON document, "line" is the 1-based record number.
                out.records
                    .push(record(v, i + 1, &format!("{display} record"), config));
            }
        }
    }
    Ok(out)
}

fn record(v: &Value, line: usize, file: &str, config: &ReadConfig) -> Result<RawRecord, DataError> {
    let err = |m: String| line_error(file, line, m);
    let layout = &config.layout;
    let required = |col: &Option<Column>, name: &str| -> Result<String, DataError> {
        let p = field_path(col, name)?.ok_or_else(|| DataError::Param {
            param: format!("layout.{name}"),
            message: "required".into(),
        })?;
        at(v, p).and_then(scalar).ok_or_else(|| {
            err(format!(
                "field `{p}` ({name}) is missing or not a string/number"
            ))
        })
    };
    let optional = |col: &Option<Column>, name: &str| -> Result<Option<String>, DataError> {
        Ok(match field_path(col, name)? {
            Some(p) => at(v, p).and_then(scalar),
            None => None,
        })
    };
    let text = required(&layout.text, "text")?;
    let label = required(&layout.label, "label")?;
    let tagging = &config.tagging;
    let text = match &tagging.style {
        EntityStyle::Tagged => text,
        EntityStyle::Markers { markers } => {
            entity::replace_markers(&text, markers, tagging.overlap_tag.as_deref()).map_err(err)?
        }
        EntityStyle::Spans {
            e1,
            e2,
            tag1,
            tag2,
            end_inclusive,
        } => {
            let span = |p: &str| -> Result<Span, DataError> {
                let value = at(v, p).ok_or_else(|| err(format!("span field `{p}` is missing")))?;
                parse_span(value, *end_inclusive).map_err(|m| err(format!("`{p}`: {m}")))
            };
            let t1 = tag1.as_deref().unwrap_or(&tagging.tag);
            let t2 = tag2.as_deref().unwrap_or(&tagging.tag);
            let overlap = tagging
                .overlap_tag
                .clone()
                .unwrap_or_else(|| entity::default_overlap_tag(t1, t2));
            entity::replace_spans(&text, span(e1)?, span(e2)?, (t1, t2), &overlap).map_err(err)?
        }
    };
    Ok(RawRecord {
        line,
        id: optional(&layout.id, "id")?,
        doc_id: optional(&layout.doc_id, "doc_id")?,
        text,
        label,
        split: optional(&layout.split, "split")?
            .map(|s| parse_split(&s))
            .transpose()
            .map_err(err)?,
        fold: optional(&layout.fold, "fold")?
            .map(|s| parse_fold(&s))
            .transpose()
            .map_err(err)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_values() {
        let v: Value = serde_json::json!([[76, 79]]);
        assert_eq!(parse_span(&v, false), Ok(Span { start: 76, end: 79 }));
        assert_eq!(
            parse_span(&serde_json::json!([3, 5]), false),
            Ok(Span { start: 3, end: 5 })
        );
        assert_eq!(
            parse_span(&serde_json::json!("112-125;146-150"), true),
            Ok(Span {
                start: 112,
                end: 151
            })
        );
        assert!(parse_span(&serde_json::json!("x"), true).is_err());
    }

    #[test]
    fn dotted_paths_index_arrays() {
        let v = serde_json::json!({"relation": [{"relation_type": "positive"}]});
        assert_eq!(
            at(&v, "relation.0.relation_type"),
            Some(&Value::String("positive".into()))
        );
        assert_eq!(at(&v, "relation.1.relation_type"), None);
    }
}
