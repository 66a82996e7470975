//! Entity mention replacement: the two mentions of a relation candidate become the task's
//! tags (`@PROTEIN$`, `@DRUG$`, ...). When the two mentions overlap (nested mentions such as
//! "erythropoietin" inside "erythropoietin (EPO) receptor"), their union is replaced by one
//! overlap tag (`@PROTEIN-PROTEIN$`, as BLURB's `@DRUG-DRUG$` / `@CHEM-GENE$`).

use serde::{Deserialize, Serialize};

/// A mention as a half-open range `[start, end)` of character (Unicode scalar) offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    fn overlaps(self, other: Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// An inline entity marker pair, e.g. `[[` … `]]` for chemicals in SciBERT's ChemProt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub open: String,
    pub close: String,
    /// Tag that replaces the marked mention (markers included).
    pub tag: String,
}

/// The default overlap tag of two tags: `@A$`, `@B$` → `@A-B$`.
pub fn default_overlap_tag(tag1: &str, tag2: &str) -> String {
    fn inner(tag: &str) -> &str {
        let t = tag.strip_prefix('@').unwrap_or(tag);
        t.strip_suffix('$').unwrap_or(t)
    }
    format!("@{}-{}$", inner(tag1), inner(tag2))
}

/// Byte offset of character offset `char_pos` in `text` (`text.len()` at the end).
fn byte_offset(text: &str, char_pos: usize) -> Option<usize> {
    text.char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .nth(char_pos)
}

/// Replaces mention `e1` by `tag1` and `e2` by `tag2` (character spans); if they overlap,
/// replaces their union by `overlap_tag`. Errors describe what is wrong with the spans.
pub fn replace_spans(
    text: &str,
    e1: Span,
    e2: Span,
    tags: (&str, &str),
    overlap_tag: &str,
) -> Result<String, String> {
    let n_chars = text.chars().count();
    for (name, s) in [("entity 1", e1), ("entity 2", e2)] {
        if s.start >= s.end || s.end > n_chars {
            return Err(format!(
                "{name} span [{}, {}) is empty or outside the sentence ({n_chars} characters)",
                s.start, s.end
            ));
        }
    }
    let to_bytes = |s: Span| -> Result<(usize, usize), String> {
        match (byte_offset(text, s.start), byte_offset(text, s.end)) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(format!(
                "span [{}, {}) outside the sentence",
                s.start, s.end
            )),
        }
    };
    let regions = if e1.overlaps(e2) {
        let union = Span {
            start: e1.start.min(e2.start),
            end: e1.end.max(e2.end),
        };
        vec![(to_bytes(union)?, overlap_tag)]
    } else {
        vec![(to_bytes(e1)?, tags.0), (to_bytes(e2)?, tags.1)]
    };
    Ok(splice(text, regions))
}

/// Replaces byte regions (non-overlapping) by their tags.
fn splice(text: &str, mut regions: Vec<((usize, usize), &str)>) -> String {
    regions.sort_by_key(|((start, _), _)| *start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for ((start, end), tag) in regions {
        out.push_str(&text[at..start]);
        out.push_str(tag);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Replaces the two marked mentions (markers included) by their markers' tags; nested or
/// overlapping marked regions are replaced together by `overlap_tag` (default: built from
/// the two tags in marker order). Exactly two marked regions must be present.
pub fn replace_markers(
    text: &str,
    markers: &[Marker],
    overlap_tag: Option<&str>,
) -> Result<String, String> {
    let mut regions: Vec<((usize, usize), &str)> = Vec::new();
    for m in markers {
        let mut from = 0;
        while let Some(rel) = text[from..].find(&m.open) {
            let start = from + rel;
            let after_open = start + m.open.len();
            let Some(rel_close) = text[after_open..].find(&m.close) else {
                return Err(format!(
                    "marker `{}` opened but never closed with `{}`",
                    m.open, m.close
                ));
            };
            let end = after_open + rel_close + m.close.len();
            regions.push(((start, end), m.tag.as_str()));
            from = end;
        }
    }
    if regions.len() != 2 {
        let names: Vec<String> = markers
            .iter()
            .map(|m| format!("{}…{}", m.open, m.close))
            .collect();
        return Err(format!(
            "expected exactly 2 marked mentions ({}), found {}",
            names.join(", "),
            regions.len()
        ));
    }
    let (((s1, e1), t1), ((s2, e2), t2)) = (regions[0], regions[1]);
    if s1 < e2 && s2 < e1 {
        let tag = overlap_tag
            .map(str::to_string)
            .unwrap_or_else(|| default_overlap_tag(t1, t2));
        return Ok(splice(text, vec![((s1.min(s2), e1.max(e2)), tag.as_str())]));
    }
    Ok(splice(text, regions))
}

/// Replaces line breaks and tabs by spaces, so each text is one line in any TSV export.
pub fn flatten_whitespace(text: &str) -> String {
    text.chars()
        .map(|c| {
            if matches!(c, '\r' | '\n' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_spans_become_two_tags_in_text_order() {
        let text = "Id3 binds ITF-2b.";
        let out = replace_spans(
            text,
            Span { start: 10, end: 16 },
            Span { start: 0, end: 3 },
            ("@A$", "@B$"),
            "@A-B$",
        );
        assert_eq!(out.as_deref(), Ok("@B$ binds @A$."));
    }

    #[test]
    fn nested_spans_become_one_overlap_tag() {
        let text = "the erythropoietin (EPO) receptor binds";
        let inner = Span { start: 4, end: 18 };
        let outer = Span { start: 4, end: 33 };
        let out = replace_spans(
            text,
            inner,
            outer,
            ("@PROTEIN$", "@PROTEIN$"),
            "@PROTEIN-PROTEIN$",
        );
        assert_eq!(out.as_deref(), Ok("the @PROTEIN-PROTEIN$ binds"));
    }

    #[test]
    fn spans_are_characters_not_bytes() {
        let text = "α-actinin binds β-catenin";
        let out = replace_spans(
            text,
            Span { start: 0, end: 9 },
            Span { start: 16, end: 25 },
            ("@P$", "@P$"),
            "@P-P$",
        );
        assert_eq!(out.as_deref(), Ok("@P$ binds @P$"));
    }

    #[test]
    fn out_of_range_span_is_an_error() {
        let err = replace_spans(
            "abc",
            Span { start: 1, end: 9 },
            Span { start: 0, end: 1 },
            ("@A$", "@A$"),
            "@A-A$",
        );
        assert!(err.unwrap_err().contains("outside the sentence"));
    }

    #[test]
    fn markers_of_scibert_chemprot() {
        let markers = vec![
            Marker {
                open: "[[".into(),
                close: "]]".into(),
                tag: "@CHEMICAL$".into(),
            },
            Marker {
                open: "<<".into(),
                close: ">>".into(),
                tag: "@GENE$".into(),
            },
        ];
        let text = "<< EGFR >> inhibitors include [[ gefitinib ]] (Iressa).";
        assert_eq!(
            replace_markers(text, &markers, None).as_deref(),
            Ok("@GENE$ inhibitors include @CHEMICAL$ (Iressa).")
        );
        let nested = "a [[ << x >> y ]] b";
        assert_eq!(
            replace_markers(nested, &markers, Some("@CHEM-GENE$")).as_deref(),
            Ok("a @CHEM-GENE$ b")
        );
        assert_eq!(
            replace_markers(nested, &markers, None).as_deref(),
            Ok("a @CHEMICAL-GENE$ b")
        );
        assert!(replace_markers("no marks", &markers, None)
            .unwrap_err()
            .contains("found 0"));
    }
}
