//! CoNLL-U dependency trees (Universal Dependencies), plain or gzip-compressed (`.gz`).
//!
//! Token lines have 10 TAB-separated columns `ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL
//! DEPS MISC`; a blank line ends a sentence; `#` lines are comments (`# sent_id = …`,
//! `# newdoc id = …` are kept as ids). Multiword-token lines (`3-4`) and empty nodes (`8.1`)
//! are skipped: the basic tree is over the syntactic words `1..n`. A sentence must have ids
//! `1..n` in order, every head in `0..=n`, exactly one word with head 0, and no cycle;
//! otherwise it is an `Err` naming the offending line.
//!
//! In the corpus a tree is stored as a [`crate::data::Sentence`] whose tag of word `w` is
//! its arc `HEAD:DEPREL` ([`arc_tag`], e.g. `4:nsubj`, `0:root`, `7:acl:relcl`).

use std::io::Read as _;
use std::path::Path;

use super::line_error;
use crate::data::DataError;

/// One sentence as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTree {
    /// 1-based line of the sentence's first line (comment or word).
    pub line: usize,
    /// `# sent_id = …`, if given.
    pub sent_id: Option<String>,
    /// The `# newdoc id = …` in force, if any.
    pub doc_id: Option<String>,
    pub words: Vec<String>,
    /// Head of each word: 0 is the root, `k` the k-th word (1-based).
    pub heads: Vec<usize>,
    pub deprels: Vec<String>,
}

/// A word's arc as a tag: `HEAD:DEPREL`.
pub fn arc_tag(head: usize, deprel: &str) -> String {
    format!("{head}:{deprel}")
}

/// The head and relation of an arc tag (`4:nsubj` → `(4, "nsubj")`).
pub fn parse_arc_tag(tag: &str) -> Option<(usize, &str)> {
    let (head, deprel) = tag.split_once(':')?;
    Some((head.parse().ok()?, deprel))
}

/// The file's text, gunzipped when the name ends in `.gz`.
fn read_text(path: &Path, display: &str) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = if display.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|_| line_error(display, 1, "not valid UTF-8"))
}

type Read = Vec<Result<RawTree, DataError>>;

/// Reads every sentence of a CoNLL-U file; a malformed sentence is an `Err` naming the
/// offending line.
pub fn read(path: &Path, display: &str) -> Result<Read, DataError> {
    let text = read_text(path, display)?;
    let mut out = Vec::new();
    let mut doc: Option<String> = None;
    let mut block: Vec<(usize, &str)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !block.is_empty() {
                out.push(parse_sentence(&block, &mut doc, display));
                block.clear();
            }
        } else {
            block.push((i + 1, line));
        }
    }
    if !block.is_empty() {
        out.push(parse_sentence(&block, &mut doc, display));
    }
    Ok(out)
}

fn comment_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix('#')?.trim_start();
    let rest = rest.strip_prefix(key)?.trim_start();
    Some(rest.strip_prefix('=')?.trim())
}

