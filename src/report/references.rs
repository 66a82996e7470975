//! Paper numbers placed beside ours (`reports/references.yaml`): paper → table → row →
//! task → metric, values as printed in the paper.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ReportError;

/// All reference papers, by short id (`su2020`, `su2022`, `peng2020`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct References {
    /// Where the numbers were transcribed from, and conventions.
    #[serde(default)]
    pub notes: Vec<String>,
    pub papers: BTreeMap<String, Paper>,
}

/// One paper's recovered tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paper {
    pub title: String,
    /// Text copy of the paper (relative to the shared folder).
    pub file: String,
    /// How the paper prints its numbers.
    pub unit: Unit,
    #[serde(default)]
    pub notes: Vec<String>,
    pub tables: BTreeMap<String, RefTable>,
    /// Tables that could not be recovered, with why (a lookup there renders "—").
    #[serde(default)]
    pub not_recoverable: BTreeMap<String, String>,
}

/// How printed numbers are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// 81.0 = 81.0 %.
    Percent,
    /// 0.725 = 72.5 %.
    Fraction,
    /// Plain counts (instances, entities).
    Count,
}

/// One table as printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefTable {
    pub title: String,
    /// `[seed]`, `[page] URL`, `[code] ...`, as in REFERENCE-RESULTS.md.
    pub provenance: String,
    /// Overrides the paper's unit (e.g. a table of counts in a paper of percentages).
    #[serde(default)]
    pub unit: Option<Unit>,
    /// Decimals as printed (default: 1 for percent, 3 for fraction, 0 for count).
    #[serde(default)]
    pub decimals: Option<usize>,
    #[serde(default)]
    pub notes: Vec<String>,
    /// Heading (prefix) of this table's section in `shared/docs/REFERENCE-RESULTS.md`, whose
    /// markdown table the numbers were transcribed from (a test re-reads it).
    #[serde(default)]
    pub doc: Option<String>,
    /// The doc's table has rows and columns swapped relative to ours (rows there = tasks).
    #[serde(default)]
    pub doc_transposed: bool,
    /// Column id (`task`, or `task.metric` for a one-number column) → column header as
    /// printed in the doc.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    pub rows: BTreeMap<String, RefRow>,
}

/// One printed row: a label and, per task (column), metric → value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefRow {
    /// The row as printed (or as named in REFERENCE-RESULTS.md).
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// task → metric (`p`, `r`, `f1`, `total`, ...) → value.
    #[serde(flatten)]
    pub cells: BTreeMap<String, BTreeMap<String, RefValue>>,
}

/// A printed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RefValue {
    Number(f64),
    Text(String),
    List(Vec<String>),
}

/// A number looked up in the references, with how to print it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefNumber {
    pub value: f64,
    pub unit: Unit,
    pub decimals: usize,
}

impl RefNumber {
    /// The value as printed in the paper.
    pub fn printed(&self) -> String {
        format!("{:.*}", self.decimals, self.value)
    }

    /// The value in percentage points (for a Δ against our fractions); `None` for counts.
    pub fn percent(&self) -> Option<f64> {
        match self.unit {
            Unit::Percent => Some(self.value),
            Unit::Fraction => Some(self.value * 100.0),
            Unit::Count => None,
        }
    }
}

/// The result of a lookup: a number, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum RefLookup {
    Found(RefNumber),
    /// Not printed or not recoverable; the text says which (for a footnote).
    Absent(String),
}

impl References {
    /// No references (a report without paper numbers).
    pub fn empty() -> Self {
        References::default()
    }

