//! A map of the few entries a stage or a cell has (its inputs as written, its bound
//! inputs, its matrix coordinates), kept as a list sorted by key. A `BTreeMap` allocates a
//! node with room for eleven entries (500 to 630 bytes) for its first one; once per stage,
//! that was most of a 100,000-stage pipeline's memory (#27). Its keys are shared texts
//! ([`super::shared_text`]): every cell of a stage names the same axes and inputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::shared_text::shared;

/// Key -> value, sorted by key; read and written as a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedMap<V>(Vec<(Arc<str>, V)>);

impl<V> Default for SortedMap<V> {
    fn default() -> Self {
        SortedMap(Vec::new())
    }
}

impl<V> SortedMap<V> {
    fn at(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.at(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.at(key).is_ok()
    }

    /// Sets `key` to `value` (replacing what it held). Room is made for this entry only:
    /// these maps hold a few entries, and a vector grown for its first one has room for
    /// four (120 bytes unused in each of 100,000 cells, #27).
    pub fn insert(&mut self, key: &str, value: V) {
        match self.at(key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (shared(key), value));
            }
        }
    }

    /// `over`'s entries laid over these (a stage's own inputs over its template's).
    pub fn overlay(&mut self, over: SortedMap<V>) {
        for (key, value) in over.0 {
            match self.at(&key) {
                Ok(i) => self.0[i].1 = value,
                Err(i) => {
                    self.0.reserve_exact(1);
                    self.0.insert(i, (key, value));
                }
            }
        }
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut V) -> bool) {
        self.0.retain_mut(|(key, value)| keep(key, value));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(key, value)` in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> + Clone {
        self.0.iter().map(|(key, value)| (&**key, value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> + Clone {
        self.0.iter().map(|(key, _)| &**key)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + Clone {
        self.0.iter().map(|(_, value)| value)
    }
}

impl<V: Clone> SortedMap<V> {
    /// The entries as a `BTreeMap` (what stages and reports are handed).
    pub fn to_map(&self) -> BTreeMap<String, V> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

impl<V> std::ops::Index<&str> for SortedMap<V> {
    type Output = V;
    /// Panics when `key` is not there, as a map's index does.
    fn index(&self, key: &str) -> &V {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no `{key}` in this map"),
        }
    }
}

impl<V> From<BTreeMap<String, V>> for SortedMap<V> {
    fn from(map: BTreeMap<String, V>) -> Self {
        // a BTreeMap iterates in key order: already sorted
        SortedMap(map.into_iter().map(|(k, v)| (shared(&k), v)).collect())
    }
}

impl<V> From<SortedMap<V>> for BTreeMap<String, V> {
    fn from(map: SortedMap<V>) -> Self {
        map.0.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

impl<'a, V> IntoIterator for &'a SortedMap<V> {
    type Item = (&'a str, &'a V);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, V)>,
        fn(&'a (Arc<str>, V)) -> (&'a str, &'a V),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(key, value)| (&**key, value))
    }
}

/// Written as a map, in key order.
impl<V: Serialize> Serialize for SortedMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// Read from a map (a key written twice keeps the last, as a `BTreeMap`; YAML a user
/// writes goes through [`super::doc::unique_keys`] instead, which refuses it).
impl<'de, V: Deserialize<'de>> Deserialize<'de> for SortedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, V>::deserialize(deserializer).map(SortedMap::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_sorted_and_read_and_write_as_a_map() {
        let mut map = SortedMap::default();
        map.insert("model", 3);
        map.insert("data", 2);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["data", "model"]);
        assert_eq!((map.get("data"), map["model"]), (Some(&2), 3));
        assert!(map.get("x").is_none() && !map.contains_key("x"));
        map.insert("data", 5);
        assert_eq!(map.len(), 2);
        let json = serde_json::to_string(&map).expect("serializes");
        assert_eq!(json, r#"{"data":5,"model":3}"#);
        let back: SortedMap<i32> = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, map);
        assert_eq!(
            map.to_map(),
            BTreeMap::from([("data".to_string(), 5), ("model".to_string(), 3)])
        );
        let mut over = SortedMap::default();
        over.insert("model", 9);
        over.insert("a", 1);
        map.overlay(over);
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            [("a", &1), ("data", &5), ("model", &9)]
        );
        map.retain(|key, _| key != "data");
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "model"]);
    }
}
