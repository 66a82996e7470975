//! `subdomain_corpus`: an unlabeled sub-domain corpus for continued pre-training (su2022,
//! "Improving pre-training using sub-domain data"): the abstracts of a source selected by a
//! PubMed-style boolean query over title + abstract (`Protein OR Gene` → +P/G, `Drug` → +D)
//! and/or by the entity types annotated in them (`[Chemical, Gene]` → +CP; from PubTator
//! mentions or an entity-types field of TSV / JSONL records).
//!
//! Input: `source`, a directory (usually a `fetch` output) or one file of abstracts; every
//! file under it is read in path order (see [`Format`]). Documents repeating an id already
//! read are skipped. Outputs: `corpus.txt` (one document per line: title and abstract),
//! `stats.json` (documents read, duplicates, selected, per file) and `metrics.json`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::pretrain::documents::{self, normalise_entity_type, Document, Format, RecordFields};
use crate::pretrain::query::{words, Query};

/// Params of `subdomain_corpus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubdomainCorpusParams {
    /// PubMed-style boolean query over title + abstract (see [`Query`]).
    #[serde(default)]
    pub query: Option<String>,
    /// Keep documents annotated with every one of these types (PubTator names; BioRED,
    /// DrugProt and JNLPBA spellings are normalised onto them).
    #[serde(default)]
    pub entity_types: Vec<String>,
    #[serde(default)]
    pub format: Format,
    /// Field names of JSON-lines records / column names of TSV files.
    #[serde(default, alias = "jsonl_fields")]
    pub fields: RecordFields,
    /// Stop after this many selected documents (in file order).
    #[serde(default)]
    pub max_documents: Option<usize>,
}

/// The `subdomain_corpus` stage kind.
pub struct SubdomainCorpusStage;

/// `stats.json`.
#[derive(Debug, Default, Serialize)]
struct Stats {
    query: Option<String>,
    entity_types: Vec<String>,
    files_read: usize,
    files_skipped: usize,
    documents_read: usize,
    duplicates_skipped: usize,
    empty_skipped: usize,
    /// Documents read from a format without annotations while `entity_types` was set.
    without_annotations: usize,
    documents_selected: usize,
    words_selected: usize,
    per_file: BTreeMap<String, FileStats>,
}

#[derive(Debug, Default, Serialize)]
struct FileStats {
    format: String,
    read: usize,
    selected: usize,
}

impl Stage for SubdomainCorpusStage {
    const KIND: &'static str = "subdomain_corpus";
    const VERSION: u32 = 2;
    type Params = SubdomainCorpusParams;
    const INPUTS: InputContract = InputContract::Declared(&[InputSpec::one(
        "source",
        "fetched abstracts (PubMed XML, JSONL, TSV, text)",
    )]);

    fn check(p: &SubdomainCorpusParams) -> Result<(), ParamError> {
        if let Some(query) = &p.query {
            Query::parse(query).map_err(|e| ParamError::new("query", e.to_string()))?;
        }
        if p.entity_types.iter().any(|t| t.trim().is_empty()) {
            return Err(ParamError::new("entity_types", "an empty type name"));
        }
        if p.max_documents == Some(0) {
            return Err(ParamError::new("max_documents", "must be positive"));
        }
        Ok(())
    }

    fn run(ctx: &mut StageCtx, p: &SubdomainCorpusParams) -> Result<(), StageError> {
        run(ctx, p)
    }
}

impl From<documents::DocumentError> for StageError {
    fn from(e: documents::DocumentError) -> Self {
        match e {
            documents::DocumentError::Io { path, source } => StageError::Io { path, source },
            other => StageError::Failed(other.to_string()),
        }
    }
}

/// The selection rule: query and entity types (each optional, both must hold).
pub struct Selection {
    query: Option<Query>,
    entity_types: BTreeSet<String>,
}

impl Selection {
    /// Builds the rule from the stage params.
    pub fn new(query: Option<&str>, entity_types: &[String]) -> Result<Self, ParamError> {
        let query = query
            .map(Query::parse)
            .transpose()
            .map_err(|e| ParamError::new("query", e.to_string()))?;
        let entity_types = entity_types
            .iter()
            .map(|t| normalise_entity_type(t.trim()))
            .collect();
        Ok(Selection {
            query,
            entity_types,
        })
    }

