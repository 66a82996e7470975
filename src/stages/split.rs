//! `split`: turns a corpus (input `corpus`) into training/evaluation files:
//! `train.jsonl`/`dev.jsonl`/`test.jsonl`, or `fold-K/{train,dev,test}.jsonl`, plus
//! `labels.json` and `stats.json`. Params: [`crate::data::SplitSpec`].

use super::corpus::param_error;
use super::{ParamError, Stage, StageCtx, StageError};
use crate::data::{split, SplitSpec};

/// Standard splits, shipped folds, or document-grouped k-fold.
pub struct SplitStage;

impl Stage for SplitStage {
    const KIND: &'static str = "split";
    const VERSION: u32 = 1;
    type Params = SplitSpec;

    fn check(p: &SplitSpec) -> Result<(), ParamError> {
        p.check().map_err(param_error)
    }

    fn run(ctx: &mut StageCtx, p: &SplitSpec) -> Result<(), StageError> {
        let corpus = ctx.inputs.path("corpus")?.to_path_buf();
        let (stats, notes) = split::split_dir(&corpus, p, &ctx.out_dir)?;
        for note in notes {
            ctx.progress.println(format!("{}: {note}", ctx.name));
        }
        ctx.write_json("metrics.json", &stats.to_json())?;
        Ok(())
    }
}
