//! CoNLL/IOB2 NER files: `token<TAB>tag` per line (more columns: first is the token, last
//! the tag), a blank line between sentences, `-DOCSTART-` lines as document separators
//! (not tokens). Tags must be IOB2: `O`, `B-T`, or `I-T` right after `B-T`/`I-T`.

use std::path::Path;

use super::line_error;
use crate::data::DataError;

/// One sentence as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSentence {
    /// 1-based line of the first token.
    pub line: usize,
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
    /// 0-based index of the `-DOCSTART-` document, when the file has any.
    pub doc: Option<usize>,
}

/// Checks that `tag` may follow `prev` in IOB2.
fn check_tag(prev: Option<&str>, tag: &str) -> Result<(), String> {
    if tag == "O" {
        return Ok(());
    }
    let (kind, ty) = tag.split_at(tag.find('-').unwrap_or(0).min(tag.len()));
    let ty = ty.strip_prefix('-').unwrap_or("");
    if ty.is_empty() || !matches!(kind, "B" | "I") {
        return Err(format!("tag `{tag}` is not O, B-TYPE or I-TYPE"));
    }
    if kind == "I" {
        let continues = prev.is_some_and(|p| p == format!("B-{ty}") || p == format!("I-{ty}"));
        if !continues {
            return Err(format!(
                "`{tag}` follows `{}`, not B-{ty}/I-{ty} (not IOB2)",
                prev.unwrap_or("the sentence start")
            ));
        }
    }
    Ok(())
}

type Read = Vec<Result<RawSentence, DataError>>;

/// Ends the current sentence (or the malformed one).
fn flush(cur: &mut Option<RawSentence>, broken: &mut Option<DataError>, out: &mut Read) {
    match (cur.take(), broken.take()) {
        (_, Some(e)) => out.push(Err(e)),
        (Some(s), None) => out.push(Ok(s)),
        (None, None) => {}
    }
}

/// Reads all sentences of a CoNLL file; a malformed sentence is an `Err` naming the
/// offending line.
pub fn read(path: &Path, display: &str) -> Result<Read, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let has_docs = text.lines().any(|l| l.starts_with("-DOCSTART-"));
    let mut doc: Option<usize> = None;
    let mut out = Vec::new();
    let mut current: Option<RawSentence> = None;
    let mut broken: Option<DataError> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            flush(&mut current, &mut broken, &mut out);
            continue;
        }
        if line.starts_with("-DOCSTART-") {
            flush(&mut current, &mut broken, &mut out);
            doc = Some(doc.map_or(0, |d| d + 1));
            continue;
        }
        if broken.is_some() {
            continue; // rest of a malformed sentence
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let sentence = current.get_or_insert_with(|| RawSentence {
            line: line_no,
            tokens: Vec::new(),
            tags: Vec::new(),
            doc: if has_docs {
                Some(doc.unwrap_or(0))
            } else {
                None
            },
        });
        let problem = if fields.len() < 2 {
            Some(format!(
                "expected `token<TAB>tag`, found {} column(s)",
                fields.len()
            ))
        } else if fields[0].is_empty() {
            Some("empty token".to_string())
        } else if line.contains('\0') {
            Some(super::NUL_IN_TEXT.to_string())
        } else {
            let tag = fields[fields.len() - 1].trim();
            check_tag(sentence.tags.last().map(String::as_str), tag).err()
        };
        match problem {
            Some(m) => broken = Some(line_error(display, line_no, m)),
            None => {
                sentence.tokens.push(fields[0].to_string());
                sentence
                    .tags
                    .push(fields[fields.len() - 1].trim().to_string());
            }
        }
    }
    flush(&mut current, &mut broken, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::check_tag;

    #[test]
    fn iob2_rules() {
        assert!(check_tag(None, "O").is_ok());
        assert!(check_tag(None, "B-Disease").is_ok());
        assert!(check_tag(Some("B-Disease"), "I-Disease").is_ok());
        assert!(check_tag(Some("I-Disease"), "I-Disease").is_ok());
        assert!(check_tag(Some("O"), "I-Disease")
            .unwrap_err()
            .contains("not IOB2"));
        assert!(check_tag(Some("B-Chemical"), "I-Disease").is_err());
        assert!(check_tag(None, "I-Disease").is_err());
        assert!(check_tag(None, "X-Disease").is_err());
        assert!(check_tag(None, "B-").is_err());
    }
}