    /// Whether `document` is in the sub-domain.
    pub fn selects(&self, document: &Document) -> bool {
        let types_ok = self.entity_types.is_empty()
            || document
                .entity_types
                .as_ref()
                .is_some_and(|found| self.entity_types.is_subset(found));
        types_ok
            && self
                .query
                .as_ref()
                .is_none_or(|q| q.matches(&words(&document.text())))
    }
}

fn files_under(root: &Path) -> Result<Vec<PathBuf>, StageError> {
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| StageError::io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| StageError::io(&dir, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn run(ctx: &mut StageCtx, p: &SubdomainCorpusParams) -> Result<(), StageError> {
    let root = ctx.inputs.path("source")?.to_path_buf();
    let selection = Selection::new(p.query.as_deref(), &p.entity_types)?;
    let files = files_under(&root)?;
    let mut stats = Stats {
        query: p.query.clone(),
        entity_types: selection.entity_types.iter().cloned().collect(),
        ..Stats::default()
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut lines = String::new();
    ctx.progress.set_length(files.len() as u64);
    'files: for path in &files {
        ctx.check_cancelled()?;
        ctx.progress.inc(1);
        let Some(format) = documents::format_of(path, p.format, &p.fields)? else {
            stats.files_skipped += 1;
            continue;
        };
        stats.files_read += 1;
        let name = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        let file_stats = stats.per_file.entry(name).or_default();
        file_stats.format = serde_json::to_value(format)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for document in documents::read(path, format, &p.fields)? {
            stats.documents_read += 1;
            file_stats.read += 1;
            if !seen.insert(document.id.clone()) {
                stats.duplicates_skipped += 1;
                continue;
            }
            let text = document.text();
            if text.is_empty() {
                stats.empty_skipped += 1;
                continue;
            }
            if document.entity_types.is_none() && !selection.entity_types.is_empty() {
                stats.without_annotations += 1;
            }
            if selection.selects(&document) {
                file_stats.selected += 1;
                stats.documents_selected += 1;
                stats.words_selected += text.split_whitespace().count();
                lines.push_str(&text);
                lines.push('\n');
                if p.max_documents == Some(stats.documents_selected) {
                    break 'files;
                }
            }
        }
    }
    if stats.documents_read == 0 {
        return Err(StageError::Input {
            name: "source".into(),
            message: format!(
                "no documents in {} ({} files, none in a known format; set `format`)",
                root.display(),
                files.len()
            ),
        });
    }
    if stats.documents_selected == 0 {
        return Err(StageError::Failed(format!(
            "the selection keeps none of the {} documents read",
            stats.documents_read
        )));
    }
    ctx.progress.println(format!(
        "{}: {} of {} documents selected ({} words)",
        ctx.name, stats.documents_selected, stats.documents_read, stats.words_selected
    ));
    let corpus = ctx.out_dir.join("corpus.txt");
    std::fs::write(&corpus, lines).map_err(|e| StageError::io(&corpus, e))?;
    ctx.write_json("stats.json", &stats)?;
    ctx.write_json(
        "metrics.json",
        &serde_json::json!({
            "documents_read": stats.documents_read,
            "documents_selected": stats.documents_selected,
            "words_selected": stats.words_selected,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(text: &str, types: Option<&[&str]>) -> Document {
        Document {
            id: "1".into(),
            title: String::new(),
            abstract_text: text.into(),
            entity_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn selects_by_query_and_types_together() {
        let cp = Selection::new(Some("inhibit*"), &["Chemical".into(), "GENE".into()])
            .expect("selection");
        let both = document("Aspirin inhibits COX-2.", Some(&["Chemical", "Gene"]));
        assert!(cp.selects(&both));
        assert!(!cp.selects(&document("Aspirin inhibits.", Some(&["Chemical"]))));
        assert!(!cp.selects(&document("Aspirin inhibits COX-2.", None)));
        assert!(!cp.selects(&document("Aspirin and COX-2.", Some(&["Chemical", "Gene"]))));
        let all = Selection::new(None, &[]).expect("no rule");
        assert!(all.selects(&document("anything", None)));
        assert!(Selection::new(Some("a AND"), &[]).is_err());
    }
}
