//! The index snapshot as a reader holds it: where each entry and last run is in the file,
//! each read and parsed only when asked for.
//!
//! `pipe plan` over a filled cache of 100,000 results asks one question of most of them
//! (is this key there?) and reads a handful; parsing every entry and every last run into
//! maps of strings cost it a fifth of its time and 100 MB (#27).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufRead;
use std::sync::Arc;

use super::index::{Entry, IndexSnapshot, LastRun};
use crate::hash::StageKey;

/// Where one value is in the text.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

/// Where the values are read from when asked for.
#[derive(Debug, Clone)]
enum Source {
    /// The text, held (tests, small snapshots).
    Text(Arc<str>),
    /// The file it was scanned from, kept open: the holder replaces the snapshot by a
    /// rename, so this stays the text that was scanned.
    File(Arc<File>),
}

impl Default for Source {
    fn default() -> Self {
        Source::Text(Arc::from(""))
    }
}

/// A snapshot's layout: where each value is, values left unread (see the module doc).
#[derive(Debug, Clone, Default)]
pub(super) struct SnapshotText {
    source: Source,
    generation: u64,
    entries: HashMap<StageKey, Span>,
    /// By `pipeline\0stage`.
    last_run: HashMap<String, Span>,
}

/// A snapshot whose text is not the JSON object the holder writes.
#[derive(Debug, thiserror::Error)]
pub(super) enum ScanError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a snapshot: {0}")]
    Layout(&'static str),
}

impl SnapshotText {
    /// The layout of `text` (an `index-snapshot.json`), which it keeps.
    #[cfg(test)]
    pub fn parse(text: String) -> Result<Self, ScanError> {
        let layout = Layout::scan(text.as_bytes(), Sections::All)?;
        Ok(layout.into_snapshot(Source::Text(Arc::from(text))))
    }

    /// The layout of the snapshot in `file`, streamed through a small buffer (never held
    /// whole: at 100,000 results its text was 80 MB of `plan`'s memory, #27); values are
    /// read from the file when asked for.
    pub fn scan(file: File) -> Result<Self, ScanError> {
        let layout = Layout::scan(
            std::io::BufReader::with_capacity(1 << 20, &file),
            Sections::All,
        )?;
        Ok(layout.into_snapshot(Source::File(Arc::new(file))))
    }

    /// [`SnapshotText::scan`] up to the end of `entries` (written before `last_run`):
    /// the holder reads its entries here but its last runs from sled, and the last runs
    /// are half the text.
    pub fn scan_entries(file: File) -> Result<Self, ScanError> {
        let layout = Layout::scan(
            std::io::BufReader::with_capacity(1 << 20, &file),
            Sections::UpToEntries,
        )?;
        Ok(layout.into_snapshot(Source::File(Arc::new(file))))
    }

    fn value(&self, span: Span) -> Option<String> {
        match &self.source {
            Source::Text(text) => text
                .get(span.start..span.start + span.len)
                .map(str::to_string),
            Source::File(file) => {
                use std::os::unix::fs::FileExt;
                let mut bytes = vec![0; span.len];
                file.read_exact_at(&mut bytes, span.start as u64).ok()?;
                String::from_utf8(bytes).ok()
            }
        }
    }

    fn parsed<T: serde::de::DeserializeOwned>(&self, span: Span) -> Result<T, serde_json::Error> {
        let text = self.value(span).unwrap_or_default();
        serde_json::from_str(&text)
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
            .map(|span| self.parsed(*span))
            .transpose()
    }

    /// Every entry that parses.
    pub fn entries(&self) -> Vec<(StageKey, Entry)> {
        self.entries
            .iter()
            .filter_map(|(k, span)| Some((*k, self.parsed(*span).ok()?)))
            .collect()
    }

    /// The last run recorded at `pipeline\0stage` (`None` too where it does not parse).
    pub fn last_run(&self, at: &str) -> Option<LastRun> {
        let span = self.last_run.get(at)?;
        self.parsed(*span).ok()
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

/// The members of the snapshot's object that are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Generation,
    Entries,
    LastRun,
    Other,
}

/// How much of the text a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sections {
    All,
    /// Stops where `entries` ends (the generation comes before it).
    UpToEntries,
}

/// What one pass over the text finds: the generation and each value's place. A byte
/// scanner, not a JSON parser: it follows strings and nesting to find the members of
/// `entries` and `last_run` and where each value starts and ends; the values themselves
/// are parsed (and their errors found) when read.
#[derive(Default)]
struct Layout {
    generation: u64,
    entries: HashMap<StageKey, Span>,
    last_run: HashMap<String, Span>,
}

