//! How the index keeps its entries and last runs in sled: a compact binary form, not JSON.
//!
//! sled holds every value a process writes for as long as the process runs: a cold run
//! of 100,000 stages held ~63 MB of JSON values (an entry ~304 bytes, a last run ~324),
//! most of it hashes as hex text and field names (#27). A binary value starts with
//! [`BINARY`] (a JSON value starts with `{`), hashes are 32 bytes, lengths are LEB128
//! varints, fields go in a fixed order. Values that earlier builds wrote as JSON are read
//! as before and written in this form when they next change. The snapshot
//! (`index-snapshot.json`) stays JSON: its writer converts each value ([`as_json`]).

use std::collections::BTreeMap;

use super::index::{Entry, LastRun, LastRunOf};
use crate::hash::{KeyMaterial, StageKey};

/// The first byte of a binary value (its format's version).
const BINARY: u8 = 1;

/// A stored value that does not decode.
#[derive(Debug, thiserror::Error)]
pub(super) enum ValueError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("binary value cut short or malformed")]
    Binary,
}

/// Which tree a value is from.
#[derive(Debug, Clone, Copy)]
pub(super) enum ValueKind {
    Entry,
    LastRun,
}

pub(super) fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Out(Vec::with_capacity(128 + 33 * e.inputs.len()));
    out.0.push(BINARY);
    out.hash(&e.manifest);
    out.text(&e.stage);
    out.text(&e.kind);
    out.0.extend_from_slice(&e.seconds.to_le_bytes());
    out.uint(e.bytes);
    out.uint(e.created);
    out.text(&e.pipeline);
    out.opt_text(e.profile.as_deref());
    out.uint(e.inputs.len() as u64);
    for key in &e.inputs {
        out.key(key);
    }
    out.0
}

pub(super) fn decode_entry(v: &[u8]) -> Result<Entry, ValueError> {
    if v.first() != Some(&BINARY) {
        return Ok(serde_json::from_slice(v)?);
    }
    let mut r = In(&v[1..]);
    let entry = Entry {
        manifest: r.hash()?,
        stage: r.text()?,
        kind: r.text()?,
        seconds: r.f64()?,
        bytes: r.uint()?,
        created: r.uint()?,
        pipeline: r.text()?,
        profile: r.opt_text()?,
        inputs: {
            let n = r.len()?;
            (0..n).map(|_| r.key()).collect::<Result<_, _>>()?
        },
    };
    r.end()?;
    Ok(entry)
}

pub(super) fn encode_last_run(run: &LastRun) -> Vec<u8> {
    let m = &run.material;
    let mut out = Out(Vec::with_capacity(256));
    out.0.push(BINARY);
    out.hash(&run.key);
    out.text(&m.kind);
    out.uint(u64::from(m.version));
    out.text(&m.params.to_string());
    out.map(owned_lists(&m.inputs), |out, key| out.hash(key));
    out.opt_text(m.fingerprint.as_deref());
    out.opt_text(m.backend.as_deref());
    out.map(owned_lists(&run.input_stages), |out, name| out.text(name));
    out.0
}

/// [`encode_last_run`] of the run `run` borrows (the same bytes).
pub(super) fn encode_last_run_of(run: &LastRunOf) -> Vec<u8> {
    let results: usize = run.inputs.iter().map(|(_, bound)| bound.len()).sum();
    let mut out = Out(Vec::with_capacity(256 + 56 * results));
    out.0.push(BINARY);
    out.key(&run.key);
    out.text(run.kind);
    out.uint(u64::from(run.version));
    out.text(run.params);
    let inputs = || {
        run.inputs
            .iter()
            .map(|(name, bound)| (*name, bound.as_slice()))
    };
    out.map(inputs(), |out, input| match input.sub {
        None => out.key(&input.key),
        // as `Out::hash` writes `<hex>/<sub>`
        Some(sub) => {
            out.0.push(HASH_AND_PATH);
            out.0.extend_from_slice(&input.key.0);
            out.uint(sub.len() as u64 + 1);
            out.0.push(b'/');
            out.0.extend_from_slice(sub.as_bytes());
        }
    });
    out.opt_text(run.fingerprint);
    out.opt_text(run.backend);
    out.map(inputs(), |out, input| out.text(input.stage));
    out.0
}

