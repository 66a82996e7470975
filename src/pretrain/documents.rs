//! Reading abstracts (title + abstract, with an id and, from PubTator files, the entity
//! types annotated in them) from the formats PubMed text comes in: PubMed baseline XML
//! (`.xml`, `.xml.gz`), JSON lines, plain text with one abstract per line, and PubTator.

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
    /// By file name: `.xml(.gz)` PubMed XML, `.jsonl(.gz)` JSON lines, `.pubtator` PubTator,
    /// `.txt(.gz)` PubTator when its first line is `PMID|t|…`, else plain text; other
    /// files are skipped.
    #[default]
    Auto,
    PubmedXml,
    Jsonl,
    Text,
    Pubtator,
}

/// Field names of JSON-lines records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlFields {
    #[serde(default = "default_id_field")]
    pub id: String,
    #[serde(default = "default_title_field")]
    pub title: String,
    #[serde(default = "default_abstract_field")]
    pub abstract_text: String,
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

impl Default for JsonlFields {
    fn default() -> Self {
        JsonlFields {
            id: default_id_field(),
            title: default_title_field(),
            abstract_text: default_abstract_field(),
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
pub fn format_of(path: &Path, format: Format) -> Result<Option<Format>, DocumentError> {
    if format != Format::Auto {
        return Ok(Some(format));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let found = if name.ends_with(".xml") {
        Some(Format::PubmedXml)
    } else if name.ends_with(".jsonl") {
        Some(Format::Jsonl)
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
    fields: &JsonlFields,
) -> Result<Vec<Document>, DocumentError> {
    let text = read_text(path)?;
    match format {
        Format::PubmedXml => pubmed_xml(path, &text),
        Format::Jsonl => jsonl(path, &text, fields),
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

fn jsonl(path: &Path, text: &str, fields: &JsonlFields) -> Result<Vec<Document>, DocumentError> {
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
                "neither `{}` nor `{}` is a field (set `jsonl_fields`)",
                fields.title, fields.abstract_text
            )));
        }
        let id = Some(field(&fields.id)?)
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("{}:{}", path.display(), i + 1));
        documents.push(Document {
            id,
            title,
            abstract_text,
            entity_types: None,
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
                for raw in columns[4].split(',') {
                    types.insert(normalise_entity_type(raw.trim()));
                }
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
    fn reads_jsonl_with_named_fields() {
        let fields = JsonlFields {
            id: "id".into(),
            title: "t".into(),
            abstract_text: "body".into(),
        };
        let text = "{\"id\": 7, \"t\": \"Title\", \"body\": \"Body.\"}\n\n";
        let docs = jsonl(Path::new("a.jsonl"), text, &fields).expect("reads");
        assert_eq!(
            (docs[0].id.as_str(), docs[0].text()),
            ("7", "Title Body.".into())
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
