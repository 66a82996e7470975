//! The rows of a TSV file as fields, for the readers that are not relation records
//! (sentence pairs, multi-label documents): the optional header, each line's 1-based
//! number, and a required column resolved by index or header name.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::path::Path;

use super::line_error;
use super::tsv::resolve;
use crate::data::corpus_spec::Column;
use crate::data::DataError;

/// A TSV file read into fields.
pub struct Rows {
    /// The header's fields, when the file has one.
    pub header: Option<Vec<String>>,
    /// `(line number, fields)` of every other line, or that line's error.
    pub lines: Vec<Result<(usize, Vec<String>), DataError>>,
}

impl Rows {
    /// Reads `path` (`display` in messages); `header`: the first line names the columns.
    pub fn read(path: &Path, display: &str, header: bool) -> Result<Rows, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let mut raw_lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        if raw_lines.last().is_some_and(|l| l.is_empty()) {
            raw_lines.pop(); // the newline that ends the file
        }
        let fields = |raw: &[u8], line: usize| -> Result<Vec<String>, DataError> {
            let text = std::str::from_utf8(raw)
                .map_err(|_| line_error(display, line, "not valid UTF-8"))?;
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.trim().is_empty() {
                return Err(line_error(display, line, "empty line"));
            }
            if text.contains('\0') {
                return Err(line_error(display, line, super::NUL_IN_TEXT));
            }
            Ok(text.split('\t').map(str::to_string).collect())
        };
        let mut numbered = raw_lines.into_iter().enumerate().map(|(i, l)| (i + 1, l));
        let header = if header {
            match numbered.next() {
                Some((n, raw)) => Some(fields(raw, n)?),
                None => return Err(line_error(display, 1, "empty file: expected a header line")),
            }
        } else {
            None
        };
        let mut lines: Vec<Result<(usize, Vec<String>), DataError>> = numbered
            .map(|(n, raw)| fields(raw, n).map(|f| (n, f)))
            .collect();
        // Every line has the header's column count, else that of most lines: a stray tab
        // would otherwise shift or drop text without a word.
        let (usual, like) = match &header {
            Some(h) => (Some(h.len()), "as in the header"),
            None => {
                let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
                for (_, f) in lines.iter().flatten() {
                    *counts.entry(f.len()).or_default() += 1;
                }
                let most = counts
                    .iter()
                    .max_by_key(|&(n, lines)| (*lines, Reverse(*n)))
                    .map(|(n, _)| *n);
                (most, "as most lines of the file")
            }
        };
        if let Some(usual) = usual {
            for line in &mut lines {
                if let Ok((n, f)) = line {
                    if f.len() != usual {
                        let found = f.len();
                        *line = Err(line_error(
                            display,
                            *n,
                            format!(
                                "expected {usual} tab-separated columns ({like}), found {found}"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(Rows { header, lines })
    }

    /// The index of a column the layout must give (`layout.<name>`).
    pub fn required(
        &self,
        col: &Option<Column>,
        name: &str,
        display: &str,
    ) -> Result<usize, DataError> {
        self.optional(col, name, display)?
            .ok_or_else(|| DataError::Param {
                param: format!("layout.{name}"),
                message: "required".into(),
            })
    }

    /// The index of a column the layout may give.
    pub fn optional(
        &self,
        col: &Option<Column>,
        name: &str,
        display: &str,
    ) -> Result<Option<usize>, DataError> {
        let header: Option<Vec<&str>> = self
            .header
            .as_ref()
            .map(|h| h.iter().map(String::as_str).collect());
        resolve(col, header.as_deref(), name, display)
    }
}

/// Field `index` of a line, or an error naming file:line and how many fields it has.
pub fn field<'a>(
    fields: &'a [String],
    index: usize,
    file: &str,
    line: usize,
) -> Result<&'a str, DataError> {
    fields.get(index).map(String::as_str).ok_or_else(|| {
        line_error(
            file,
            line,
            format!(
                "expected at least {} tab-separated columns, found {}",
                index + 1,
                fields.len()
            ),
        )
    })
}

/// Field `index` of a line when the layout names one (`None` for an empty field), or the
/// error of [`field`].
pub fn optional_field(
    fields: &[String],
    index: Option<usize>,
    file: &str,
    line: usize,
) -> Result<Option<String>, DataError> {
    match index {
        Some(i) => Ok(Some(field(fields, i, file, line)?.to_string()).filter(|s| !s.is_empty())),
        None => Ok(None),
    }
}