pub(super) fn decode_last_run(v: &[u8]) -> Result<LastRun, ValueError> {
    if v.first() != Some(&BINARY) {
        return Ok(serde_json::from_slice(v)?);
    }
    let mut r = In(&v[1..]);
    let key = r.hash()?;
    let material = KeyMaterial {
        kind: r.text()?,
        version: u32::try_from(r.uint()?).map_err(|_| ValueError::Binary)?,
        params: serde_json::from_str(&r.text()?)?,
        inputs: r.map(In::hash)?,
        fingerprint: r.opt_text()?,
        backend: r.opt_text()?,
    };
    let input_stages = r.map(In::text)?;
    r.end()?;
    Ok(LastRun {
        key,
        material,
        input_stages,
    })
}

/// Whether the stored last run `v` records `key` (hex), read from its first bytes where
/// they tell.
pub(super) fn last_run_records(v: &[u8], key: &str) -> bool {
    if v.first() == Some(&BINARY) {
        return In(&v[1..]).hash().is_ok_and(|k| k == key);
    }
    if v.starts_with(LastRun::written_head(key).as_bytes()) {
        return true;
    }
    serde_json::from_slice::<LastRun>(v).is_ok_and(|r| r.key == key)
}

/// A stored value as the snapshot lists it: JSON text an earlier build stored, or a
/// binary value, written out as the JSON of its decoded value.
pub(super) enum AsJson<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8], ValueKind),
}

impl AsJson<'_> {
    /// Writes the JSON text. A binary value is written field by field as it is read,
    /// never decoded into owned fields nor buffered: a table's last run over 50,000
    /// cells decoded to 8 MB of hex keys and names, and its text took 4.4 MB more, at
    /// every snapshot write (#27).
    pub(super) fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        match self {
            AsJson::Text(text) => out.write_all(text),
            AsJson::Binary(v, kind) => transcode(v, *kind, out).map_err(|e| match e {
                ValueError::Json(e) => e.into(),
                ValueError::Binary => std::io::Error::other(e),
            }),
        }
    }
}

/// A stored value as the snapshot lists it; `None` when it does not decode (a full parse
/// of the snapshot would leave it out).
pub(super) fn as_json(v: &[u8], kind: ValueKind) -> Option<AsJson<'_>> {
    if v.first() != Some(&BINARY) {
        return serde_json::from_slice::<&serde_json::value::RawValue>(v)
            .is_ok()
            .then_some(AsJson::Text(v));
    }
    // read once without writing: a value that does not decode is left out whole
    transcode(v, kind, &mut std::io::sink()).ok()?;
    Some(AsJson::Binary(v, kind))
}

/// Writes binary value `v` as serde_json writes its decoded [`Entry`] or [`LastRun`]
/// (fields in their order, `None`s and an empty `inputs` as serde's attributes say).
fn transcode(v: &[u8], kind: ValueKind, out: &mut impl std::io::Write) -> Result<(), ValueError> {
    let mut r = In(&v[1..]);
    let mut w = JsonOut(out);
    match kind {
        ValueKind::Entry => {
            w.raw("{\"manifest\":")?;
            w.hash(&mut r)?;
            w.raw(",\"stage\":")?;
            w.text(r.str()?)?;
            w.raw(",\"kind\":")?;
            w.text(r.str()?)?;
            w.raw(",\"seconds\":")?;
            w.value(&r.f64()?)?;
            w.raw(",\"bytes\":")?;
            w.value(&r.uint()?)?;
            w.raw(",\"created\":")?;
            w.value(&r.uint()?)?;
            w.raw(",\"pipeline\":")?;
            w.text(r.str()?)?;
            w.raw(",\"profile\":")?;
            w.value(&r.opt_str()?)?;
            let n = r.len()?;
            if n > 0 {
                w.raw(",\"inputs\":[")?;
                for i in 0..n {
                    if i > 0 {
                        w.raw(",")?;
                    }
                    w.key(&r.key()?)?;
                }
                w.raw("]")?;
            }
            w.raw("}")?;
        }
        ValueKind::LastRun => {
            w.raw("{\"key\":")?;
            w.hash(&mut r)?;
            w.raw(",\"material\":{\"kind\":")?;
            w.text(r.str()?)?;
            w.raw(",\"version\":")?;
            w.value(&u32::try_from(r.uint()?).map_err(|_| ValueError::Binary)?)?;
            w.raw(",\"params\":")?;
            // written as its value prints (the canonical text prints as itself)
            w.value(&serde_json::from_str::<serde_json::Value>(r.str()?)?)?;
            w.raw(",\"inputs\":")?;
            w.map(&mut r, |w, r| w.hash(r))?;
            if let Some(fingerprint) = r.opt_str()? {
                w.raw(",\"fingerprint\":")?;
                w.text(fingerprint)?;
            }
            if let Some(backend) = r.opt_str()? {
                w.raw(",\"backend\":")?;
                w.text(backend)?;
            }
            w.raw("},\"input_stages\":")?;
            w.map(&mut r, |w, r| w.text(r.str()?))?;
            w.raw("}")?;
        }
    }
    r.end()
}

