//! The index snapshot as a reader holds it: the file's text and where each entry and last
//! run is in it, each parsed only when asked for.
//!
//! `pipe plan` over a filled cache of 100,000 results asks one question of most of them
//! (is this key there?) and reads a handful; parsing every entry and every last run into
//! maps of strings cost it a fifth of its time and 100 MB (#27).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::index::{Entry, IndexSnapshot, LastRun};
use crate::hash::StageKey;

/// Where one value is in the text.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

/// A snapshot read from its JSON text, values left unparsed (see the module doc).
#[derive(Debug, Clone, Default)]
pub(super) struct SnapshotText {
    text: String,
    generation: u64,
    entries: HashMap<StageKey, Span>,
    /// By `pipeline\0stage`.
    last_run: HashMap<String, Span>,
}

/// The snapshot's layout, its values borrowed from the text as they are.
#[derive(Deserialize)]
struct Layout<'a> {
    #[serde(default)]
    generation: u64,
    #[serde(borrow, default)]
    entries: HashMap<Cow<'a, str>, &'a RawValue>,
    #[serde(borrow, default)]
    last_run: HashMap<Cow<'a, str>, &'a RawValue>,
}

impl SnapshotText {
    /// Reads the layout of `text` (an `index-snapshot.json`); keys that are not stage keys
    /// are left out, as the full parse left them out.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        let layout: Layout = serde_json::from_str(&text)?;
        let base = text.as_ptr() as usize;
        // a borrowed value is a slice of `text`: its place is its distance from the start
        let span = |raw: &RawValue| Span {
            start: raw.get().as_ptr() as usize - base,
            len: raw.get().len(),
        };
        let entries = layout
            .entries
            .iter()
            .filter_map(|(k, v)| Some((StageKey::from_hex(k)?, span(v))))
            .collect();
        let last_run = layout
            .last_run
            .iter()
            .map(|(k, v)| (k.to_string(), span(v)))
            .collect();
        let generation = layout.generation;
        Ok(SnapshotText {
            text,
            generation,
            entries,
            last_run,
        })
    }

    fn value(&self, span: Span) -> &str {
        &self.text[span.start..span.start + span.len]
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn contains(&self, key: &StageKey) -> bool {
        self.entries.contains_key(key)
    }

    /// The entry of `key`; an entry that does not parse is an error about it.
    pub fn entry(&self, key: &StageKey) -> Result<Option<Entry>, serde_json::Error> {
        self.entries
            .get(key)
            .map(|span| serde_json::from_str(self.value(*span)))
            .transpose()
    }

    /// Every entry that parses.
    pub fn entries(&self) -> Vec<(StageKey, Entry)> {
        self.entries
            .iter()
            .filter_map(|(k, span)| Some((*k, serde_json::from_str(self.value(*span)).ok()?)))
            .collect()
    }

    /// The last run recorded at `pipeline\0stage` (`None` too where it does not parse).
    pub fn last_run(&self, at: &str) -> Option<LastRun> {
        let span = self.last_run.get(at)?;
        serde_json::from_str(self.value(*span)).ok()
    }

    /// Everything, parsed.
    pub fn to_snapshot(&self) -> IndexSnapshot {
        IndexSnapshot {
            generation: self.generation,
            entries: self
                .entries()
                .into_iter()
                .map(|(k, e)| (k.hex(), e))
                .collect(),
            last_run: self
                .last_run
                .keys()
                .filter_map(|at| Some((at.clone(), self.last_run(at)?)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_where_they_are_and_parsed_on_demand() {
        let key = StageKey([7; 32]);
        let mut snapshot = IndexSnapshot {
            generation: 12,
            ..IndexSnapshot::default()
        };
        snapshot.entries.insert(
            key.hex(),
            Entry {
                stage: "a[seed=1]".into(),
                kind: "shell".into(),
                seconds: 1.5,
                ..Entry::default()
            },
        );
        snapshot
            .entries
            .insert("not-a-key".into(), Entry::default());
        let text = serde_json::to_string(&snapshot).expect("json");
        let read = SnapshotText::parse(text).expect("parses");
        assert_eq!(read.generation(), 12);
        assert!(read.contains(&key));
        assert!(!read.contains(&StageKey([8; 32])));
        let entry = read.entry(&key).expect("parses").expect("there");
        assert_eq!((entry.stage.as_str(), entry.seconds), ("a[seed=1]", 1.5));
        assert_eq!(read.entries().len(), 1);
        assert!(read.last_run("p\0a").is_none());
        let back = read.to_snapshot();
        assert_eq!(back.entries.len(), 1);
        assert_eq!(back.generation, 12);
    }
}
