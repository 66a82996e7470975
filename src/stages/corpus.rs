//! `corpus`: parses a fetched corpus (input `source`) into the instance schema
//! (`instances.jsonl` or `sentences.jsonl`), `labels.json` and `stats.json`.
//! Params: [`crate::data::CorpusSpec`].

use super::{param_error, InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::data::schema::Task;
use crate::data::{corpus, CorpusSpec};

/// Parses a corpus by `format:`.
pub struct CorpusStage;

impl Stage for CorpusStage {
    const KIND: &'static str = "corpus";
    const VERSION: u32 = 1;
    type Params = CorpusSpec;
    const INPUTS: InputContract =
        InputContract::Declared(&[InputSpec::one("source", "the fetched corpus files")]);

    fn output_task(p: &CorpusSpec, _: &dyn Fn(&str) -> Option<Task>) -> Option<Task> {
        Some(p.format.task())
    }

    fn check(p: &CorpusSpec) -> Result<(), ParamError> {
        p.check().map_err(param_error)
    }

    fn run(ctx: &mut StageCtx, p: &CorpusSpec) -> Result<(), StageError> {
        let input = ctx.inputs.path("source")?.to_path_buf();
        ctx.progress
            .set_message(format!("parsing {:?} corpus", p.format));
        let parsed = corpus::build(p, &input)?;
        for note in &parsed.notes {
            ctx.progress
                .println(format!("{}: warning: {note}", ctx.name));
        }
        ctx.check_cancelled()?;
        parsed.write(&ctx.out_dir)?;
        ctx.write_json("metrics.json", &parsed.stats().to_json())?;
        Ok(())
    }
}
