//! `summary`: the files a report reads of one result (`metrics.json`, `history.json`,
//! `stats.json`, and any file it embeds, named in `files`), copied into a result of their
//! own.
//!
//! A report that binds a large result (a pre-trained model, a corpus split) needs only
//! these few KiB of it, but a results remote leaves the whole result out once it is over
//! `--max-size`, so a fresh cache had to compute it again before the report rendered. Bind
//! the report to a `summary` of it instead: the summary is pushed and pulled like any
//! small result, and `pipe report` renders from it alone.
//!
//! ```yaml
//! pretrained_summary:
//!   kind: summary
//!   inputs: {of: pretrained}
//!   foreach: [domain]        # one summary per pre-training cell, with its coordinates
//! parser_summary:
//!   kind: summary
//!   inputs: {of: parse_ft_att}
//!   params: {files: [arcs_heatmap.svg]}   # a figure the report embeds, beside the rows
//!   foreach: [seed]
//! ```

use serde::{Deserialize, Serialize};

use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::metrics::evaluation::copy_if_present;
use crate::report::rows::ROW_FILES;

/// Params of `summary`: the report's own files (`ROW_FILES`) are always copied, when
/// present; `files` names more (a figure the report `embed`s), each of which must exist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryParams {
    /// Further files of the result to carry, by name in its folder (e.g. `arcs_heatmap.svg`).
    /// Left out of the key when empty, so summaries without it keep their keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

impl SummaryParams {
    /// A name in `files` that is not a plain file name (a path would reach outside the result).
    fn invalid_file(&self) -> Option<&str> {
        self.files.iter().map(String::as_str).find(|name| {
            name.is_empty()
                || name.contains(['/', '\\'])
                || *name == "."
                || *name == ".."
                || ROW_FILES.contains(name)
        })
    }
}

/// The `summary` stage kind.
pub struct SummaryStage;

impl Stage for SummaryStage {
    const KIND: &'static str = "summary";
    const VERSION: u32 = 1;
    type Params = SummaryParams;
    const INPUTS: InputContract = InputContract::Declared(&[InputSpec::one(
        "of",
        "a stage output with a metrics.json, history.json or stats.json",
    )]);

    fn check(params: &SummaryParams) -> Result<(), ParamError> {
        match params.invalid_file() {
            Some(name) => Err(ParamError::new(
                "files",
                format!(
                    "`{name}` is not a file name in the result's folder, or is one of {} \
                     (always copied)",
                    ROW_FILES.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    fn run(ctx: &mut StageCtx, params: &SummaryParams) -> Result<(), StageError> {
        let of = ctx.inputs.one("of")?;
        if !of.path.is_dir() {
            return Err(StageError::Input {
                name: "of".to_string(),
                message: format!(
                    "{} is a file; bind the stage ({}), whose folder holds {}",
                    of.path.display(),
                    of.stage,
                    ROW_FILES.join(", ")
                ),
            });
        }
        let mut copied = 0;
        for name in ROW_FILES {
            if copy_if_present(&of.path, &ctx.out_dir, name)?.is_some() {
                copied += 1;
            }
        }
        for name in &params.files {
            if copy_if_present(&of.path, &ctx.out_dir, name)?.is_none() {
                return Err(StageError::Input {
                    name: "of".to_string(),
                    message: format!(
                        "{} ({}) has no `{name}`, named in `files`",
                        of.stage,
                        of.path.display()
                    ),
                });
            }
        }
        if copied == 0 && params.files.is_empty() {
            return Err(StageError::Input {
                name: "of".to_string(),
                message: format!(
                    "{} ({}) has none of {}: nothing a report reads",
                    of.stage,
                    of.path.display(),
                    ROW_FILES.join(", ")
                ),
            });
        }
        Ok(())
    }
}
