//! The official DDI 2013 corpus (`DDICorpus-2013.zip`): one XML file per document; each
//! `<sentence text>` holds `<entity id charOffset>` and `<pair id e1 e2 ddi type>`.
//! One instance per `<pair>`: the two drug spans (`charOffset` `start-end`, end inclusive;
//! for discontinuous `a-b;c-d` the span from the first start to the last end) are replaced
//! by `@DRUG$`, or their union by `@DRUG-DRUG$` when they overlap; label `DDI-<type>` if
//! `ddi="true"`, else `DDI-false`. This is the rule in `shared/data/ddi/SOURCE.md`, which
//! reproduces BLURB's test file exactly.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::json::parse_span;
use super::{line_error, RawRecord, ReadOutput, Tagging};
use crate::data::entity;
use crate::data::DataError;

/// Warning key counting `ddi="true"` pairs without a `type` (labelled `DDI-false`, as in
/// the rebuilt BLURB train file; one such pair exists: `DDI-DrugBank.d236.s29.p0`).
pub const UNTYPED_TRUE_PAIRS: &str = "ddi_true_without_type_labelled_false";

/// Label of negative pairs.
pub const NEGATIVE: &str = "DDI-false";
/// Labels in BLURB's `label2id.tsv` order.
pub const LABELS: [&str; 5] = [
    "DDI-false",
    "DDI-mechanism",
    "DDI-int",
    "DDI-advise",
    "DDI-effect",
];

/// The XML documents under `location`: a directory (searched recursively) or
/// `ARCHIVE.zip#prefix` (entries under `prefix`), sorted by path.
fn documents(root: &Path, location: &str) -> Result<Vec<(String, String)>, DataError> {
    let (file, prefix) = match location.split_once('#') {
        Some((f, p)) => (f, Some(p)),
        None => (location, None),
    };
    let path = root.join(file);
    let is_doc = |name: &str| name.ends_with(".xml") && !name.contains("__MACOSX");
    let mut docs = Vec::new();
    if let Some(prefix) = prefix {
        let f = std::fs::File::open(&path).map_err(|e| DataError::io(&path, e))?;
        let mut zip = zip::ZipArchive::new(f).map_err(|e| {
            DataError::Invalid(format!("{}: not a readable zip: {e}", path.display()))
        })?;
        let mut names: Vec<String> = zip
            .file_names()
            .filter(|n| n.starts_with(prefix) && is_doc(n))
            .map(str::to_string)
            .collect();
        names.sort();
        for name in names {
            let mut entry = zip
                .by_name(&name)
                .map_err(|e| DataError::Invalid(format!("{}#{name}: {e}", path.display())))?;
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| DataError::Invalid(format!("{}#{name}: {e}", path.display())))?;
            docs.push((format!("{file}#{name}"), text));
        }
    } else {
        let mut stack = vec![path.clone()];
        let mut files = Vec::new();
        while let Some(dir) = stack.pop() {
            let rd = std::fs::read_dir(&dir).map_err(|e| DataError::io(&dir, e))?;
            for entry in rd {
                let p = entry.map_err(|e| DataError::io(&dir, e))?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if is_doc(&p.to_string_lossy()) {
                    files.push(p);
                }
            }
        }
        files.sort();
        for p in files {
            let text = std::fs::read_to_string(&p).map_err(|e| DataError::io(&p, e))?;
            let shown = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            docs.push((shown, text));
        }
    }
    if docs.is_empty() {
        return Err(DataError::Invalid(format!(
            "{location}: no .xml documents found"
        )));
    }
    Ok(docs)
}

/// Reads every pair of every document under `location` (relative to `root`).
pub fn read(root: &Path, location: &str, tagging: &Tagging) -> Result<ReadOutput, DataError> {
    let mut out = ReadOutput::default();
    let overlap = tagging
        .overlap_tag
        .clone()
        .unwrap_or_else(|| entity::default_overlap_tag(&tagging.tag, &tagging.tag));
    for (name, xml) in documents(root, location)? {
        let doc = roxmltree::Document::parse(&xml).map_err(|e| {
            let pos = e.pos();
            line_error(&name, pos.row as usize, format!("not well-formed XML: {e}"))
        })?;
        let root_el = doc.root_element();
        let doc_id = root_el.attribute("id").map(str::to_string);
        for sentence in root_el.children().filter(|n| n.has_tag_name("sentence")) {
            let line_of = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row as usize;
            let Some(text) = sentence.attribute("text") else {
                out.records.push(Err(line_error(
                    &name,
                    line_of(sentence),
                    "<sentence> without `text`",
                )));
                continue;
            };
            let offsets: HashMap<&str, &str> = sentence
                .children()
                .filter(|n| n.has_tag_name("entity"))
                .filter_map(|e| Some((e.attribute("id")?, e.attribute("charOffset")?)))
                .collect();
            for pair in sentence.children().filter(|n| n.has_tag_name("pair")) {
                let line = line_of(pair);
                let rec = (|| -> Result<RawRecord, String> {
                    let attr = |a: &str| {
                        pair.attribute(a)
                            .ok_or_else(|| format!("<pair> without `{a}`"))
                    };
                    let span = |e: &str| -> Result<entity::Span, String> {
                        let off = offsets.get(e).ok_or_else(|| {
                            format!(
                                "pair names entity `{e}`, which has no charOffset in this sentence"
                            )
                        })?;
                        parse_span(&serde_json::Value::String(off.to_string()), true)
                    };
                    let (e1, e2) = (span(attr("e1")?)?, span(attr("e2")?)?);
                    let text = entity::replace_spans(
                        text,
                        e1,
                        e2,
                        (&tagging.tag, &tagging.tag),
                        &overlap,
                    )?;
                    let label = match (attr("ddi")?, pair.attribute("type")) {
                        ("true", Some(t)) => format!("DDI-{t}"),
                        ("true", None) => {
                            *out.warnings
                                .entry(UNTYPED_TRUE_PAIRS.to_string())
                                .or_insert(0) += 1;
                            NEGATIVE.to_string()
                        }
                        ("false", _) => NEGATIVE.to_string(),
                        (other, _) => {
                            return Err(format!("ddi=\"{other}\" is neither true nor false"))
                        }
                    };
                    Ok(RawRecord {
                        line,
                        id: Some(attr("id")?.to_string()),
                        doc_id: doc_id.clone(),
                        text,
                        label,
                        split: None,
                        fold: None,
                    })
                })();
                out.records
                    .push(rec.map_err(|m| line_error(&name, line, m)));
            }
        }
    }
    Ok(out)
}
