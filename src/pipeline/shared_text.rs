//! One copy of the texts that every cell of a stage repeats — its stage name and kind,
//! its matrix axes and its input names — however many cells there are.
//!
//! A 100,000-cell pipeline held each of them once a cell (a 5-byte name costs a 32-byte
//! block and its 24-byte handle), 10 MB in all (#27). [`shared`] hands back the same
//! `Arc<str>` for a text seen lately on this thread: a stage's cells are made (or read
//! from a stored expansion) one after another, so they share it.

use std::cell::RefCell;
use std::sync::Arc;

/// The most texts kept for sharing, a thread (the most recent ones).
const KEPT: usize = 32;

thread_local! {
    static SEEN: RefCell<Vec<Arc<str>>> = const { RefCell::new(Vec::new()) };
}

/// `text` as the `Arc<str>` already made for it on this thread lately, or a new one.
pub fn shared(text: &str) -> Arc<str> {
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if let Some(same) = seen.iter().rev().find(|s| ***s == *text) {
            return same.clone();
        }
        if seen.len() == KEPT {
            seen.remove(0);
        }
        let made: Arc<str> = text.into();
        seen.push(made.clone());
        made
    })
}

/// Deserializes a text as [`shared`] (for `#[serde(deserialize_with)]`).
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    use serde::Deserialize;
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(shared(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_one_copy_and_a_new_one_is_made() {
        let a = shared("train");
        let b = shared(&String::from("train"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = shared("eval");
        assert_eq!(&*c, "eval");
        assert!(!Arc::ptr_eq(&a, &c));
        // past KEPT others, a text is made again (equal, not shared)
        for i in 0..KEPT {
            shared(&format!("t{i}"));
        }
        let d = shared("train");
        assert_eq!(d, a);
        assert!(!Arc::ptr_eq(&a, &d));
    }
}
