//! Parses a large pipeline file's `stages:` section in pieces, on every core (#27).
//!
//! serde_yaml reads a whole document into a list of events before it builds anything, so a
//! file of 100,000 stages (12 MB) parsed in one go takes 0.6 s on one core and half a GB at
//! its peak. A block-style `stages:` section is a run of entries at one indentation, each
//! a YAML document of its own once written under `stages:`; so its entries are cut into
//! pieces at entry boundaries, each piece parsed alone (in parallel, each piece's events
//! freed when it is built), and the rest of the file (the section emptied) parsed once.
//!
//! The result must be the one-pass parse's, or nothing: whenever a piece does not parse
//! on its own — an alias to an anchor in another piece, a flow collection spread over
//! lines at the entries' indentation, a syntax error — [`stages_in_pieces`] gives up and
//! the caller parses the whole file, which also yields the error messages users see.

use rayon::prelude::*;
use serde::Deserialize;

use super::doc::{PipelineDoc, StageDoc};
use super::locate::leading_key;

/// Below this many stages one pass is as fast and the pieces are not worth it.
const MIN_STAGES: usize = 2_000;
/// Pieces per thread: enough that a slow piece does not leave a core idle at the end.
const PIECES_PER_THREAD: usize = 8;

/// A piece: `stages:` and some of its entries, in the order written (a name written twice
/// is found when the pieces are put together).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StagesPiece {
    #[serde(deserialize_with = "entries_as_written")]
    stages: Vec<(String, Box<StageDoc>)>,
}

/// A mapping's entries as a list: a piece's `BTreeMap`, built by inserting them one by one,
/// left its nodes about half empty, 23 MB at the parse's peak for 100,000 stages (#27).
fn entries_as_written<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(String, Box<StageDoc>)>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<(String, Box<StageDoc>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Entries)
}

/// Where the block-style `stages:` section's body starts and ends in `text` (byte
/// offsets), and where each of its entries starts; `None` when the file has no such
/// section.
fn stage_entries(text: &str) -> Option<(usize, usize, Vec<usize>)> {
    let mut offset = 0;
    let mut body: Option<usize> = None;
    let mut indent: Option<usize> = None;
    let mut entries = Vec::new();
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start_matches(' ');
        let blank = trimmed.is_empty() || trimmed.starts_with('#');
        let Some(body_start) = body else {
            // the section's header: `stages:` at column 0, nothing after it but a comment
            if let Some(rest) = content.strip_prefix("stages:") {
                let rest = rest.trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    body = Some(offset);
                }
            }
            continue;
        };
        if blank {
            continue;
        }
        let this_indent = content.len() - trimmed.len();
        if this_indent == 0 {
            return Some((body_start, start, entries));
        }
        match indent {
            None => indent = Some(this_indent),
            Some(i) if this_indent < i => return None,
            _ => {}
        }
        if Some(this_indent) == indent {
            // an entry is `name:` at the entries' indentation, nothing else
            leading_key(trimmed)?;
            entries.push(start);
        }
    }
    body.map(|b| (b, text.len(), entries))
}

