//! Sentence pairs with a similarity score (`format: pair_tsv`, BIOSSES): the two sentences
//! in two columns (`layout.text`, `layout.text_b`), or in one column split on a literal
//! `layout.pair_separator` (BLURB's `s1: <a> s2: <b>`: separator ` s2: `, `strip_prefix:
//! "s1: "`); the score in `layout.score`, a number (else an error at file:line).

use std::path::Path;

use super::line_error;
use super::rows::{field, optional_field, Rows};
use crate::data::corpus_spec::Layout;
use crate::data::DataError;

/// One pair as read.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPair {
    /// 1-based line number.
    pub line: usize,
    pub id: Option<String>,
    pub doc_id: Option<String>,
    pub text_a: String,
    pub text_b: String,
    pub score: f64,
}

/// Reads the pairs of a TSV file (`display` names it in messages).
pub fn read(
    path: &Path,
    display: &str,
    layout: &Layout,
) -> Result<Vec<Result<RawPair, DataError>>, DataError> {
    let rows = Rows::read(path, display, layout.header.unwrap_or(true))?;
    let text = rows.required(&layout.text, "text", display)?;
    let text_b = rows.optional(&layout.text_b, "text_b", display)?;
    let score = rows.required(&layout.score, "score", display)?;
    let id = rows.optional(&layout.id, "id", display)?;
    let doc_id = rows.optional(&layout.doc_id, "doc_id", display)?;
    Ok(rows
        .lines
        .into_iter()
        .map(|row| {
            let (line, fields) = row?;
            let get = |i: usize| field(&fields, i, display, line);
            let err = |m: String| line_error(display, line, m);
            let first = get(text)?;
            let first = match &layout.strip_prefix {
                Some(prefix) => first.strip_prefix(prefix.as_str()).ok_or_else(|| {
                    err(format!(
                        "the text does not start with `{prefix}` (layout.strip_prefix)"
                    ))
                })?,
                None => first,
            };
            let (a, b) = match (&layout.pair_separator, text_b) {
                (Some(sep), _) => first.split_once(sep.as_str()).ok_or_else(|| {
                    err(format!(
                        "no `{sep}` (layout.pair_separator) between the two sentences"
                    ))
                })?,
                (None, Some(col)) => (first, get(col)?),
                (None, None) => {
                    return Err(DataError::Param {
                        param: "layout".into(),
                        message: "format pair_tsv needs `layout.text_b` or `layout.pair_separator`"
                            .into(),
                    })
                }
            };
            let (a, b) = (a.trim(), b.trim());
            if a.is_empty() || b.is_empty() {
                return Err(err("empty sentence".into()));
            }
            let raw_score = get(score)?.trim();
            let value: f64 = raw_score
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| err(format!("score `{raw_score}` is not a number")))?;
            let opt = |c: Option<usize>| optional_field(&fields, c, display, line);
            Ok(RawPair {
                line,
                id: opt(id)?,
                doc_id: opt(doc_id)?,
                text_a: a.to_string(),
                text_b: b.to_string(),
                score: value,
            })
        })
        .collect())
}
