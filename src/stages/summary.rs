//! `summary`: the files a report reads of one result (`metrics.json`, `history.json`,
//! `stats.json`), copied into a result of their own.
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
//! ```

use serde::{Deserialize, Serialize};

use super::{InputContract, InputSpec, Stage, StageCtx, StageError};
use crate::metrics::evaluation::copy_if_present;
use crate::report::rows::ROW_FILES;

/// Params of `summary` (none: the files copied are the ones a report reads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryParams {}

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

    fn run(ctx: &mut StageCtx, _: &SummaryParams) -> Result<(), StageError> {
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
        if copied == 0 {
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
