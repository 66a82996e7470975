//! Reading abstracts (title + abstract, with an id and, where the format carries them, the
//! entity types annotated in them) from the formats PubMed text comes in: PubMed baseline XML
//! (`.xml`, `.xml.gz`), JSON lines, tab-separated values with a header line, plain text with
//! one abstract per line, and PubTator.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One abstract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// PMID (or `file:line` where the format has none).
    pub id: String,
    pub title: String,
    pub abstract_text: String,
    /// Normalised entity types annotated in the document (see [`normalise_entity_type`]);
    /// `None` when the format carries no annotations.
    pub entity_types: Option<BTreeSet<String>>,
}

impl Document {
    /// Title and abstract on one line, whitespace runs collapsed.
    pub fn text(&self) -> String {
        format!("{} {}", self.title, self.abstract_text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A file format of abstracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// By file name: `.xml(.gz)` PubMed XML, `.jsonl(.gz)` JSON lines, `.tsv(.gz)` TSV when
    /// its header names the title or abstract column, `.pubtator` PubTator, `.txt(.gz)`
    /// PubTator when its first line is `PMID|t|…`, else plain text; other files (and
    /// `README*`, `LICENSE*`, `SOURCE*` documentation files) are skipped.
    #[default]
    Auto,
    PubmedXml,
    Jsonl,
    /// Tab-separated values, first line a header naming the columns of [`RecordFields`].
    Tsv,
    Text,
    Pubtator,
}

/// Field names of JSON-lines records and column names of TSV files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordFields {
    #[serde(default = "default_id_field")]
    pub id: String,
    #[serde(default = "default_title_field")]
    pub title: String,
    #[serde(default = "default_abstract_field")]
    pub abstract_text: String,
    /// Annotated entity types: a list of names, or one comma-separated string; read when
    /// the field or column exists.
    #[serde(default = "default_entity_types_field")]
    pub entity_types: String,
}

fn default_id_field() -> String {
    "pmid".into()
}
fn default_title_field() -> String {
    "title".into()
}
fn default_abstract_field() -> String {
    "abstract".into()
}
fn default_entity_types_field() -> String {
    "entity_types".into()
}

impl Default for RecordFields {
    fn default() -> Self {
        RecordFields {
            id: default_id_field(),
            title: default_title_field(),
            abstract_text: default_abstract_field(),
            entity_types: default_entity_types_field(),
        }
    }
}

/// Why a file of abstracts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DocumentError + '_ {
    move |source| DocumentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The text of `path`, gunzipped when its name ends in `.gz`.
fn read_text(path: &Path) -> Result<String, DocumentError> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::MultiGzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(io_error(path))?;
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .map_err(io_error(path))?;
    }
    Ok(text)
}