/// The scanner's state between bytes (the text comes in buffers).
#[derive(Default)]
struct Scanner {
    pos: usize,
    /// Containers open.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// A member name is being read (its raw bytes, escapes kept).
    reading_key: bool,
    key: Vec<u8>,
    /// The next string at depth 1 (or 2, inside a section) is a member name.
    expect_key: [bool; 3],
    section: Option<Section>,
    /// Inside a section: after the `:` of a member, its value until `,` or `}`.
    in_value: bool,
    value_start: Option<usize>,
    value_end: usize,
    generation: Vec<u8>,
    seen_top: bool,
    /// The `entries` member has ended.
    entries_done: bool,
}

impl Layout {
    fn scan(mut input: impl BufRead, sections: Sections) -> Result<Layout, ScanError> {
        let mut scanner = Scanner::default();
        let mut layout = Layout::default();
        loop {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            let mut i = 0;
            while i < n {
                // inside a string only a quote or a backslash matters: skip to it
                if scanner.in_string && !scanner.escaped {
                    let run = memchr::memchr2(b'"', b'\\', &chunk[i..]).unwrap_or(n - i);
                    scanner.string_run(&chunk[i..i + run]);
                    i += run;
                    if i == n {
                        break;
                    }
                }
                scanner.byte(chunk[i], &mut layout)?;
                i += 1;
                if sections == Sections::UpToEntries && scanner.entries_done {
                    return Ok(layout);
                }
            }
            input.consume(n);
        }
        if !scanner.seen_top || scanner.depth != 0 || scanner.in_string {
            return Err(ScanError::Layout("the text ends inside the object"));
        }
        Ok(layout)
    }

    fn into_snapshot(self, source: Source) -> SnapshotText {
        SnapshotText {
            source,
            generation: self.generation,
            entries: self.entries,
            last_run: self.last_run,
        }
    }
}

impl Scanner {
    fn tracked(&self) -> bool {
        matches!(self.section, Some(Section::Entries | Section::LastRun))
    }