/// JSON being written by [`transcode`].
struct JsonOut<'w, W: std::io::Write>(&'w mut W);

impl<W: std::io::Write> JsonOut<'_, W> {
    fn raw(&mut self, text: &str) -> Result<(), ValueError> {
        self.0
            .write_all(text.as_bytes())
            .map_err(|e| serde_json::Error::io(e).into())
    }

    fn value(&mut self, v: &impl serde::Serialize) -> Result<(), ValueError> {
        Ok(serde_json::to_writer(&mut *self.0, v)?)
    }

    fn text(&mut self, s: &str) -> Result<(), ValueError> {
        self.value(&s)
    }

    /// A key's hex, quoted, from its bytes (no text made).
    fn key(&mut self, key: &StageKey) -> Result<(), ValueError> {
        let mut quoted = [b'"'; 66];
        quoted[1..65].copy_from_slice(&key.hex_digits());
        self.0
            .write_all(&quoted)
            .map_err(|e| serde_json::Error::io(e).into())
    }

    /// A field [`Out::hash`] wrote.
    fn hash(&mut self, r: &mut In) -> Result<(), ValueError> {
        match r.byte()? {
            HASH => self.key(&r.key_bytes()?),
            HASH_AND_PATH => {
                let key = r.key_bytes()?;
                self.text(&(key.hex() + r.str()?))
            }
            TEXT => self.text(r.str()?),
            _ => Err(ValueError::Binary),
        }
    }

    /// A map [`Out::map`] wrote, each item by `item`.
    fn map<'v>(
        &mut self,
        r: &mut In<'v>,
        item: impl Fn(&mut Self, &mut In<'v>) -> Result<(), ValueError>,
    ) -> Result<(), ValueError> {
        self.raw("{")?;
        for i in 0..r.len()? {
            if i > 0 {
                self.raw(",")?;
            }
            self.text(r.str()?)?;
            self.raw(":[")?;
            for j in 0..r.len()? {
                if j > 0 {
                    self.raw(",")?;
                }
                item(self, r)?;
            }
            self.raw("]")?;
        }
        self.raw("}")
    }
}

/// The JSON text [`as_json`] writes.
#[cfg(test)]
fn json_text(v: &[u8], kind: ValueKind) -> Option<Vec<u8>> {
    let mut text = Vec::new();
    as_json(v, kind)?.write_to(&mut text).ok()?;
    Some(text)
}

/// A map of lists as [`Out::map`] takes it.
fn owned_lists(
    m: &BTreeMap<String, Vec<String>>,
) -> impl ExactSizeIterator<Item = (&str, &[String])> {
    m.iter()
        .map(|(name, list)| (name.as_str(), list.as_slice()))
}

/// A value being written.
struct Out(Vec<u8>);

/// Tags of a hash field: most are a stage key or blob hash (64 lowercase hex digits),
/// some a key with a `/sub/path`, any other text is kept as it is.
const HASH: u8 = 0;
const TEXT: u8 = 1;
const HASH_AND_PATH: u8 = 2;

