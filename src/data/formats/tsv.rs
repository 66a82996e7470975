//! Tab-separated relation corpora: BLURB (`sentence<TAB>label_id`), the rebuilt DDI train
//! file, AIMed's tagged TSV, and any user TSV described by a [`Layout`].

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::path::Path;

use super::{line_error, parse_fold, parse_split, RawRecord, ReadConfig, ReadOutput, NUL_IN_TEXT};
use crate::data::corpus_spec::{Column, EntityStyle};
use crate::data::entity;
use crate::data::DataError;

/// Resolved column indices.
struct Columns {
    text: usize,
    label: usize,
    id: Option<usize>,
    doc_id: Option<usize>,
    split: Option<usize>,
    fold: Option<usize>,
    /// Number of fields every line must have: the header's, else that of most lines.
    exact: Option<usize>,
    has_header: bool,
    min: usize,
}

pub(super) fn resolve(
    col: &Option<Column>,
    header: Option<&[&str]>,
    name: &str,
    file: &str,
) -> Result<Option<usize>, DataError> {
    match (col, header) {
        (None, _) => Ok(None),
        (Some(Column::Index(i)), _) => Ok(Some(*i)),
        (Some(Column::Name(n)), Some(h)) => {
            h.iter().position(|c| c == n).map(Some).ok_or_else(|| {
                line_error(
                    file,
                    1,
                    format!("layout.{name}: no column `{n}` in the header {h:?}"),
                )
            })
        }
        (Some(Column::Name(n)), None) => Err(DataError::Param {
            param: format!("layout.{name}"),
            message: format!(
                "column `{n}` is a name but the file has no header; use a 0-based index"
            ),
        }),
    }
}

/// Reads a TSV file. `display` is the name used in messages.
pub fn read(path: &Path, display: &str, config: &ReadConfig) -> Result<ReadOutput, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let layout = &config.layout;
    let has_header = layout.header.unwrap_or(true);
    let mut lines = bytes.split(|b| *b == b'\n').enumerate().peekable();
    let header_fields: Option<Vec<String>> = if has_header {
        match lines.next() {
            Some((_, raw)) => {
                let text = std::str::from_utf8(raw)
                    .map_err(|_| line_error(display, 1, "header is not valid UTF-8"))?;
                Some(
                    text.trim_end_matches('\r')
                        .split('\t')
                        .map(str::to_string)
                        .collect(),
                )
            }
            None => return Err(line_error(display, 1, "empty file: expected a header line")),
        }
    } else {
        None
    };
    let header_refs: Option<Vec<&str>> = header_fields
        .as_ref()
        .map(|h| h.iter().map(String::as_str).collect());
    let h = header_refs.as_deref();
    let need = |col: &Option<Column>, name: &str| -> Result<usize, DataError> {
        resolve(col, h, name, display)?.ok_or_else(|| DataError::Param {
            param: format!("layout.{name}"),
            message: "required".into(),
        })
    };
    let mut cols = Columns {
        text: need(&layout.text, "text")?,
        label: need(&layout.label, "label")?,
        id: resolve(&layout.id, h, "id", display)?,
        doc_id: resolve(&layout.doc_id, h, "doc_id", display)?,
        split: resolve(&layout.split, h, "split", display)?,
        fold: resolve(&layout.fold, h, "fold", display)?,
        exact: h.map(<[&str]>::len),
        has_header,
        min: 0,
    };
    cols.min = [
        Some(cols.text),
        Some(cols.label),
        cols.id,
        cols.doc_id,
        cols.split,
        cols.fold,
    ]
    .into_iter()
    .flatten()
    .max()
    .map_or(0, |m| m + 1);
    if cols.exact.is_none() {
        // Without a header, the column count of most lines is the file's: a line with a
        // stray tab would otherwise lose the text after it without a word.
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        for line in bytes.split(|b| *b == b'\n') {
            if !line.iter().all(u8::is_ascii_whitespace) {
                *counts
                    .entry(line.split(|b| *b == b'\t').count())
                    .or_default() += 1;
            }
        }
        let usual = counts
            .iter()
            .max_by_key(|&(n, lines)| (*lines, Reverse(*n)));
        cols.exact = usual.map(|(n, _)| *n).filter(|n| *n >= cols.min);
    }
    if let EntityStyle::Spans { .. } = config.tagging.style {
        return Err(DataError::Param {
            param: "entities".into(),
            message:
                "style `spans` needs a JSON format (jsonl/json); TSV text is `tagged` or `markers`"
                    .into(),
        });
    }
    let mut out = ReadOutput::default();
    let last = bytes.split(|b| *b == b'\n').count();
    for (i, raw) in lines {
        let line_no = i + 1;
        if raw.is_empty() && line_no == last {
            break; // the newline that ends the file
        }
        out.records
            .push(parse_line(raw, line_no, display, &cols, config));
    }
    Ok(out)
}

fn parse_line(
    raw: &[u8],
    line_no: usize,
    file: &str,
    cols: &Columns,
    config: &ReadConfig,
) -> Result<RawRecord, DataError> {
    let err = |m: String| line_error(file, line_no, m);
    let text = std::str::from_utf8(raw).map_err(|_| err("not valid UTF-8".into()))?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(err("empty line".into()));
    }
    if text.contains('\0') {
        return Err(err(NUL_IN_TEXT.into()));
    }
    let fields: Vec<&str> = text.split('\t').collect();
    if fields.len() < cols.min {
        return Err(err(format!(
            "expected {} tab-separated columns, found {}",
            cols.exact.unwrap_or(cols.min).max(cols.min),
            fields.len()
        )));
    }
    if let Some(n) = cols.exact.filter(|n| fields.len() != *n) {
        let like = match cols.has_header {
            true => "as in the header",
            false => "as most lines of the file",
        };
        return Err(err(format!(
            "expected {n} tab-separated columns ({like}), found {}",
            fields.len()
        )));
    }
    let sentence = fields[cols.text];
    if sentence.trim().is_empty() {
        return Err(err("empty sentence".into()));
    }
    let label = fields[cols.label].trim();
    if label.is_empty() {
        return Err(err("empty label".into()));
    }
    let sentence = match &config.tagging.style {
        EntityStyle::Markers { markers } => {
            entity::replace_markers(sentence, markers, config.tagging.overlap_tag.as_deref())
                .map_err(err)?
        }
        _ => sentence.to_string(),
    };
    let opt = |c: Option<usize>| c.map(|c| fields[c].to_string()).filter(|s| !s.is_empty());
    Ok(RawRecord {
        line: line_no,
        id: opt(cols.id),
        doc_id: opt(cols.doc_id),
        text: sentence,
        label: label.to_string(),
        split: opt(cols.split)
            .map(|s| parse_split(&s))
            .transpose()
            .map_err(err)?,
        fold: opt(cols.fold)
            .map(|s| parse_fold(&s))
            .transpose()
            .map_err(err)?,
    })
}