    fn byte(&mut self, b: u8, layout: &mut Layout) -> Result<(), ScanError> {
        let p = self.pos;
        self.pos += 1;
        if self.in_string {
            if self.in_value {
                self.value_end = p + 1;
            }
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.reading_key {
                    self.reading_key = false;
                    return Ok(());
                }
            }
            if self.reading_key {
                self.key.push(b);
            }
            return Ok(());
        }
        if b.is_ascii_whitespace() {
            return Ok(());
        }
        let d = self.depth;
        match b {
            b'"' => {
                self.in_string = true;
                let key_here = (d == 1 && self.expect_key[1])
                    || (d == 2 && self.tracked() && self.expect_key[2]);
                if key_here {
                    self.expect_key[d] = false;
                    self.reading_key = true;
                    self.key.clear();
                } else {
                    self.value_byte(p);
                }
            }
            b':' => {
                if d == 1 {
                    self.section = Some(match self.key.as_slice() {
                        b"generation" => Section::Generation,
                        b"entries" => Section::Entries,
                        b"last_run" => Section::LastRun,
                        _ => Section::Other,
                    });
                    self.generation.clear();
                } else if d == 2 && self.tracked() {
                    self.in_value = true;
                    self.value_start = None;
                }
            }
            b',' => {
                if d == 2 && self.tracked() {
                    self.end_member(layout)?;
                    self.expect_key[2] = true;
                } else if d == 1 {
                    self.end_top_member(layout)?;
                    self.expect_key[1] = true;
                } else {
                    self.value_byte(p);
                }
            }
            b'{' | b'[' => {
                self.value_byte(p);
                if d == 0 {
                    if b != b'{' || self.seen_top {
                        return Err(ScanError::Layout("not one JSON object"));
                    }
                    self.seen_top = true;
                }
                self.depth += 1;
                if self.depth <= 2 {
                    self.expect_key[self.depth] = b == b'{';
                }
            }
            b'}' | b']' => {
                if d == 0 {
                    return Err(ScanError::Layout("a bracket closes nothing"));
                }
                if d == 2 && self.tracked() {
                    self.end_member(layout)?;
                } else if d == 1 {
                    self.end_top_member(layout)?;
                }
                self.depth -= 1;
                if self.depth >= 2 {
                    self.value_byte(p);
                }
            }
            _ => {
                if d == 1 && self.section == Some(Section::Generation) {
                    self.generation.push(b);
                }
                self.value_byte(p);
            }
        }
        Ok(())
    }

    /// Bytes inside a string that are neither its end nor an escape.
    fn string_run(&mut self, run: &[u8]) {
        if run.is_empty() {
            return;
        }
        self.pos += run.len();
        if self.in_value {
            self.value_end = self.pos;
        }
        if self.reading_key {
            self.key.extend_from_slice(run);
        }
    }

    /// A byte of a section member's value at position `p`.
    fn value_byte(&mut self, p: usize) {
        if self.in_value {
            self.value_start.get_or_insert(p);
            self.value_end = p + 1;
        }
    }

    /// The member of `entries` or `last_run` whose value ended here.
    fn end_member(&mut self, layout: &mut Layout) -> Result<(), ScanError> {
        if !self.in_value {
            return Ok(());
        }
        self.in_value = false;
        let Some(start) = self.value_start.take() else {
            return Err(ScanError::Layout("a member without a value"));
        };
        let span = Span {
            start,
            len: self.value_end - start,
        };
        match self.section {
            Some(Section::Entries) => {
                // keys that are not stage keys are left out, as the full parse left them
                let key = std::str::from_utf8(&self.key)
                    .ok()
                    .and_then(StageKey::from_hex);
                if let Some(key) = key {
                    layout.entries.insert(key, span);
                }
            }
            Some(Section::LastRun) => {
                let mut quoted = Vec::with_capacity(self.key.len() + 2);
                quoted.push(b'"');
                quoted.extend_from_slice(&self.key);
                quoted.push(b'"');
                let at: String = serde_json::from_slice(&quoted)
                    .map_err(|_| ScanError::Layout("a last-run name is not a JSON string"))?;
                layout.last_run.insert(at, span);
            }
            _ => {}
        }
        Ok(())
    }

    /// A member of the top object ended (a section, or the generation).
    fn end_top_member(&mut self, layout: &mut Layout) -> Result<(), ScanError> {
        if self.section == Some(Section::Generation) {
            layout.generation = std::str::from_utf8(&self.generation)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or(ScanError::Layout("the generation is not a number"))?;
        }
        if self.section == Some(Section::Entries) {
            self.entries_done = true;
        }
        self.section = None;
        Ok(())
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

    #[test]
    fn a_scanned_file_reads_as_the_parsed_snapshot_and_a_cut_one_is_refused() {
        let mut snapshot = IndexSnapshot {
            generation: 4096,
            ..IndexSnapshot::default()
        };
        for i in 0..50u8 {
            snapshot.entries.insert(
                StageKey([i; 32]).hex(),
                Entry {
                    stage: format!("s{i}[q=\"{{}}\",w=\\]"),
                    kind: "shell".into(),
                    inputs: vec!["ab".repeat(32)],
                    ..Entry::default()
                },
            );
            let material: crate::hash::KeyMaterial = serde_json::from_value(serde_json::json!({
                "kind": "shell", "version": 1, "inputs": {},
                "params": {"cmd": format!("echo '}}{i}' \"[\" > o"), "n": [1, {"x": null}]}
            }))
            .expect("material");
            snapshot.last_run.insert(
                format!("/p/pipe \"line\".yaml\0s{i}"),
                LastRun {
                    key: StageKey([i; 32]).hex(),
                    material,
                    input_stages: Default::default(),
                },
            );
        }
        let text = serde_json::to_string(&snapshot).expect("json");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index-snapshot.json");
        std::fs::write(&path, &text).expect("write");
        let scanned = SnapshotText::scan(File::open(&path).expect("open")).expect("scans");
        // the file replaced after the scan (as the holder does): values come from the old one
        std::fs::write(dir.path().join("new"), "{}").expect("write");
        std::fs::rename(dir.path().join("new"), &path).expect("replace");
        let back = scanned.to_snapshot();
        assert_eq!(back.generation, 4096);
        assert_eq!(
            serde_json::to_value(&back).expect("json"),
            serde_json::to_value(&snapshot).expect("json")
        );
        let cut = &text[..text.len() - 3];
        std::fs::write(&path, cut).expect("write");
        assert!(SnapshotText::scan(File::open(&path).expect("open")).is_err());
        std::fs::write(&path, "[1, 2]").expect("write");
        assert!(SnapshotText::scan(File::open(&path).expect("open")).is_err());
    }
}
