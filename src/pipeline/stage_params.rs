//! A stage instance's params, kept as their canonical JSON text (what its key hashes) and
//! parsed into a `serde_json::Value` only when something reads them. A no-op run of
//! 100,000 cached stages hashes every stage's params but reads none: as values they were
//! a third of its memory (a map node of 632 bytes and a dozen small strings a stage, #27).

use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// Normalized params (see the module doc). Reads as a `&Value` (`Deref`).
pub struct StageParams {
    /// [`crate::hash::canonical_text_of`] the value.
    canonical: Box<str>,
    /// Boxed: 16 bytes in each instance where a `Value` inline took 40 (most instances'
    /// params are never parsed into one).
    value: OnceLock<Box<Value>>,
}

impl StageParams {
    /// Params from their value: the text made now, the value let go (a full load of
    /// 100,000 stages kept 63 MB of them to its peak; the passes over every stage parse
    /// their own with [`StageParams::parsed`], #27).
    pub fn new(value: Value) -> StageParams {
        let canonical = crate::hash::canonical_text_of(&value).into_boxed_str();
        StageParams {
            canonical,
            value: OnceLock::new(),
        }
    }

    /// The params as a value, without keeping it: the one parsed before if any, else
    /// parsed now and dropped with the `Cow`. For passes over every stage (the contract
    /// check, the plan's key material, a stage's run), which would otherwise leave every
    /// stage's value in memory.
    pub fn parsed(&self) -> std::borrow::Cow<'_, Value> {
        match self.value.get() {
            Some(value) => std::borrow::Cow::Borrowed(&**value),
            None => std::borrow::Cow::Owned(self.parse()),
        }
    }

    /// The canonical JSON text (sorted keys, no spaces): what the key hashes.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The params as a value, parsed from the text the first time.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| Box::new(self.parse()))
    }

    /// The text parsed: it was written from a value, so it parses (Null only if the record
    /// lied).
    fn parse(&self) -> Value {
        serde_json::from_str(&self.canonical).unwrap_or(Value::Null)
    }
}

impl std::ops::Deref for StageParams {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.value()
    }
}

impl Clone for StageParams {
    fn clone(&self) -> Self {
        StageParams {
            canonical: self.canonical.clone(),
            value: self.value.clone(),
        }
    }
}

impl std::fmt::Debug for StageParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl PartialEq for StageParams {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl PartialEq<Value> for StageParams {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

/// Written as the JSON it is (the canonical text, verbatim).
impl Serialize for StageParams {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue =
            serde_json::from_str(&self.canonical).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Read as JSON text, kept as it is written: only records this type wrote (canonical
/// text) are read back (`ExpandedStore`, whose records carry a hash of their body).
impl<'de> Deserialize<'de> for StageParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(StageParams {
            canonical: raw.get().into(),
            value: OnceLock::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_read_back_from_their_text_are_the_same_params() {
        let value = serde_json::json!({"outs": ["o"], "cmd": "echo \"é\" > o", "n": 2e-5});
        let params = StageParams::new(value.clone());
        assert_eq!(params.canonical(), crate::hash::canonical_json(&value));
        let text = serde_json::to_string(&params).expect("serializes");
        assert_eq!(text, params.canonical());
        let back: StageParams = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, params);
        assert_eq!(*back, value);
        assert_eq!(back["cmd"], "echo \"é\" > o");
        // a value parsed for one reader is not kept
        let fresh = StageParams::new(value.clone());
        assert_eq!(*fresh.parsed(), value);
        assert!(fresh.value.get().is_none());
    }
}
