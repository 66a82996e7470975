//! HTTP(S) downloads with a progress bar, written to a temporary file first so that an
//! interrupted download never looks complete.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::ProgressBar;

use super::SourceError;

/// Optional bearer token sent to Hugging Face (`HF_TOKEN`), for gated repositories.
pub const HF_TOKEN_ENV: &str = "HF_TOKEN";

fn http_error(url: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Http {
        url: url.to_string(),
        message: e.to_string(),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .user_agent(concat!("pipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// GET `url` into `dest`, showing bytes on `bar`; polls `cancel` between chunks.
pub fn download(
    url: &str,
    dest: &Path,
    bearer: Option<&str>,
    bar: &ProgressBar,
    cancel: &AtomicBool,
) -> Result<(), SourceError> {
    let mut req = agent().get(url);
    if let Some(token) = bearer {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let mut resp = req.call().map_err(|e| http_error(url, e))?;
    let len = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    bar.set_position(0);
    if let Some(len) = len {
        bar.set_length(len);
    }
    bar.set_message(format!(
        "downloading {}",
        super::source::url_file_name(url).unwrap_or(url)
    ));
    let part = dest.with_extension("part");
    let mut out = File::create(&part).map_err(|e| SourceError::io(&part, e))?;
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            drop(out);
            let _ = std::fs::remove_file(&part);
            return Err(SourceError::Cancelled);
        }
        let n = reader.read(&mut buf).map_err(|e| http_error(url, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| SourceError::io(&part, e))?;
        total += n as u64;
        bar.inc(n as u64);
    }
    if let Some(len) = len {
        if total != len {
            return Err(http_error(
                url,
                format!("connection closed after {total} of {len} bytes"),
            ));
        }
    }
    out.sync_all().map_err(|e| SourceError::io(&part, e))?;
    std::fs::rename(&part, dest).map_err(|e| SourceError::io(dest, e))
}

/// GET `url` as text (small JSON answers such as a repository's file list).
pub fn get_text(url: &str, bearer: Option<&str>) -> Result<String, SourceError> {
    let mut req = agent().get(url);
    if let Some(token) = bearer {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let mut resp = req.call().map_err(|e| http_error(url, e))?;
    resp.body_mut()
        .read_to_string()
        .map_err(|e| http_error(url, e))
}
