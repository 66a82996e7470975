//! `hf:` sources: files of a Hugging Face repository, fetched over HTTPS from
//! `{endpoint}/{repo}/resolve/{revision}/{file}` (endpoint `https://huggingface.co`, or
//! `HF_ENDPOINT`). Without a file list, the repository's files are listed through
//! `{endpoint}/api/models/{repo}/revision/{revision}` first.

use serde::Deserialize;

use super::SourceError;

/// The environment variable overriding the endpoint (as in `huggingface_hub`).
pub const ENDPOINT_ENV: &str = "HF_ENDPOINT";
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The endpoint in use.
pub fn endpoint() -> String {
    std::env::var(ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Percent-encodes a path segment (keeps unreserved characters).
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// URL of one file: `{endpoint}/{repo}/resolve/{revision}/{file}`.
pub fn resolve_url(endpoint: &str, repo: &str, revision: &str, file: &str) -> String {
    let file: Vec<String> = file.split('/').map(encode_segment).collect();
    format!(
        "{endpoint}/{repo}/resolve/{}/{}",
        encode_segment(revision),
        file.join("/")
    )
}

/// URL of the repository's file list at `revision`.
pub fn listing_url(endpoint: &str, repo: &str, revision: &str) -> String {
    format!(
        "{endpoint}/api/models/{repo}/revision/{}",
        encode_segment(revision)
    )
}

#[derive(Deserialize)]
struct Listing {
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// File names from a listing answer.
pub fn parse_listing(json: &str) -> Result<Vec<String>, SourceError> {
    let l: Listing = serde_json::from_str(json)
        .map_err(|e| SourceError::Invalid(format!("unexpected Hugging Face listing: {e}")))?;
    let mut files: Vec<String> = l.siblings.into_iter().map(|s| s.rfilename).collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            resolve_url(
                DEFAULT_ENDPOINT,
                "dmis-lab/biobert-v1.1",
                "main",
                "config.json"
            ),
            "https://huggingface.co/dmis-lab/biobert-v1.1/resolve/main/config.json"
        );
        assert_eq!(
            resolve_url(DEFAULT_ENDPOINT, "o/r", "refs/pr/1", "sub dir/f.bin"),
            "https://huggingface.co/o/r/resolve/refs%2Fpr%2F1/sub%20dir/f.bin"
        );
        assert_eq!(
            listing_url(DEFAULT_ENDPOINT, "o/r", "v1.0"),
            "https://huggingface.co/api/models/o/r/revision/v1.0"
        );
    }

    #[test]
    fn listing() {
        let json =
            r#"{"id":"o/r","siblings":[{"rfilename":"vocab.txt"},{"rfilename":"config.json"}]}"#;
        assert_eq!(parse_listing(json).unwrap(), ["config.json", "vocab.txt"]);
    }
}