impl Out {
    /// LEB128: seven bits a byte, low first.
    fn uint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn text(&mut self, s: &str) {
        self.uint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_text(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.text(s);
            }
        }
    }

    /// A stage key, as [`Out::hash`] writes one given its hex.
    fn key(&mut self, key: &StageKey) {
        self.0.push(HASH);
        self.0.extend_from_slice(&key.0);
    }

    fn hash(&mut self, s: &str) {
        // a text whose 64th byte is inside a character is no key (and not cut there)
        let at = if s.is_char_boundary(64) { 64 } else { s.len() };
        let (head, rest) = s.split_at(at.min(s.len()));
        // only a text that reads back the same (lowercase hex) is kept as bytes
        match StageKey::from_hex(head).filter(|k| k.hex() == head) {
            Some(key) if rest.is_empty() => {
                self.0.push(HASH);
                self.0.extend_from_slice(&key.0);
            }
            Some(key) if rest.starts_with('/') => {
                self.0.push(HASH_AND_PATH);
                self.0.extend_from_slice(&key.0);
                self.text(rest);
            }
            _ => {
                self.0.push(TEXT);
                self.text(s);
            }
        }
    }

    /// Name -> list, in the order given, each list item by `item`.
    fn map<'m, T: 'm>(
        &mut self,
        entries: impl ExactSizeIterator<Item = (&'m str, &'m [T])>,
        item: impl Fn(&mut Self, &T),
    ) {
        self.uint(entries.len() as u64);
        for (name, values) in entries {
            self.text(name);
            self.uint(values.len() as u64);
            for v in values {
                item(self, v);
            }
        }
    }
}

