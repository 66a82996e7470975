//! Documents with several labels each (`format: multilabel_tsv`, HoC): the text in
//! `layout.text`, the labels in `layout.label` joined by the literal
//! `layout.label_separator` (`4|7|8`); `layout.empty_label` is the value that stands for
//! no label at all (HoC BLURB: `10`).

use std::path::Path;

use super::line_error;
use super::rows::{field, optional_field, Rows};
use crate::data::corpus_spec::Layout;
use crate::data::DataError;

/// One document as read, labels as written (names or ids), in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDocument {
    /// 1-based line number.
    pub line: usize,
    pub id: Option<String>,
    pub doc_id: Option<String>,
    pub text: String,
    pub labels: Vec<String>,
}

/// Reads the documents of a TSV file (`display` names it in messages).
pub fn read(
    path: &Path,
    display: &str,
    layout: &Layout,
) -> Result<Vec<Result<RawDocument, DataError>>, DataError> {
    let rows = Rows::read(path, display, layout.header.unwrap_or(true))?;
    let text = rows.required(&layout.text, "text", display)?;
    let label = rows.required(&layout.label, "label", display)?;
    let id = rows.optional(&layout.id, "id", display)?;
    let doc_id = rows.optional(&layout.doc_id, "doc_id", display)?;
    let separator = layout
        .label_separator
        .as_deref()
        .ok_or_else(|| DataError::Param {
            param: "layout.label_separator".into(),
            message: "format multilabel_tsv needs it (e.g. `|`)".into(),
        })?;
    Ok(rows
        .lines
        .into_iter()
        .map(|row| {
            let (line, fields) = row?;
            let get = |i: usize| field(&fields, i, display, line);
            let body = get(text)?.trim();
            if body.is_empty() {
                return Err(line_error(display, line, "empty text"));
            }
            let raw = get(label)?.trim();
            let labels: Vec<String> = if layout.empty_label.as_deref() == Some(raw) {
                Vec::new()
            } else {
                raw.split(separator).map(|l| l.trim().to_string()).collect()
            };
            if labels.iter().any(String::is_empty) {
                return Err(line_error(
                    display,
                    line,
                    format!("empty label in `{raw}` (labels joined by `{separator}`)"),
                ));
            }
            if let Some(empty) = layout.empty_label.as_deref() {
                if labels.len() > 1 && labels.iter().any(|l| l == empty) {
                    return Err(line_error(
                        display,
                        line,
                        format!("`{empty}` (layout.empty_label, no label) beside other labels"),
                    ));
                }
            }
            let opt = |c: Option<usize>| optional_field(&fields, c, display, line);
            Ok(RawDocument {
                line,
                id: opt(id)?,
                doc_id: opt(doc_id)?,
                text: body.to_string(),
                labels,
            })
        })
        .collect())
}
