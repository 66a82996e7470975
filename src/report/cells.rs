//! Table cells as templates render them: our mean ± std (percent, one decimal), the
//! paper's value as printed, the difference Δ, and "—" with a footnote for anything missing
//! (never 0).

use std::fmt;
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};

use super::references::RefLookup;
use crate::metrics::MeanStd;

/// Why a footnote was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// A cell with no result: its stage has not run or is not in the cache.
    MissingResult,
    /// A mean over fewer results than expected.
    Incomplete,
    /// A paper value that is not printed or not recoverable.
    Reference,
    /// Anything else the template could not fill.
    Other,
}

/// One footnote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Footnote {
    pub kind: NoteKind,
    pub text: String,
}

/// Footnotes collected while a report renders: numbered in order of first use, one number
/// per distinct text.
#[derive(Debug, Default)]
pub struct Footnotes {
    state: Mutex<FootnoteState>,
}

#[derive(Debug, Default)]
struct FootnoteState {
    notes: Vec<Footnote>,
    emitted: usize,
}

impl Footnotes {
    fn state(&self) -> std::sync::MutexGuard<'_, FootnoteState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The number of the footnote with `text` (a new one if the text is new).
    pub fn mark(&self, kind: NoteKind, text: &str) -> usize {
        let mut s = self.state();
        match s.notes.iter().position(|n| n.text == text) {
            Some(i) => i + 1,
            None => {
                s.notes.push(Footnote {
                    kind,
                    text: text.to_string(),
                });
                s.notes.len()
            }
        }
    }

    /// Markdown definitions of the footnotes not yet emitted (and marks them emitted).
    pub fn take_definitions(&self) -> String {
        let mut s = self.state();
        let start = s.emitted;
        s.emitted = s.notes.len();
        s.notes[start..]
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[^{}]: {}\n", start + i + 1, n.text))
            .collect()
    }

    /// Every footnote, in number order.
    pub fn all(&self) -> Vec<Footnote> {
        self.state().notes.clone()
    }
}

/// "—" with a reference to the footnote explaining why.
pub fn missing(notes: &Footnotes, kind: NoteKind, why: &str) -> String {
    format!("—[^{}]", notes.mark(kind, why))
}

/// A fraction as a percentage with `decimals` decimals (0.8123 → "81.2").
pub fn percent(fraction: f64, decimals: usize) -> String {
    no_negative_zero(format!("{:.*}", decimals, fraction * 100.0))
}

/// A difference in percentage points with its sign ("+1.2", "−0.4", "0.0").
pub fn signed_points(points: f64) -> String {
    let text = no_negative_zero(format!("{points:.1}"));
    if text == "0.0" {
        text
    } else if let Some(abs) = text.strip_prefix('-') {
        format!("−{abs}")
    } else {
        format!("+{text}")
    }
}

pub(crate) fn no_negative_zero(text: String) -> String {
    match text.strip_prefix('-') {
        Some(abs) if abs.chars().all(|c| c == '0' || c == '.') => abs.to_string(),
        _ => text,
    }
}

/// One of our cells: mean ± sample std over the rows it aggregates (e.g. seeds).
#[derive(Debug)]
pub struct OurCell {
    /// `None`: no row had the metric.
    pub spread: Option<MeanStd>,
    pub values: Vec<f64>,
    /// Which cell, e.g. `` `task=ddi, head=cls` `` (for footnotes).
    pub what: String,
    /// The metric asked for (a dotted path into metrics.json).
    pub metric: String,
    /// Rows that matched the cell's filters (with or without the metric).
    pub matched: usize,
    /// Footnotes the number carries (fewer results than expected, nothing predicted
    /// positive, ...).
    pub remarks: Vec<(NoteKind, String)>,
    pub notes: Arc<Footnotes>,
}

impl OurCell {
    /// The cell text: "81.2 ± 0.4", "81.2" (one value), or "—[^n]".
    pub fn text(&self) -> String {
        let Some(s) = self.spread else {
            if self.matched > 0 {
                return missing(
                    &self.notes,
                    NoteKind::Other,
                    &format!("The results for {} have no `{}`.", self.what, self.metric),
                );
            }
            return missing(
                &self.notes,
                NoteKind::MissingResult,
                &format!(
                    "No result for {}: its stage has not run (or is not in this cache).",
                    self.what
                ),
            );
        };
        let mut text = percent(s.mean, 1);
        if let Some(std) = s.std {
            text.push_str(&format!(" ± {}", percent(std, 1)));
        }
        for (kind, why) in &self.remarks {
            text.push_str(&format!("[^{}]", self.notes.mark(*kind, why)));
        }
        text
    }
}

