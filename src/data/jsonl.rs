//! Reading and writing JSON-lines files of units, with file:line errors.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

use super::DataError;

/// Reads one JSON value per non-empty line.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).map_err(|e| DataError::Line {
            file: path.display().to_string(),
            line: i + 1,
            message: format!("not a valid record: {e}"),
        })?;
        out.push(value);
    }
    Ok(out)
}

/// Writes one JSON value per line (creating or truncating `path`).
pub fn write<'a, T: Serialize + 'a>(
    path: &Path,
    items: impl IntoIterator<Item = &'a T>,
) -> Result<(), DataError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    let file = File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut w = BufWriter::new(file);
    for item in items {
        serde_json::to_writer(&mut w, item)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))?;
        w.write_all(b"\n").map_err(|e| DataError::io(path, e))?;
    }
    w.flush().map_err(|e| DataError::io(path, e))
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DataError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))?;
    std::fs::write(path, text + "\n").map_err(|e| DataError::io(path, e))
}

/// Reads a JSON file into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))
}