/// The file parsed with its stages in pieces, or `None` where that is not sure to give
/// the one-pass result (the caller then parses the whole file).
pub(super) fn stages_in_pieces(text: &str) -> Option<PipelineDoc> {
    if text.starts_with('%') || text.contains("\n%") {
        return None; // YAML directives apply to the whole stream
    }
    let (body_start, body_end, entries) = stage_entries(text)?;
    if entries.len() < MIN_STAGES {
        return None;
    }
    let pieces = (rayon::current_num_threads() * PIECES_PER_THREAD).max(1);
    let per_piece = entries.len().div_ceil(pieces);
    let bounds: Vec<(usize, usize)> = entries
        .chunks(per_piece)
        .enumerate()
        .map(|(i, chunk)| {
            let end = entries
                .get((i + 1) * per_piece)
                .copied()
                .unwrap_or(body_end);
            (chunk[0], end)
        })
        .collect();
    let rest = || {
        let mut outside = String::with_capacity(text.len() - (body_end - body_start));
        outside.push_str(&text[..body_start]);
        outside.push_str(&text[body_end..]);
        serde_yaml::from_str::<PipelineDoc>(&outside).ok()
    };
    let parse_pieces = || {
        bounds
            .par_iter()
            .map(|&(a, b)| {
                let mut piece = String::with_capacity(b - a + 8);
                piece.push_str("stages:\n");
                piece.push_str(&text[a..b]);
                serde_yaml::from_str::<StagesPiece>(&piece)
                    .ok()
                    .map(|p| p.stages)
            })
            .collect::<Option<Vec<_>>>()
    };
    let (doc, pieces) = rayon::join(rest, parse_pieces);
    let (mut doc, pieces) = (doc?, pieces?);
    if !doc.stages.is_empty() {
        return None;
    }
    // sorted, then made into the map in one go (its nodes filled)
    let mut entries: Vec<(String, Box<StageDoc>)> = pieces.into_iter().flatten().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if entries.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        return None; // a name twice: the one-pass parse says where
    }
    doc.stages = entries.into_iter().collect();
    // the pieces' events were freed in the workers' arenas
    crate::allocator::release_free_memory();
    Some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_pass(text: &str) -> PipelineDoc {
        serde_yaml::from_str(text).expect("parses")
    }

    /// `n` stages with block scalars, comments, flow maps, quoted names, local anchors.
    fn generated(n: usize) -> String {
        let mut y = String::from("description: many\nstages:\n");
        for i in 0..n {
            match i % 4 {
                0 => y.push_str(&format!(
                    "  s{i}:\n    kind: shell\n    params:\n      cmd: |\n        echo {i}\n\n        echo done\n      outs: [o]\n"
                )),
                1 => y.push_str(&format!(
                    "  # a comment\n  \"s{i}\":\n    kind: shell\n    params: {{cmd: \"echo {i}\", outs: [o]}}\n    inputs: {{up: s{}}}\n", i - 1
                )),
                2 => y.push_str(&format!(
                    "  s{i}:\n    description: &d{i} \"two # not a comment\"\n    kind: shell\n    params: {{cmd: *d{i}, outs: [o]}}\n"
                )),
                _ => y.push_str(&format!(
                    "  s{i}: {{kind: shell, params: {{cmd: echo, outs: [o]}}, matrix: {{seed: [1, 2]}}}}\n"
                )),
            }
        }
        y.push_str("profiles:\n  smoke:\n    s0: {params: {cmd: echo smoke}}\n");
        y
    }

    #[test]
    fn pieces_give_the_one_pass_result() {
        let text = generated(MIN_STAGES + 37);
        let pieces = stages_in_pieces(&text).expect("takes the pieces path");
        let whole = one_pass(&text);
        assert_eq!(format!("{pieces:?}"), format!("{whole:?}"));
        assert_eq!(pieces.stages.len(), MIN_STAGES + 37);
        assert_eq!(pieces.profiles.len(), 1);
    }

    #[test]
    fn what_a_piece_cannot_parse_alone_falls_back() {
        // an alias to an anchor outside the section
        let mut text =
            String::from("templates:\n  t:\n    kind: shell\n    description: &base hi\nstages:\n");
        for i in 0..MIN_STAGES {
            text.push_str(&format!("  s{i}:\n    description: *base\n"));
        }
        assert!(stages_in_pieces(&text).is_none());
        assert_eq!(one_pass(&text).stages.len(), MIN_STAGES);
        // a syntax error in one entry
        let mut broken = generated(MIN_STAGES);
        broken.insert_str(broken.find("  s4:").expect("s4"), "  bad: [unclosed\n");
        assert!(stages_in_pieces(&broken).is_none());
        // a name written twice, next to itself (one piece) or far apart (two pieces): the
        // one-pass parse refuses it, saying where
        for gap in [4, MIN_STAGES - 4] {
            let mut twice = generated(MIN_STAGES);
            let second = format!("  s{gap}:\n");
            let at = twice.find(&second).expect("entry");
            twice.replace_range(at..at + second.len(), "  s0:\n");
            assert!(stages_in_pieces(&twice).is_none(), "gap {gap}");
        }
        // entries at two indentations, a list, a flow section: not the pieces path
        assert!(stages_in_pieces("stages:\n    a: {}\n  b: {}\n").is_none());
        assert!(stages_in_pieces("stages:\n  - a\n").is_none());
        assert!(stages_in_pieces("stages: {a: {kind: shell}}\n").is_none());
    }

    #[test]
    fn small_files_take_one_pass() {
        assert!(stages_in_pieces(&generated(10)).is_none());
    }
}