    /// Reads and checks a references YAML file; errors name the file and line.
    pub fn load(path: &Path) -> Result<References, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses references YAML (`origin` names it in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<References, ReportError> {
        serde_yaml::from_str(text).map_err(|e| ReportError::References {
            path: origin.to_path_buf(),
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        })
    }

    /// Looks up `paper / table / row / task / metric`.
    ///
    /// An unknown paper, table or row is an error (a typo in a template must not render as
    /// a quiet "—"); a table listed as not recoverable, or a task or metric the row does not
    /// print, is [`RefLookup::Absent`] with the reason.
    pub fn lookup(
        &self,
        paper: &str,
        table: &str,
        row: &str,
        task: &str,
        metric: &str,
    ) -> Result<RefLookup, ReportError> {
        let unknown = |what: &str, name: &str, known: Vec<&String>| {
            let known: Vec<&str> = known.into_iter().map(String::as_str).collect();
            ReportError::Invalid(format!(
                "references: no {what} `{name}` (known: {})",
                known.join(", ")
            ))
        };
        let p = self
            .papers
            .get(paper)
            .ok_or_else(|| unknown("paper", paper, self.papers.keys().collect()))?;
        if let Some(reason) = p.not_recoverable.get(table) {
            return Ok(RefLookup::Absent(format!(
                "{paper} Table {table} is not recoverable: {reason}"
            )));
        }
        let t = p.tables.get(table).ok_or_else(|| {
            unknown(
                &format!("table in {paper}"),
                table,
                p.tables.keys().chain(p.not_recoverable.keys()).collect(),
            )
        })?;
        let r = t.rows.get(row).ok_or_else(|| {
            unknown(
                &format!("row in {paper} Table {table}"),
                row,
                t.rows.keys().collect(),
            )
        })?;
        let absent = || {
            RefLookup::Absent(format!(
                "{paper} Table {table} prints no {metric} for {task} in row \"{}\"",
                r.label
            ))
        };
        let Some(value) = r.cells.get(task).and_then(|c| c.get(metric)) else {
            return Ok(absent());
        };
        let RefValue::Number(value) = value else {
            return Err(ReportError::Invalid(format!(
                "references: {paper} Table {table} row `{row}` {task}.{metric} is not a number"
            )));
        };
        let unit = t.unit.unwrap_or(p.unit);
        let decimals = t.decimals.unwrap_or(match unit {
            Unit::Percent => 1,
            Unit::Fraction => 3,
            Unit::Count => 0,
        });
        Ok(RefLookup::Found(RefNumber {
            value: *value,
            unit,
            decimals,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
papers:
  demo:
    title: Demo
    file: papers/demo.txt
    unit: percent
    tables:
      III:
        title: main
        provenance: "[seed]"
        rows:
          cls:
            label: BioBERT (CLS)
            ppi: {p: 79.0, r: 83.3, f1: 81.0}
      I:
        title: counts
        provenance: "[seed]"
        unit: count
        rows:
          printed:
            label: as printed
            ppi: {total: 5834}
    not_recoverable:
      "2": "caption only"
"#;

    fn refs() -> References {
        References::parse(YAML, Path::new("refs.yaml")).unwrap()
    }

    #[test]
    fn lookup_found_absent_and_errors() {
        let r = refs();
        let RefLookup::Found(n) = r.lookup("demo", "III", "cls", "ppi", "f1").unwrap() else {
            panic!("expected a number")
        };
        assert_eq!(n.printed(), "81.0");
        assert_eq!(n.percent(), Some(81.0));
        let RefLookup::Found(c) = r.lookup("demo", "I", "printed", "ppi", "total").unwrap() else {
            panic!("expected a count")
        };
        assert_eq!(c.printed(), "5834");
        assert_eq!(c.percent(), None);
        assert!(matches!(
            r.lookup("demo", "III", "cls", "ddi", "f1").unwrap(),
            RefLookup::Absent(_)
        ));
        let RefLookup::Absent(why) = r.lookup("demo", "2", "x", "ppi", "f1").unwrap() else {
            panic!("expected absent")
        };
        assert!(why.contains("not recoverable"), "{why}");
        let err = r.lookup("demo", "III", "sll_atn", "ppi", "f1").unwrap_err();
        assert!(err.to_string().contains("sll_atn"), "{err}");
        assert!(r.lookup("nope", "III", "cls", "ppi", "f1").is_err());
    }

    #[test]
    fn yaml_errors_name_the_line() {
        let bad = "papers:\n  demo:\n    title: x\n    unit: percentage\n";
        let err = References::parse(bad, Path::new("refs.yaml")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("refs.yaml:"), "{text}");
    }

    /// The first markdown table after the line starting with `heading`: header cells and rows.
    fn doc_table<'a>(doc: &'a str, heading: &str) -> (Vec<&'a str>, Vec<Vec<&'a str>>) {
        let lines: Vec<&str> = doc.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.starts_with(heading))
            .unwrap_or_else(|| panic!("no section `{heading}` in the doc"));
        let table: Vec<Vec<&str>> = lines[start..]
            .iter()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                l.trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect()
            })
            .collect();
        (table[0].clone(), table[2..].to_vec())
    }

    fn number(text: &str) -> f64 {
        text.replace('−', "-")
            .replace('+', "")
            .parse()
            .unwrap_or_else(|_| panic!("not a number: `{text}`"))
    }

    /// Every number of every table with a `doc:` section equals the doc's markdown table,
    /// cell for cell, and every cell the doc prints is present.
    #[test]
    fn yaml_matches_reference_results_doc() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let refs = References::load(&root.join("reports/references.yaml")).unwrap();
        let doc_path = root.join("../shared/docs/REFERENCE-RESULTS.md");
        let Ok(doc) = std::fs::read_to_string(&doc_path) else {
            println!("skip: {} not found", doc_path.display());
            return;
        };
        let mut checked = 0;
        for (paper_id, paper) in &refs.papers {
            for (table_id, table) in &paper.tables {
                let Some(heading) = &table.doc else { continue };
                let (header, rows) = doc_table(&doc, heading);
                for (row_id, row) in &table.rows {
                    let here = format!("{paper_id} {table_id} {row_id}");
                    for (task, metrics) in &row.cells {
                        for metric in metrics.keys() {
                            let covered = table.columns.contains_key(task)
                                || table.columns.contains_key(&format!("{task}.{metric}"));
                            assert!(covered, "{here}: {task}.{metric} has no doc column");
                        }
                    }
                    for (column, printed) in &table.columns {
                        let (r, c) = if table.doc_transposed {
                            (printed.as_str(), row.label.as_str())
                        } else {
                            (row.label.as_str(), printed.as_str())
                        };
                        let doc_row = rows
                            .iter()
                            .find(|cells| cells[0] == r)
                            .unwrap_or_else(|| panic!("{here}: no doc row `{r}`"));
                        let col = header
                            .iter()
                            .position(|h| *h == c)
                            .unwrap_or_else(|| panic!("{here}: no doc column `{c}`"));
                        let cell = doc_row[col];
                        let (task, metrics): (&str, Vec<&str>) = match column.split_once('.') {
                            Some((task, metric)) => (task, vec![metric]),
                            None => (column.as_str(), vec!["p", "r", "f1"]),
                        };
                        let ours = row.cells.get(task);
                        if cell == "–" {
                            assert!(
                                metrics
                                    .iter()
                                    .all(|m| ours.and_then(|o| o.get(*m)).is_none()),
                                "{here}: the doc prints no {column}, the YAML has one"
                            );
                            continue;
                        }
                        let printed: Vec<&str> = cell.split('/').map(str::trim).collect();
                        assert_eq!(printed.len(), metrics.len(), "{here}: cell `{cell}`");
                        for (m, text) in metrics.iter().zip(printed) {
                            let value = ours.and_then(|o| o.get(*m));
                            assert_eq!(
                                value,
                                Some(&RefValue::Number(number(text))),
                                "{here}: {task}.{m} (doc: `{cell}`)"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        // su2020 III+IV+VI (99), su2022 6 (90), Peng 2-6 (101), Meng 1 (17).
        assert!(checked > 300, "only {checked} numbers checked");
        println!("{checked} reference numbers match REFERENCE-RESULTS.md");
    }
}