/// The format of `path` under `format` (`None`: not a file of abstracts, skipped).
pub fn format_of(
    path: &Path,
    format: Format,
    fields: &RecordFields,
) -> Result<Option<Format>, DocumentError> {
    if format != Format::Auto {
        return Ok(Some(format));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let documentation = ["readme", "license", "licence", "source"]
        .iter()
        .any(|d| name.starts_with(d));
    let found = if documentation {
        None
    } else if name.ends_with(".xml") {
        Some(Format::PubmedXml)
    } else if name.ends_with(".jsonl") {
        Some(Format::Jsonl)
    } else if name.ends_with(".tsv") {
        let text = read_text(path)?;
        let header = text.lines().next().unwrap_or("");
        let names_text_column = header
            .split('\t')
            .any(|c| c == fields.title || c == fields.abstract_text);
        names_text_column.then_some(Format::Tsv)
    } else if name.ends_with(".pubtator") {
        Some(Format::Pubtator)
    } else if name.ends_with(".txt") {
        let text = read_text(path)?;
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Some(if pubtator_field(first).is_some() {
            Format::Pubtator
        } else {
            Format::Text
        })
    } else {
        None
    };
    Ok(found)
}

/// Reads every document of `path` in `format` (not [`Format::Auto`]).
pub fn read(
    path: &Path,
    format: Format,
    fields: &RecordFields,
) -> Result<Vec<Document>, DocumentError> {
    let text = read_text(path)?;
    match format {
        Format::PubmedXml => pubmed_xml(path, &text),
        Format::Jsonl => jsonl(path, &text, fields),
        Format::Tsv => tsv(path, &text, fields),
        Format::Pubtator => Ok(pubtator(&text)),
        Format::Text | Format::Auto => Ok(plain_text(path, &text)),
    }
}

/// `PubmedArticle/MedlineCitation`: `PMID`, `Article/ArticleTitle`, the `AbstractText`
/// sections joined by spaces (inline markup such as `<i>` kept as its text).
fn pubmed_xml(path: &Path, text: &str) -> Result<Vec<Document>, DocumentError> {
    let parse = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let xml =
        roxmltree::Document::parse_with_options(text, parse).map_err(|e| DocumentError::Parse {
            path: path.to_path_buf(),
            line: e.pos().row as usize,
            message: e.to_string(),
        })?;
    let all_text = |node: roxmltree::Node| -> String {
        node.descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join("")
    };
    let mut documents = Vec::new();
    for citation in xml
        .descendants()
        .filter(|n| n.has_tag_name("MedlineCitation"))
    {
        let child = |name: &str| citation.children().find(|n| n.has_tag_name(name));
        let id = child("PMID").map(all_text).unwrap_or_default();
        let Some(article) = child("Article") else {
            continue;
        };
        let title = article
            .descendants()
            .find(|n| n.has_tag_name("ArticleTitle"))
            .map(all_text)
            .unwrap_or_default();
        let abstract_text = article
            .descendants()
            .filter(|n| n.has_tag_name("AbstractText"))
            .map(all_text)
            .collect::<Vec<_>>()
            .join(" ");
        documents.push(Document {
            id: id.trim().to_string(),
            title,
            abstract_text,
            entity_types: None,
        });
    }
    Ok(documents)
}

/// Normalised types of a comma-separated list (see [`normalise_entity_type`]).
fn entity_type_set<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    names
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(normalise_entity_type)
        .collect()
}

fn jsonl(path: &Path, text: &str, fields: &RecordFields) -> Result<Vec<Document>, DocumentError> {
    let mut documents = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fail = |message: String| DocumentError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let record: serde_json::Value =
            serde_json::from_str(line).map_err(|e| fail(e.to_string()))?;
        let field = |name: &str| -> Result<String, DocumentError> {
            match record.get(name) {
                None | Some(serde_json::Value::Null) => Ok(String::new()),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                Some(other) => Err(fail(format!("field `{name}` is not a string: {other}"))),
            }
        };
        let title = field(&fields.title)?;
        let abstract_text = field(&fields.abstract_text)?;
        if record.get(&fields.title).is_none() && record.get(&fields.abstract_text).is_none() {
            return Err(fail(format!(
                "neither `{}` nor `{}` is a field (set `fields`)",
                fields.title, fields.abstract_text
            )));
        }
        let id = Some(field(&fields.id)?)
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("{}:{}", path.display(), i + 1));
        let entity_types = match record.get(&fields.entity_types) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => {
                Some(entity_type_set(std::iter::once(s.as_str())))
            }
            Some(serde_json::Value::Array(items)) => {
                let names: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
                let names = names.ok_or_else(|| {
                    fail(format!(
                        "field `{}` is not a list of names",
                        fields.entity_types
                    ))
                })?;
                Some(entity_type_set(names.into_iter()))
            }
            Some(other) => {
                return Err(fail(format!(
                    "field `{}` is not a list of names: {other}",
                    fields.entity_types
                )))
            }
        };
        documents.push(Document {
            id,
            title,
            abstract_text,
            entity_types,
        });
    }
    Ok(documents)
}

