//! `fetch`: brings a source's bytes into the cache (see [`crate::sources`]).
//!
//! Params: `source` (string), optional `blake3` (pin: content hash of what the source
//! names, before unpacking), `unpack` (default: automatic for .zip/.whl/.tar.gz/.tgz),
//! `subpath` (keep only this file or directory of the result). Output: a fetched file
//! as `out/NAME`, or a directory's (or unpacked archive's) contents directly in `out/`.
//! Mirror directories from `PIPE_MIRROR` are searched first.

use serde::{Deserialize, Serialize};

use super::{InputContract, ParamError, Stage, StageCtx, StageError};
use crate::sources::unpack::UnpackLimits;
use crate::sources::{self, tree_hash, FetchEnv, Mirrors, Placement, Source};

/// Params of `fetch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchParams {
    pub source: String,
    #[serde(default)]
    pub blake3: Option<String>,
    #[serde(default)]
    pub unpack: Option<bool>,
    #[serde(default)]
    pub subpath: Option<String>,
    /// What an archive may expand to: `{max_bytes, max_entries, max_ratio}` (defaults 20
    /// GiB, 1,000,000 entries, 1000 bytes per archive byte). (Left out of the key when
    /// absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack_limits: Option<UnpackLimits>,
}

/// Fetches a source into the stage output.
pub struct FetchStage;

impl Stage for FetchStage {
    const KIND: &'static str = "fetch";
    const VERSION: u32 = 1;
    type Params = FetchParams;
    const INPUTS: InputContract = InputContract::Declared(&[]);

    fn check(p: &FetchParams) -> Result<(), ParamError> {
        p.source
            .parse::<Source>()
            .map_err(|e| ParamError::new("source", e.to_string()))?;
        if let Some(pin) = &p.blake3 {
            tree_hash::check_pin(pin).map_err(|m| ParamError::new("blake3", m))?;
        }
        if let Some(sub) = &p.subpath {
            if sub.is_empty() || sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                return Err(ParamError::new(
                    "subpath",
                    format!("`{sub}` must be a relative path without `..`"),
                ));
            }
        }
        Ok(())
    }

    /// The content hash of a `path:` source, so editing the local file changes the key.
    fn fingerprint(p: &FetchParams) -> Result<Option<String>, ParamError> {
        sources::fingerprint(&p.source).map_err(|e| ParamError::new("source", e.to_string()))
    }

    fn run(ctx: &mut StageCtx, p: &FetchParams) -> Result<(), StageError> {
        let source: Source = p.source.parse()?;
        let mirrors = Mirrors::from_env();
        let env = FetchEnv {
            mirrors: &mirrors,
            scratch: &ctx.scratch,
            progress: ctx.progress.bar(),
            cancel: &ctx.cancel,
        };
        let fetched = sources::fetch(&source, p.blake3.as_deref(), &env)?;
        for note in &fetched.notes {
            ctx.progress.println(format!("{}: {note}", ctx.name));
        }
        ctx.check_cancelled()?;
        let placement = Placement {
            unpack: p.unpack,
            subpath: p.subpath.as_deref(),
            limits: p.unpack_limits.unwrap_or_default(),
        };
        sources::place(&fetched, &placement, &ctx.out_dir, &ctx.scratch)?;
        let pinned = if p.blake3.is_some() {
            "verified"
        } else {
            "unpinned"
        };
        ctx.progress.println(format!(
            "{}: {} from {} (blake3 {}, {pinned})",
            ctx.name, source, fetched.origin, fetched.hash
        ));
        Ok(())
    }
}