impl Object for OurCell {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let s = self.spread;
        match key.as_str()? {
            "mean" => Some(s.map(|s| s.mean).into()),
            "std" => Some(s.and_then(|s| s.std).into()),
            "n" => Some(s.map_or(0, |s| s.n).into()),
            "missing" => Some(s.is_none().into()),
            "values" => Some(Value::from(self.values.clone())),
            "text" => Some(self.text().into()),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["mean", "std", "n", "missing", "values", "text"])
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A paper's value as printed, or "—" with a footnote saying why there is none.
#[derive(Debug)]
pub struct RefCell {
    pub lookup: RefLookup,
    pub notes: Arc<Footnotes>,
}

impl RefCell {
    pub fn text(&self) -> String {
        match &self.lookup {
            RefLookup::Found(n) => n.printed(),
            RefLookup::Absent(why) => missing(&self.notes, NoteKind::Reference, &format!("{why}.")),
        }
    }

    /// The value in percentage points, if there is one.
    pub fn percent(&self) -> Option<f64> {
        match &self.lookup {
            RefLookup::Found(n) => n.percent(),
            RefLookup::Absent(_) => None,
        }
    }
}

impl Object for RefCell {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "value" => Some(match &self.lookup {
                RefLookup::Found(n) => n.value.into(),
                RefLookup::Absent(_) => Value::from(()),
            }),
            "percent" => Some(self.percent().into()),
            "missing" => Some(matches!(self.lookup, RefLookup::Absent(_)).into()),
            "text" => Some(self.text().into()),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["value", "percent", "missing", "text"])
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Δ = ours − paper in percentage points, one decimal with sign; "—[^n]" (the missing
/// side's footnote) when either side is missing.
pub fn delta(ours: &OurCell, theirs: &RefCell) -> String {
    let Some(s) = ours.spread else {
        return ours.text();
    };
    match theirs.percent() {
        Some(paper) => signed_points(s.mean * 100.0 - paper),
        None if matches!(theirs.lookup, RefLookup::Absent(_)) => theirs.text(),
        None => missing(
            &ours.notes,
            NoteKind::Other,
            "A difference to a count is not a percentage-point Δ.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::references::{RefNumber, Unit};

    #[test]
    fn formatting() {
        assert_eq!(percent(0.8123, 1), "81.2");
        assert_eq!(percent(-0.0001, 1), "0.0");
        assert_eq!(signed_points(1.23), "+1.2");
        assert_eq!(signed_points(-0.44), "−0.4");
        assert_eq!(signed_points(-0.04), "0.0");
        assert_eq!(signed_points(0.0), "0.0");
    }

    #[test]
    fn footnotes_are_numbered_once_per_text() {
        let notes = Footnotes::default();
        assert_eq!(notes.mark(NoteKind::Other, "a"), 1);
        assert_eq!(notes.mark(NoteKind::Other, "b"), 2);
        assert_eq!(notes.mark(NoteKind::Other, "a"), 1);
        assert_eq!(notes.take_definitions(), "[^1]: a\n[^2]: b\n");
        assert_eq!(notes.take_definitions(), "");
        notes.mark(NoteKind::Other, "c");
        assert_eq!(notes.take_definitions(), "[^3]: c\n");
    }

    #[test]
    fn cells_render_mean_std_missing_and_delta() {
        let notes = Arc::new(Footnotes::default());
        let ours = OurCell {
            spread: MeanStd::of(&[0.80, 0.82]),
            values: vec![0.80, 0.82],
            what: "x".into(),
            metric: "f1".into(),
            matched: 2,
            remarks: Vec::new(),
            notes: notes.clone(),
        };
        assert_eq!(ours.text(), "81.0 ± 1.4");
        let paper = RefCell {
            lookup: RefLookup::Found(RefNumber {
                value: 80.5,
                unit: Unit::Percent,
                decimals: 1,
            }),
            notes: notes.clone(),
        };
        assert_eq!(delta(&ours, &paper), "+0.5");
        let none = OurCell {
            spread: None,
            values: vec![],
            what: "task=ddi, head=cls".into(),
            metric: "f1".into(),
            matched: 0,
            remarks: Vec::new(),
            notes: notes.clone(),
        };
        assert_eq!(none.text(), "—[^1]");
        assert_eq!(delta(&none, &paper), "—[^1]");
        let absent = RefCell {
            lookup: RefLookup::Absent("not printed".into()),
            notes: notes.clone(),
        };
        assert_eq!(delta(&ours, &absent), "—[^2]");
        let fraction = RefCell {
            lookup: RefLookup::Found(RefNumber {
                value: 0.8,
                unit: Unit::Fraction,
                decimals: 3,
            }),
            notes: notes.clone(),
        };
        assert_eq!(fraction.text(), "0.800");
        assert_eq!(delta(&ours, &fraction), "+1.0");
        let all = notes.all();
        assert!(all[0].text.contains("task=ddi, head=cls"));
        assert_eq!(all[0].kind, NoteKind::MissingResult);
        assert_eq!(all[1].kind, NoteKind::Reference);
        let no_metric = OurCell {
            spread: None,
            values: vec![],
            what: "`task=ddi`".into(),
            metric: "pooled.f1".into(),
            matched: 3,
            remarks: Vec::new(),
            notes: notes.clone(),
        };
        assert_eq!(no_metric.text(), "—[^3]");
        assert_eq!(
            notes.all()[2].text,
            "The results for `task=ddi` have no `pooled.f1`."
        );
    }
}