/// Tab-separated values: a header line naming the columns, then one document per line.
/// The id column is optional (`file:line` then), as is the entity-types column; the title
/// or the abstract column must exist. Fields hold no tabs or newlines (no quoting).
fn tsv(path: &Path, text: &str, fields: &RecordFields) -> Result<Vec<Document>, DocumentError> {
    let fail = |line: usize, message: String| DocumentError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, h)| h.split('\t').map(str::trim).collect())
        .unwrap_or_default();
    let column = |name: &str| header.iter().position(|c| *c == name);
    let (id, title, abstract_text, entity_types) = (
        column(&fields.id),
        column(&fields.title),
        column(&fields.abstract_text),
        column(&fields.entity_types),
    );
    if title.is_none() && abstract_text.is_none() {
        return Err(fail(
            1,
            format!(
                "the header names neither `{}` nor `{}` (columns: {}; set `fields`)",
                fields.title,
                fields.abstract_text,
                header.join(", ")
            ),
        ));
    }
    let mut documents = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split('\t').collect();
        if cells.len() != header.len() {
            return Err(fail(
                i + 1,
                format!(
                    "{} columns, the header has {} (a tab inside a field?)",
                    cells.len(),
                    header.len()
                ),
            ));
        }
        let cell = |c: Option<usize>| c.map(|c| cells[c].trim().to_string()).unwrap_or_default();
        let id = Some(cell(id))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("{}:{}", path.display(), i + 1));
        documents.push(Document {
            id,
            title: cell(title),
            abstract_text: cell(abstract_text),
            entity_types: entity_types.map(|c| entity_type_set(std::iter::once(cells[c]))),
        });
    }
    Ok(documents)
}

fn plain_text(path: &Path, text: &str) -> Vec<Document> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| Document {
            id: format!("{}:{}", path.display(), i + 1),
            title: String::new(),
            abstract_text: line.trim().to_string(),
            entity_types: None,
        })
        .collect()
}

/// `(pmid, 't' | 'a', text)` of a `PMID|t|…` / `PMID|a|…` line.
fn pubtator_field(line: &str) -> Option<(&str, char, &str)> {
    let mut parts = line.splitn(3, '|');
    let pmid = parts.next()?;
    let kind = parts.next()?;
    let text = parts.next()?;
    let digits = !pmid.is_empty() && pmid.bytes().all(|b| b.is_ascii_digit());
    match kind {
        "t" if digits => Some((pmid, 't', text)),
        "a" if digits => Some((pmid, 'a', text)),
        _ => None,
    }
}

/// PubTator: `PMID|t|title`, `PMID|a|abstract`, then mention lines
/// `PMID<TAB>start<TAB>end<TAB>text<TAB>type[<TAB>id]`; relation lines (fewer columns or a
/// non-numeric offset) are ignored; documents are separated by blank lines.
fn pubtator(text: &str) -> Vec<Document> {
    let mut documents: Vec<Document> = Vec::new();
    for line in text.lines() {
        if let Some((pmid, kind, body)) = pubtator_field(line) {
            let same = documents.last().is_some_and(|d| d.id == pmid);
            if !same {
                documents.push(Document {
                    id: pmid.to_string(),
                    title: String::new(),
                    abstract_text: String::new(),
                    entity_types: Some(BTreeSet::new()),
                });
            }
            if let Some(document) = documents.last_mut() {
                match kind {
                    't' => document.title = body.to_string(),
                    _ => document.abstract_text = body.to_string(),
                }
            }
            continue;
        }
        let columns: Vec<&str> = line.split('\t').collect();
        let is_mention = columns.len() >= 5
            && columns[1].parse::<usize>().is_ok()
            && columns[2].parse::<usize>().is_ok();
        if !is_mention {
            continue;
        }
        if let Some(document) = documents.last_mut().filter(|d| d.id == columns[0]) {
            if let Some(types) = document.entity_types.as_mut() {
                types.extend(entity_type_set(std::iter::once(columns[4])));
            }
        }
    }
    documents
}

