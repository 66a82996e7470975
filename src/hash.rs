//! Stage keys: blake3 over the kind, its version, canonical params, the keys of the
//! inputs, an optional content fingerprint and (for training kinds) the backend.
//!
//! Keys depend on content only — never on stage names or YAML order — so renaming a
//! stage or reordering the file invalidates nothing, and they are stable across machines.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Domain separator: bump it only to invalidate every key ever made.
const KEY_DOMAIN: &str = "pipe.stage-key.v1";

/// The content-derived identity of a stage's output.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageKey(pub [u8; 32]);

impl StageKey {
    /// Full lowercase hex (64 chars).
    pub fn hex(&self) -> String {
        // ASCII digits only
        String::from_utf8_lossy(&self.hex_digits()).into_owned()
    }

    /// [`Self::hex`] without an allocation, for writers that copy it out at once.
    pub fn hex_digits(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        out
    }
    /// First 12 hex chars, for display.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
    /// Parses 64 hex chars.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(text, 16).ok()?;
        }
        Some(StageKey(out))
    }
}

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Written as its 64 hex digits (as in every file and value that names a key).
impl Serialize for StageKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> serde::Deserialize<'de> for StageKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StageKey::from_hex(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not a stage key (64 hex digits)"))
        })
    }
}

impl fmt::Debug for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageKey({})", self.short())
    }
}

/// Everything that determines a stage's output. Serialized canonically for hashing, and
/// stored with each run so that `pipe plan` can say what changed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct KeyMaterial {
    pub kind: String,
    pub version: u32,
    pub params: serde_json::Value,
    /// Input name -> upstream keys (hex), with `/sub/path` appended for `stage.sub/path`.
    pub inputs: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// Canonical JSON text: object keys sorted (serde_json's map is a BTreeMap), no spaces,
/// numbers as serde_json prints them after typed normalization (so `2e-5` and `0.00002`
/// agree).
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: BTreeMap<&String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::to_value(sorted).unwrap_or(serde_json::Value::Null)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

/// [`canonical_json`] of `value`, written directly (no sorted copy built first).
pub fn canonical_text_of(value: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(64);
    write_canonical(&mut out, value);
    // JSON text written from strings and serde_json's own output is UTF-8
    String::from_utf8(out).unwrap_or_default()
}

/// A stage's params as a key takes them: the value, or its canonical text already made
/// ([`canonical_text_of`]; a loaded pipeline keeps its params that way, #27).
#[derive(Debug, Clone, Copy)]
pub enum ParamsText<'a> {
    Value(&'a serde_json::Value),
    Canonical(&'a str),
}

/// Appends the canonical JSON text of `value` (what [`canonical_json`] returns) to `out`,
/// without building a sorted copy first.
fn write_canonical(out: &mut Vec<u8>, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(m) => {
            let mut fields: Vec<(&String, &serde_json::Value)> = m.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(out, k);
                out.push(b':');
                write_canonical(out, v);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, v);
            }
            out.push(b']');
        }
        scalar => {
            // writing a scalar into a Vec cannot fail
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(&mut *out, text);
}

/// What a key is hashed from, borrowed: [`KeyMaterial`] without owning its parts, so a
/// plan hashes a stage's params where they are instead of copying them.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    pub kind: &'a str,
    pub version: u32,
    pub params: ParamsText<'a>,
    pub inputs: &'a BTreeMap<String, Vec<String>>,
    pub fingerprint: Option<&'a str>,
    pub backend: Option<&'a str>,
}

impl KeyParts<'_> {
    /// The canonical JSON text that is hashed: the fields in name order (`backend` and
    /// `fingerprint` only when set), written directly — the same bytes as
    /// `canonical_json(&serde_json::to_value(material))`, at a fraction of the allocations.
    fn canonical_text(&self) -> Vec<u8> {
        let inputs: usize = self
            .inputs
            .iter()
            .map(|(k, v)| k.len() + v.iter().map(|s| s.len() + 3).sum::<usize>() + 6)
            .sum();
        let mut out = Vec::with_capacity(128 + inputs);
        out.push(b'{');
        if let Some(backend) = self.backend {
            out.extend_from_slice(b"\"backend\":");
            write_json_string(&mut out, backend);
            out.push(b',');
        }
        if let Some(fingerprint) = self.fingerprint {
            out.extend_from_slice(b"\"fingerprint\":");
            write_json_string(&mut out, fingerprint);
            out.push(b',');
        }
        out.extend_from_slice(b"\"inputs\":{");
        for (i, (name, keys)) in self.inputs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(&mut out, name);
            out.extend_from_slice(b":[");
            for (j, key) in keys.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_json_string(&mut out, key);
            }
            out.push(b']');
        }
        out.extend_from_slice(b"},\"kind\":");
        write_json_string(&mut out, self.kind);
        out.extend_from_slice(b",\"params\":");
        match self.params {
            ParamsText::Value(value) => write_canonical(&mut out, value),
            ParamsText::Canonical(text) => out.extend_from_slice(text.as_bytes()),
        }
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(self.version.to_string().as_bytes());
        out.push(b'}');
        out
    }

    /// The key of these parts.
    pub fn key(&self) -> StageKey {
        let mut hasher = blake3::Hasher::new();
        hasher.update(KEY_DOMAIN.as_bytes());
        hasher.update(&[0]);
        hasher.update(&self.canonical_text());
        StageKey(*hasher.finalize().as_bytes())
    }
}

