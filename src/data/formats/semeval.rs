//! SemEval-2010 Task 8 (`TRAIN_FILE.TXT`, `TEST_FILE_FULL.TXT`): records of four lines,
//! CRLF line ends —
//!
//! ```text
//! 1<TAB>"The system … an arrayed <e1>configuration</e1> of antenna <e2>elements</e2>."
//! Component-Whole(e2,e1)
//! Comment: Not a collection: there is structure here, organisation.
//! <blank>
//! ```
//!
//! The two nominals are kept and each is preceded by its tag: `… an arrayed @E1$
//! configuration of antenna @E2$ elements.` (the tag marks where the `<eK>` span starts, so
//! `pairwise_att` and `word_pair` find the pair; `entities: {style: markers, …}` replaces
//! the marked spans by tags instead). The label is the directed one (`Cause-Effect(e1,e2)`,
//! `Other`); the record's id is the file's.

use std::path::Path;

use super::{line_error, RawRecord, ReadConfig, ReadOutput};
use crate::data::corpus_spec::EntityStyle;
use crate::data::{entity, DataError};

/// Tag put before the first nominal.
pub const E1_TAG: &str = "@E1$";
/// Tag put before the second nominal.
pub const E2_TAG: &str = "@E2$";
/// The label of a pair in none of the nine relations.
pub const OTHER: &str = "Other";

/// `<e1>X</e1>` → `@E1$ X`, `<e2>Y</e2>` → `@E2$ Y`; each marker pair must occur exactly
/// once, opened before it is closed.
pub fn tag_nominals(sentence: &str) -> Result<String, String> {
    let mut text = sentence.to_string();
    for (k, tag) in [(1, E1_TAG), (2, E2_TAG)] {
        let open = format!("<e{k}>");
        let close = format!("</e{k}>");
        let (n_open, n_close) = (text.matches(&open).count(), text.matches(&close).count());
        if n_open != 1 || n_close != 1 {
            return Err(format!(
                "expected one `{open}…{close}` span, found {n_open} `{open}` and {n_close} `{close}`"
            ));
        }
        let (start, end) = (text.find(&open), text.find(&close));
        if let (Some(s), Some(e)) = (start, end) {
            if e < s {
                return Err(format!("`{close}` before `{open}`"));
            }
        }
        text = text
            .replacen(&open, &format!("{tag} "), 1)
            .replacen(&close, "", 1);
    }
    Ok(text)
}

/// Reads one SemEval file. A malformed record is an `Err` naming its first line.
pub fn read(path: &Path, display: &str, config: &ReadConfig) -> Result<ReadOutput, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| line_error(display, 1, "not valid UTF-8"))?;
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let mut out = ReadOutput::default();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        // a record: the sentence line, the label, the comment, then blank lines
        let start = i;
        let mut end = i;
        while end < lines.len() && !lines[end].trim().is_empty() {
            end += 1;
        }
        out.records
            .push(parse_record(&lines[start..end], start + 1, display, config));
        i = end;
    }
    Ok(out)
}

fn parse_record(
    record: &[&str],
    line_no: usize,
    file: &str,
    config: &ReadConfig,
) -> Result<RawRecord, DataError> {
    let err = |m: String| line_error(file, line_no, m);
    let (id, quoted) = record[0]
        .split_once('\t')
        .ok_or_else(|| err("expected `<id><TAB>\"<sentence>\"`".into()))?;
    let id = id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(err(format!("id `{id}` is not a number")));
    }
    let sentence = quoted
        .trim()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| err("the sentence is not in double quotes".into()))?;
    let label = record
        .get(1)
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| line_error(file, line_no + 1, "no label line after the sentence"))?;
    if label != OTHER && !is_directed_relation(label) {
        return Err(line_error(
            file,
            line_no + 1,
            format!("label `{label}` is neither `Other` nor `Relation(e1,e2)` / `Relation(e2,e1)`"),
        ));
    }
    if let Some(extra) = record.get(2) {
        if !extra.starts_with("Comment:") {
            return Err(line_error(
                file,
                line_no + 2,
                format!("expected `Comment: …`, found `{extra}`"),
            ));
        }
    }
    let text = match &config.tagging.style {
        EntityStyle::Markers { markers } => {
            entity::replace_markers(sentence, markers, config.tagging.overlap_tag.as_deref())
                .map_err(err)?
        }
        _ => tag_nominals(sentence).map_err(err)?,
    };
    Ok(RawRecord {
        line: line_no,
        id: Some(id.to_string()),
        doc_id: None,
        text,
        label: label.to_string(),
        split: None,
        fold: None,
    })
}

/// `Name(e1,e2)` or `Name(e2,e1)`.
fn is_directed_relation(label: &str) -> bool {
    ["(e1,e2)", "(e2,e1)"]
        .iter()
        .any(|d| label.strip_suffix(d).is_some_and(|name| !name.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::corpus_spec::Layout;
    use crate::data::formats::Tagging;

    fn config() -> ReadConfig {
        ReadConfig {
            layout: Layout::default(),
            tagging: Tagging {
                style: EntityStyle::Tagged,
                tag: "@ENTITY$".into(),
                overlap_tag: None,
            },
        }
    }

    fn read_text(text: &str) -> ReadOutput {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("T.TXT");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        read(&path, "T.TXT", &config()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn crlf_records_keep_the_nominals_after_their_tags() {
        let out = read_text(
            "1\t\"An arrayed <e1>configuration</e1> of antenna <e2>elements</e2>.\"\r\n\
             Component-Whole(e2,e1)\r\nComment: structure.\r\n\r\n\
             2\t\"The <e1>child</e1> was wrapped into the <e2>cradle</e2>.\"\r\nOther\r\nComment:\r\n\r\n",
        );
        let records: Vec<RawRecord> = out.records.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].text,
            "An arrayed @E1$ configuration of antenna @E2$ elements."
        );
        assert_eq!(records[0].label, "Component-Whole(e2,e1)");
        assert_eq!(records[0].id.as_deref(), Some("1"));
        assert_eq!((records[1].line, records[1].label.as_str()), (5, "Other"));
    }

    #[test]
    fn a_record_without_e1_names_its_line() {
        let out = read_text(
            "1\t\"A <e1>b</e1> c <e2>d</e2>.\"\nOther\nComment:\n\n\
             2\t\"No first nominal <e2>here</e2>.\"\nOther\nComment:\n\n",
        );
        assert!(out.records[0].is_ok());
        let e = out.records[1].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("T.TXT:5:") && e.contains("`<e1>`"), "{e}");
        let bad_label = read_text("1\t\"A <e1>b</e1> c <e2>d</e2>.\"\nCause-Effect\n\n");
        let e = bad_label.records[0].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("T.TXT:2:"), "{e}");
    }
}