/// PubTator-family type names mapped onto PubTator's own (`Chemical`, `Gene`, `Disease`,
/// `Species`, `Mutation`, `CellLine`, `CellType`), as BioRED, DrugProt and JNLPBA spell
/// them differently; other names are kept as they are.
pub fn normalise_entity_type(raw: &str) -> String {
    let name = match raw {
        "Chemical" | "CHEMICAL" | "ChemicalEntity" | "Drug" => "Chemical",
        "Gene" | "GENE" | "GENE-Y" | "GENE-N" | "GeneOrGeneProduct" | "protein" | "DNA" | "RNA" => {
            "Gene"
        }
        "Disease"
        | "SpecificDisease"
        | "DiseaseClass"
        | "Modifier"
        | "CompositeMention"
        | "DiseaseOrPhenotypicFeature" => "Disease",
        "Species" | "OrganismTaxon" => "Species",
        "DNAMutation" | "ProteinMutation" | "SNP" | "SequenceVariant" | "Mutation" => "Mutation",
        "cell_line" | "CellLine" => "CellLine",
        "cell_type" | "CellType" => "CellType",
        other => other,
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pubtator_with_types_and_skips_relations() {
        let text = "227508|t|Naloxone reverses clonidine.\n227508|a|In rats, naloxone.\n\
                    227508\t0\t8\tNaloxone\tChemical\tD009270\n\
                    227508\tCID\tD008750\tD007022\n\n\
                    354896|t|Lidocaine arrhythmias\n354896|a|\n\
                    354896\t0\t9\tLidocaine\tChemicalEntity\tD008012\n\
                    354896\t10\t21\tarrhythmias\tDiseaseOrPhenotypicFeature\tD001145\n";
        let docs = pubtator(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].id, "227508");
        assert_eq!(
            docs[0].text(),
            "Naloxone reverses clonidine. In rats, naloxone."
        );
        let types = |d: &Document| {
            d.entity_types
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(types(&docs[0]), ["Chemical"]);
        assert_eq!(types(&docs[1]), ["Chemical", "Disease"]);
    }

    #[test]
    fn reads_pubmed_xml_sections() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE PubmedArticleSet>
<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="1">42</PMID>
<Article><ArticleTitle>A <i>gene</i> study.</ArticleTitle>
<Abstract><AbstractText Label="BACKGROUND">First.</AbstractText>
<AbstractText Label="RESULTS">Second.</AbstractText></Abstract></Article>
</MedlineCitation></PubmedArticle></PubmedArticleSet>"#;
        let docs = pubmed_xml(Path::new("x.xml"), xml).expect("parses");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].id, "42");
        assert_eq!(docs[0].text(), "A gene study. First. Second.");
    }

    #[test]
    fn reads_tsv_with_a_header_and_entity_types() {
        let fields = RecordFields::default();
        let text = "pmid\tsources\ttitle\tabstract\tentity_types\n\
                    1\tcdr\tA title.\tThe abstract.\tChemical,Gene\n\
                    \n\
                    2\tcdr\tOnly a title.\t\t\n";
        let docs = tsv(Path::new("a.tsv"), text, &fields).expect("reads");
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (docs[0].id.as_str(), docs[0].text()),
            ("1", "A title. The abstract.".into())
        );
        let types: Vec<&str> = docs[0]
            .entity_types
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(types, ["Chemical", "Gene"]);
        assert_eq!(docs[1].entity_types, Some(BTreeSet::new()));
        let err =
            tsv(Path::new("a.tsv"), "pmid\ttitle\n1\tx\ty\n", &fields).expect_err("ragged row");
        assert!(
            err.to_string().contains("a.tsv, line 2: 3 columns"),
            "{err}"
        );
        let err = tsv(Path::new("a.tsv"), "a\tb\n", &fields).expect_err("no text column");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn auto_format_skips_documentation_and_headerless_tsv() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fields = RecordFields::default();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            format_of(&path, Format::Auto, &fields).expect("format")
        };
        assert_eq!(file("README.txt", "Some notes."), None);
        assert_eq!(file("x.tsv", "1\tA title\tAbstract\n"), None);
        assert_eq!(file("y.tsv", "pmid\ttitle\n1\tA\n"), Some(Format::Tsv));
        assert_eq!(file("z.txt", "One abstract.\n"), Some(Format::Text));
    }

    #[test]
    fn reads_jsonl_with_named_fields() {
        let fields = RecordFields {
            id: "id".into(),
            title: "t".into(),
            abstract_text: "body".into(),
            entity_types: "types".into(),
        };
        let text = "{\"id\": 7, \"t\": \"Title\", \"body\": \"Body.\", \"types\": [\"GENE\"]}\n\n";
        let docs = jsonl(Path::new("a.jsonl"), text, &fields).expect("reads");
        assert_eq!(
            (docs[0].id.as_str(), docs[0].text()),
            ("7", "Title Body.".into())
        );
        assert_eq!(
            docs[0].entity_types,
            Some(BTreeSet::from(["Gene".to_string()]))
        );
        let err = jsonl(Path::new("a.jsonl"), "{\"x\": 1}\n", &fields).expect_err("no fields");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn normalises_type_spellings() {
        assert_eq!(normalise_entity_type("GeneOrGeneProduct"), "Gene");
        assert_eq!(normalise_entity_type("CHEMICAL"), "Chemical");
        assert_eq!(normalise_entity_type("Unknown"), "Unknown");
    }
}