/// A value being read.
struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        if self.0.len() < n {
            return Err(ValueError::Binary);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, ValueError> {
        Ok(self.bytes(1)?[0])
    }

    fn uint(&mut self) -> Result<u64, ValueError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(ValueError::Binary)
    }

    fn len(&mut self) -> Result<usize, ValueError> {
        // a length past what is left is damage, not a reason to reserve memory
        usize::try_from(self.uint()?)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or(ValueError::Binary)
    }

    /// A text, borrowed from the value.
    fn str(&mut self) -> Result<&'a str, ValueError> {
        let n = self.len()?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| ValueError::Binary)
    }

    fn opt_str(&mut self) -> Result<Option<&'a str>, ValueError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(ValueError::Binary),
        }
    }

    fn text(&mut self) -> Result<String, ValueError> {
        self.str().map(str::to_owned)
    }

    fn opt_text(&mut self) -> Result<Option<String>, ValueError> {
        Ok(self.opt_str()?.map(str::to_owned))
    }

    fn f64(&mut self) -> Result<f64, ValueError> {
        let b: [u8; 8] = self.bytes(8)?.try_into().map_err(|_| ValueError::Binary)?;
        Ok(f64::from_le_bytes(b))
    }

    fn key_bytes(&mut self) -> Result<StageKey, ValueError> {
        let b: [u8; 32] = self.bytes(32)?.try_into().map_err(|_| ValueError::Binary)?;
        Ok(StageKey(b))
    }

    /// A field [`Out::key`] wrote (any other is damage).
    fn key(&mut self) -> Result<StageKey, ValueError> {
        match self.byte()? {
            HASH => self.key_bytes(),
            _ => Err(ValueError::Binary),
        }
    }

    fn hash(&mut self) -> Result<String, ValueError> {
        match self.byte()? {
            HASH => Ok(self.key_bytes()?.hex()),
            HASH_AND_PATH => Ok(self.key_bytes()?.hex() + &self.text()?),
            TEXT => self.text(),
            _ => Err(ValueError::Binary),
        }
    }

    fn list(
        &mut self,
        item: fn(&mut Self) -> Result<String, ValueError>,
    ) -> Result<Vec<String>, ValueError> {
        let n = self.len()?;
        (0..n).map(|_| item(self)).collect()
    }

    fn map(
        &mut self,
        item: fn(&mut Self) -> Result<String, ValueError>,
    ) -> Result<BTreeMap<String, Vec<String>>, ValueError> {
        let n = self.len()?;
        (0..n)
            .map(|_| Ok((self.text()?, self.list(item)?)))
            .collect()
    }

    fn end(&self) -> Result<(), ValueError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValueError::Binary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: u8) -> String {
        StageKey([b; 32]).hex()
    }

    fn entry() -> Entry {
        Entry {
            manifest: hex(1),
            stage: "train[fold=3]".into(),
            kind: "shell".into(),
            seconds: 0.125,
            bytes: 300,
            created: 1_796_450_876,
            pipeline: "/p/bench.yaml".into(),
            profile: Some("cpu".into()),
            inputs: vec![StageKey([2; 32]), StageKey([3; 32])],
        }
    }

    fn last_run() -> LastRun {
        LastRun {
            key: hex(4),
            material: KeyMaterial {
                kind: "shell".into(),
                version: 3,
                params: serde_json::json!({"cmd": "echo é > o", "lr": 2e-5, "outs": ["o"]}),
                inputs: BTreeMap::from([
                    ("model".into(), vec![format!("{}/weights.bin", hex(5))]),
                    (
                        "up".into(),
                        vec![hex(6), "not a key".into(), hex(7).to_uppercase()],
                    ),
                ]),
                fingerprint: Some("f".into()),
                backend: None,
            },
            input_stages: BTreeMap::from([("up".into(), vec!["a".into(), "b[x=1]".into()])]),
        }
    }

    fn json(v: &impl serde::Serialize) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn values_read_back_as_written_and_smaller_than_json() {
        let e = entry();
        let stored = encode_entry(&e);
        assert_eq!(json(&decode_entry(&stored).unwrap()), json(&e));
        assert!(stored.len() * 2 < serde_json::to_vec(&e).unwrap().len());
        let r = last_run();
        let stored = encode_last_run(&r);
        assert_eq!(json(&decode_last_run(&stored).unwrap()), json(&r));
        assert!(last_run_records(&stored, &hex(4)));
        assert!(!last_run_records(&stored, &hex(5)));
    }

    #[test]
    fn json_values_of_earlier_builds_are_read_and_listed_as_they_are() {
        let e = serde_json::to_vec(&entry()).unwrap();
        assert_eq!(json(&decode_entry(&e).unwrap()), json(&entry()));
        assert_eq!(json_text(&e, ValueKind::Entry).unwrap(), &e[..]);
        let r = serde_json::to_vec(&last_run()).unwrap();
        assert_eq!(json(&decode_last_run(&r).unwrap()), json(&last_run()));
        assert!(last_run_records(&r, &hex(4)));
        assert!(json_text(b"{not json", ValueKind::LastRun).is_none());
    }

    #[test]
    fn the_snapshot_lists_a_binary_value_as_its_json() {
        let stored = encode_last_run(&last_run());
        let text = json_text(&stored, ValueKind::LastRun).unwrap();
        let listed: LastRun = serde_json::from_slice(&text).unwrap();
        assert_eq!(json(&listed), json(&last_run()));
    }

    #[test]
    fn a_binary_value_is_listed_as_the_exact_json_of_its_decoded_value() {
        let mut bare = entry();
        bare.profile = None;
        bare.inputs.clear();
        bare.manifest = "not a hash \"quoted\"".into();
        for e in [entry(), bare] {
            let stored = encode_entry(&e);
            let decoded = serde_json::to_vec(&decode_entry(&stored).unwrap()).unwrap();
            assert_eq!(json_text(&stored, ValueKind::Entry).unwrap(), decoded);
        }
        let mut other = last_run();
        other.material.fingerprint = None;
        other.material.backend = Some("cuda".into());
        other.material.inputs.clear();
        for r in [last_run(), other] {
            let stored = encode_last_run(&r);
            let decoded = serde_json::to_vec(&decode_last_run(&stored).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8(json_text(&stored, ValueKind::LastRun).unwrap()).unwrap(),
                String::from_utf8(decoded).unwrap()
            );
        }
    }

    #[test]
    fn a_value_cut_short_or_with_bytes_left_over_is_damage() {
        let stored = encode_entry(&entry());
        for cut in [1, 2, 20, stored.len() - 1] {
            assert!(decode_entry(&stored[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = stored.clone();
        longer.push(0);
        assert!(decode_entry(&longer).is_err());
        assert!(json_text(&stored[..10], ValueKind::Entry).is_none());
        assert!(json_text(&longer, ValueKind::Entry).is_none());
        let run = encode_last_run(&last_run());
        assert!(json_text(&run[..run.len() - 1], ValueKind::LastRun).is_none());
    }
}