fn parse_sentence(
    block: &[(usize, &str)],
    doc: &mut Option<String>,
    file: &str,
) -> Result<RawTree, DataError> {
    let mut tree = RawTree {
        line: block[0].0,
        sent_id: None,
        doc_id: None,
        words: Vec::new(),
        heads: Vec::new(),
        deprels: Vec::new(),
    };
    let mut lines_of_words = Vec::new();
    for &(line_no, line) in block {
        let err = |m: String| line_error(file, line_no, m);
        if line.starts_with('#') {
            if let Some(d) = comment_value(line, "newdoc id") {
                *doc = Some(d.to_string());
            } else if let Some(s) = comment_value(line, "sent_id") {
                tree.sent_id = Some(s.to_string());
            }
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != 10 {
            return Err(err(format!(
                "expected 10 TAB-separated columns, found {}",
                cols.len()
            )));
        }
        if cols[0].contains('-') || cols[0].contains('.') {
            continue; // multiword token or empty node
        }
        let id: usize = cols[0]
            .parse()
            .map_err(|_| err(format!("ID `{}` is not a number", cols[0])))?;
        if id != tree.words.len() + 1 {
            return Err(err(format!(
                "word ID {id} where {} was expected",
                tree.words.len() + 1
            )));
        }
        let head: usize = cols[6]
            .parse()
            .map_err(|_| err(format!("HEAD `{}` is not a number", cols[6])))?;
        let deprel = cols[7].trim();
        if deprel.is_empty() || deprel == "_" {
            return Err(err("empty DEPREL".into()));
        }
        tree.words.push(cols[1].to_string());
        tree.heads.push(head);
        tree.deprels.push(deprel.to_string());
        lines_of_words.push(line_no);
    }
    tree.doc_id = doc.clone();
    let n = tree.words.len();
    if n == 0 {
        return Err(line_error(file, tree.line, "a sentence without words"));
    }
    let mut root: Option<usize> = None;
    for (w, &h) in tree.heads.iter().enumerate() {
        let at = lines_of_words[w];
        if h > n {
            return Err(line_error(
                file,
                at,
                format!("HEAD {h} out of range: the sentence has {n} words"),
            ));
        }
        if h == w + 1 {
            return Err(line_error(file, at, format!("word {h} is its own head")));
        }
        if h == 0 {
            if let Some(first) = root {
                return Err(line_error(
                    file,
                    at,
                    format!(
                        "a second root (word {}; word {} is already the root)",
                        w + 1,
                        first
                    ),
                ));
            }
            root = Some(w + 1);
        }
    }
    if root.is_none() {
        return Err(line_error(file, tree.line, "no word has HEAD 0 (no root)"));
    }
    // every word reaches the root in at most n steps, else there is a cycle
    for (start, &line_no) in lines_of_words.iter().enumerate() {
        let mut at = start + 1;
        let mut steps = 0;
        while at != 0 {
            at = tree.heads[at - 1];
            steps += 1;
            if steps > n {
                return Err(line_error(
                    file,
                    line_no,
                    format!("word {} is on a cycle of heads", start + 1),
                ));
            }
        }
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str) -> Read {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.conllu");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        read(&path, "t.conllu").unwrap_or_else(|e| panic!("{e}"))
    }

    fn word(id: &str, form: &str, head: &str, rel: &str) -> String {
        format!("{id}\t{form}\t_\t_\t_\t_\t{head}\t{rel}\t_\t_\n")
    }

    #[test]
    fn multiword_tokens_and_empty_nodes_are_skipped() {
        let text = format!(
            "# newdoc id = d1\n# sent_id = s1\n{}{}{}{}{}\n",
            word("1-2", "don't", "_", "_"),
            word("1", "do", "0", "root"),
            word("2", "n't", "1", "advmod"),
            word("2.1", "x", "_", "_"),
            word("3", "go", "1", "xcomp"),
        );
        let trees: Vec<RawTree> = read_str(&text).into_iter().map(|t| t.unwrap()).collect();
        assert_eq!(trees.len(), 1);
        assert_eq!(trees[0].words, ["do", "n't", "go"]);
        assert_eq!(trees[0].heads, [0, 1, 1]);
        assert_eq!(trees[0].sent_id.as_deref(), Some("s1"));
        assert_eq!(trees[0].doc_id.as_deref(), Some("d1"));
        assert_eq!(
            parse_arc_tag(&arc_tag(7, "acl:relcl")),
            Some((7, "acl:relcl"))
        );
    }

    #[test]
    fn two_roots_a_head_out_of_range_and_a_cycle_name_their_line() {
        let two_roots = format!(
            "{}{}",
            word("1", "a", "0", "root"),
            word("2", "b", "0", "root")
        );
        let e = read_str(&two_roots)[0].as_ref().unwrap_err().to_string();
        assert!(
            e.starts_with("t.conllu:2:") && e.contains("second root"),
            "{e}"
        );
        let out_of_range = format!(
            "# sent_id = x\n{}{}",
            word("1", "a", "0", "root"),
            word("2", "b", "5", "obj")
        );
        let e = read_str(&out_of_range)[0].as_ref().unwrap_err().to_string();
        assert!(
            e.starts_with("t.conllu:3:") && e.contains("out of range"),
            "{e}"
        );
        let cycle = format!(
            "{}{}{}",
            word("1", "a", "0", "root"),
            word("2", "b", "3", "x"),
            word("3", "c", "2", "y")
        );
        let e = read_str(&cycle)[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        // a good sentence after a bad one is still read
        let both = format!("{two_roots}\n{}", word("1", "a", "0", "root"));
        let read = read_str(&both);
        assert!(read[0].is_err() && read[1].is_ok());
    }

    #[test]
    fn on_error_skip_counts_a_bad_tree_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "{}{}\n{}{}\n",
            word("1", "a", "0", "root"),
            word("2", "b", "0", "root"),
            word("1", "c", "0", "root"),
            word("2", "d", "1", "obj"),
        );
        std::fs::write(dir.path().join("t.conllu"), text).unwrap_or_else(|e| panic!("{e}"));
        let spec = |on_error: &str| -> crate::data::CorpusSpec {
            serde_json::from_value(serde_json::json!({
                "format": "conllu", "files": {"train": "t.conllu"}, "on_error": on_error
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let e = crate::data::corpus::build(&spec("fail"), dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("t.conllu:2:"), "{e}");
        let corpus =
            crate::data::corpus::build(&spec("skip"), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(corpus.warnings.get("skipped"), Some(&1));
        let crate::data::Units::Ner(trees) = &corpus.units else {
            panic!("trees are sentences")
        };
        assert_eq!(trees.len(), 1);
        assert_eq!(trees[0].tags, ["0:root", "1:obj"]);
        assert_eq!(corpus.labels.labels, ["obj", "root"]);
    }
}
