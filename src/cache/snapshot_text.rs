//! The index snapshot as a reader holds it: where each entry and last run is in the file,
//! each read and parsed only when asked for.
//!
//! `pipe plan` over a filled cache of 100,000 results asks one question of most of them
//! (is this key there?) and reads a handful; parsing every entry and every last run into
//! maps of strings cost it a fifth of its time and 100 MB (#27).
//!
//! The process that holds the cache reads its own opening snapshot the same way, and
//! copies its unchanged members into the next one ([`KeptMembers`]): sled keeps in memory
//! every node it reads (see `super::index::OpenedAs`).

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
        Self::scan_file(file, Sections::All)
    }

    /// [`SnapshotText::scan`] up to the end of `entries` (written before `last_run`, and
    /// half the text): the holder's entries (see [`super::index::OpenedAs`]).
    pub fn scan_entries(file: File) -> Result<Self, ScanError> {
        Self::scan_file(file, Sections::UpToEntries)
    }

    /// [`SnapshotText::scan`] for the last runs alone: the holder's, scanned when it
    /// first asks for one (a no-op run asks for none).
    pub fn scan_last_runs(file: File) -> Result<Self, ScanError> {
        Self::scan_file(file, Sections::LastRuns)
    }

    fn scan_file(file: File, sections: Sections) -> Result<Self, ScanError> {
        let layout = Layout::scan(std::io::BufReader::with_capacity(1 << 20, &file), sections)?;
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

    /// The text from its start (a file is read at offsets, never moved).
    fn reader(&self) -> Box<dyn BufRead + '_> {
        match &self.source {
            Source::Text(text) => Box::new(text.as_bytes()),
            Source::File(file) => Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                FileFrom { file, at: 0 },
            )),
        }
    }

    /// The members of its `entries` and `last_run` that `leave_out_entry` and
    /// `leave_out_last_run` do not name, as runs of text to copy as they are: what the
    /// holder's next snapshot keeps of the one it opened with (see [`KeptMembers`]).
    pub fn kept_members(
        &self,
        leave_out_entry: impl Fn(&StageKey) -> bool,
        leave_out_last_run: impl Fn(&str) -> bool,
    ) -> Result<KeptMembers, ScanError> {
        let mut keeping = Keeping {
            leave_out_entry,
            leave_out_last_run,
            kept: KeptMembers::default(),
            previous_kept: false,
        };
        scan(self.reader(), Sections::All, &mut keeping)?;
        Ok(keeping.kept)
    }

    /// Writes `runs` of its text to `out`, separated by commas; whether it wrote any.
    fn copy_runs(&self, runs: &[Span], out: &mut impl std::io::Write) -> std::io::Result<bool> {
        for (i, run) in runs.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            match &self.source {
                Source::Text(text) => {
                    out.write_all(&text.as_bytes()[run.start..run.start + run.len])?
                }
                Source::File(file) => {
                    let from = FileFrom {
                        file,
                        at: run.start as u64,
                    };
                    let copied =
                        std::io::copy(&mut std::io::Read::take(from, run.len as u64), out)?;
                    if copied != run.len as u64 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
        Ok(!runs.is_empty())
    }

    fn parsed<T: serde::de::DeserializeOwned>(&self, span: Span) -> Result<T, serde_json::Error> {
        let text = self.value(span).unwrap_or_default();
        serde_json::from_str(&text)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many entries it lists.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
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

    /// Whether the last run at `pipeline\0stage` recorded `key` (hex), told by the
    /// record's first bytes where they are [`LastRun::written_head`].
    pub fn last_run_is(&self, at: &str, key: &str) -> bool {
        let Some(span) = self.last_run.get(at) else {
            return false;
        };
        let expected = LastRun::written_head(key);
        let head = Span {
            start: span.start,
            len: span.len.min(expected.len()),
        };
        if self.value(head).is_some_and(|h| h == expected) {
            return true;
        }
        self.last_run(at).is_some_and(|r| r.key == key)
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

/// A file read from offset `at` on, at offsets (`pread`): readers share the file.
struct FileFrom<'f> {
    file: &'f File,
    at: u64,
}

impl std::io::Read for FileFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The members of a snapshot kept in the next one: each section's runs of consecutive
/// kept members (`"name":value,"name":value`), copied as they are. The holder's next
/// snapshot is the one it opened with less the results it changed since, plus those
/// results as sled has them now: the text of 100,000 unchanged results is copied, not
/// read back out of sled, which keeps every node it reads (#27).
#[derive(Default)]
pub(super) struct KeptMembers {
    entries: Vec<Span>,
    last_run: Vec<Span>,
}

/// A scan that finds the [`KeptMembers`]: `leave_out_entry` and `leave_out_last_run` name
/// the members left out.
struct Keeping<L, R> {
    leave_out_entry: L,
    leave_out_last_run: R,
    kept: KeptMembers,
    /// The member before this one (of the same section) was kept: a kept member extends
    /// its run.
    previous_kept: bool,
}

impl KeptMembers {
    /// Writes the kept members of `entries` (of `text`, which was scanned) to `out`,
    /// comma-separated; whether there were any.
    pub fn copy_entries(
        &self,
        text: &SnapshotText,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<bool> {
        text.copy_runs(&self.entries, out)
    }

    /// [`KeptMembers::copy_entries`] for `last_run`.
    pub fn copy_last_runs(
        &self,
        text: &SnapshotText,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<bool> {
        text.copy_runs(&self.last_run, out)
    }
}

impl<L: Fn(&StageKey) -> bool, R: Fn(&str) -> bool> Members for Keeping<L, R> {
    fn generation(&mut self, _: u64) {}

    fn member(
        &mut self,
        section: Section,
        name: &[u8],
        member_start: usize,
        value: Span,
    ) -> Result<(), ScanError> {
        let (keep, runs) = match section {
            Section::Entries => {
                // names that are not stage keys are left out, as a read leaves them out
                let key = std::str::from_utf8(name).ok().and_then(StageKey::from_hex);
                let keep = key.is_some_and(|key| !(self.leave_out_entry)(&key));
                (keep, &mut self.kept.entries)
            }
            Section::LastRun => (
                !(self.leave_out_last_run)(&last_run_name(name)?),
                &mut self.kept.last_run,
            ),
            Section::Generation | Section::Other => return Ok(()),
        };
        // a section's first member finds no run of its own section to extend
        let end = value.start + value.len;
        match runs.last_mut() {
            Some(run) if keep && self.previous_kept => {
                run.len = end - run.start;
            }
            _ if keep => runs.push(Span {
                start: member_start,
                len: end - member_start,
            }),
            _ => {}
        }
        self.previous_kept = keep;
        Ok(())
    }
}

/// How much of the text a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sections {
    All,
    /// Stops where `entries` ends (the generation comes before it).
    UpToEntries,
    /// The generation and `last_run`; the entries are passed over.
    LastRuns,
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
    skip_entries: bool,
}

/// A last-run name as written in the text (escapes kept), unescaped.
fn last_run_name(raw: &[u8]) -> Result<String, ScanError> {
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted)
        .map_err(|_| ScanError::Layout("a last-run name is not a JSON string"))
}

impl Members for Layout {
    fn generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    fn member(
        &mut self,
        section: Section,
        name: &[u8],
        _member_start: usize,
        value: Span,
    ) -> Result<(), ScanError> {
        match section {
            Section::Entries if self.skip_entries => {}
            Section::Entries => {
                // keys that are not stage keys are left out, as the full parse left them
                let key = std::str::from_utf8(name).ok().and_then(StageKey::from_hex);
                if let Some(key) = key {
                    self.entries.insert(key, value);
                }
            }
            Section::LastRun => {
                self.last_run.insert(last_run_name(name)?, value);
            }
            Section::Generation | Section::Other => {}
        }
        Ok(())
    }
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
    /// Where the member being read starts (its name's quote).
    member_start: usize,
}

/// What a scan reports, member by member.
trait Members {
    fn generation(&mut self, generation: u64);
    /// A member of `section` (`entries` or `last_run`): its name as written (escapes
    /// kept), where the member starts (its name's quote) and where its value is.
    fn member(
        &mut self,
        section: Section,
        name: &[u8],
        member_start: usize,
        value: Span,
    ) -> Result<(), ScanError>;
}

/// One pass of the scanner over `input`, reporting to `members`.
fn scan(
    mut input: impl BufRead,
    sections: Sections,
    members: &mut impl Members,
) -> Result<(), ScanError> {
    let mut scanner = Scanner::default();
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
            scanner.byte(chunk[i], members)?;
            i += 1;
            if sections == Sections::UpToEntries && scanner.entries_done {
                return Ok(());
            }
        }
        input.consume(n);
    }
    if !scanner.seen_top || scanner.depth != 0 || scanner.in_string {
        return Err(ScanError::Layout("the text ends inside the object"));
    }
    Ok(())
}

impl Layout {
    fn scan(input: impl BufRead, sections: Sections) -> Result<Layout, ScanError> {
        let mut layout = Layout {
            skip_entries: sections == Sections::LastRuns,
            ..Layout::default()
        };
        scan(input, sections, &mut layout)?;
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

    fn byte(&mut self, b: u8, layout: &mut impl Members) -> Result<(), ScanError> {
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
                    self.member_start = p;
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
    fn end_member(&mut self, members: &mut impl Members) -> Result<(), ScanError> {
        if !self.in_value {
            return Ok(());
        }
        self.in_value = false;
        let Some(start) = self.value_start.take() else {
            return Err(ScanError::Layout("a member without a value"));
        };
        let value = Span {
            start,
            len: self.value_end - start,
        };
        match self.section {
            Some(section @ (Section::Entries | Section::LastRun)) => {
                members.member(section, &self.key, self.member_start, value)
            }
            _ => Ok(()),
        }
    }

    /// A member of the top object ended (a section, or the generation).
    fn end_top_member(&mut self, members: &mut impl Members) -> Result<(), ScanError> {
        if self.section == Some(Section::Generation) {
            members.generation(
                std::str::from_utf8(&self.generation)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or(ScanError::Layout("the generation is not a number"))?,
            );
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
                    inputs: vec![StageKey([0xab; 32])],
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

    #[test]
    fn kept_members_copy_as_runs_of_the_text_whatever_is_left_out() {
        let mut snapshot = IndexSnapshot::default();
        for i in 0..5u8 {
            snapshot
                .entries
                .insert(StageKey([i; 32]).hex(), Entry::default());
        }
        let material: crate::hash::KeyMaterial = serde_json::from_value(serde_json::json!({
            "kind": "shell", "version": 1, "inputs": {}, "params": {}
        }))
        .expect("material");
        for at in ["p\0a", "p\0b"] {
            let run = LastRun {
                key: String::new(),
                material: material.clone(),
                input_stages: Default::default(),
            };
            snapshot.last_run.insert(at.into(), run);
        }
        let text =
            SnapshotText::parse(serde_json::to_string(&snapshot).expect("json")).expect("scans");
        // the first, a middle and the last entry left out; every last run
        let left_out = [0u8, 2, 4];
        let kept = text
            .kept_members(|k| left_out.contains(&k.0[0]), |_| true)
            .expect("scans");
        assert_eq!(kept.entries.len(), 2, "two runs of one member each");
        let mut out = b"{\"generation\":0,\"entries\":{".to_vec();
        assert!(kept.copy_entries(&text, &mut out).expect("copies"));
        out.extend_from_slice(b"},\"last_run\":{");
        assert!(!kept.copy_last_runs(&text, &mut out).expect("copies"));
        out.extend_from_slice(b"}}");
        let back: IndexSnapshot = serde_json::from_slice(&out).expect("valid JSON");
        let keys: Vec<String> = back.entries.keys().cloned().collect();
        assert_eq!(keys, [StageKey([1; 32]).hex(), StageKey([3; 32]).hex()]);
        assert!(back.last_run.is_empty());
        // nothing left out: one run a section, the text as it was
        let kept = text.kept_members(|_| false, |_| false).expect("scans");
        assert_eq!((kept.entries.len(), kept.last_run.len()), (1, 1));
    }
}