impl KeyMaterial {
    /// The material's parts, borrowed.
    pub fn parts(&self) -> KeyParts<'_> {
        KeyParts {
            kind: &self.kind,
            version: self.version,
            params: ParamsText::Value(&self.params),
            inputs: &self.inputs,
            fingerprint: self.fingerprint.as_deref(),
            backend: self.backend.as_deref(),
        }
    }

    /// The key of this material.
    pub fn key(&self) -> StageKey {
        self.parts().key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn material() -> KeyMaterial {
        KeyMaterial {
            kind: "finetune".into(),
            version: 1,
            params: json!({"lr": 2e-5, "head": "cls", "epochs": 10}),
            inputs: BTreeMap::from([("data".to_string(), vec!["ab".repeat(32)])]),
            fingerprint: None,
            backend: Some("flex".into()),
        }
    }

    #[test]
    fn golden_key_is_stable_across_machines_and_releases() {
        // If this changes, every user's cache is invalidated: bump KEY_DOMAIN on purpose only.
        assert_eq!(
            material().key().hex(),
            "4c0c426bf476b5fb594c1cf848adc15cfa01ff9d4443805aadce2a8785c881c0"
        );
    }

    #[test]
    fn param_order_and_number_spelling_do_not_matter() {
        let a = material();
        let mut b = material();
        b.params = serde_json::from_str(r#"{"epochs":10,"head":"cls","lr":0.00002}"#).unwrap();
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn every_component_changes_the_key() {
        let base = material().key();
        let mut m = material();
        m.params["lr"] = json!(3e-5);
        assert_ne!(m.key(), base);
        let mut m = material();
        m.version = 2;
        assert_ne!(m.key(), base);
        let mut m = material();
        m.backend = Some("ndarray".into());
        assert_ne!(m.key(), base);
        let mut m = material();
        m.inputs.insert("data".into(), vec!["cd".repeat(32)]);
        assert_ne!(m.key(), base);
        let mut m = material();
        m.fingerprint = Some("x".into());
        assert_ne!(m.key(), base);
    }

    /// The text hashed before keys were written directly: the material as a JSON value,
    /// sorted, printed.
    fn canonical_by_value(m: &KeyMaterial) -> String {
        canonical_json(&serde_json::to_value(m).expect("material is JSON"))
    }

    #[test]
    fn the_direct_canonical_text_is_the_sorted_value_text() {
        let mut materials = vec![material()];
        let mut m = material();
        m.backend = None;
        m.fingerprint = Some("blake3:\"quoted\"\\ é \u{1}".into());
        m.params = json!({
            "z": [1, 2.5, -3, 1e300, {"b": null, "a": true}],
            "é": "tab\there",
            "A": {"y": {"x": [], "w": {}}},
            "": 0.1
        });
        m.inputs.insert("b-in".into(), vec![]);
        m.inputs
            .insert("a in".into(), vec!["ab".repeat(32) + "/sub/p\"x"; 3]);
        materials.push(m);
        let mut m = material();
        m.params = json!(null);
        m.inputs.clear();
        m.kind = "shell\n".into();
        m.version = u32::MAX;
        materials.push(m);
        for m in materials {
            let direct = String::from_utf8(m.parts().canonical_text()).expect("utf-8");
            assert_eq!(direct, canonical_by_value(&m));
            assert_eq!(canonical_text_of(&m.params), canonical_json(&m.params));
            // params kept as their canonical text make the same key
            let text = canonical_text_of(&m.params);
            let parts = KeyParts {
                params: ParamsText::Canonical(&text),
                ..m.parts()
            };
            assert_eq!(parts.key(), m.key());
        }
    }

    #[test]
    fn hex_round_trip() {
        let k = material().key();
        assert_eq!(StageKey::from_hex(&k.hex()), Some(k));
        assert_eq!(k.short().len(), 12);
    }
}
