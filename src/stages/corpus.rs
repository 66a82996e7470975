//! `corpus`: parses a fetched corpus (input `source`) into the instance schema
//! (`instances.jsonl` or `sentences.jsonl`), `labels.json` and `stats.json`.
//! Params: [`crate::data::CorpusSpec`].

use std::path::Path;

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
        check_files_present(ctx, p, &input)?;
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

/// Every file the params name is in the `source` input; a missing one is named by its
/// param and the upstream stage, not by the cache's internal path to it.
fn check_files_present(ctx: &StageCtx, p: &CorpusSpec, input: &Path) -> Result<(), StageError> {
    let named = p
        .files
        .iter()
        .map(|(split, f)| (format!("files.{split}"), f.path()))
        .chain(
            p.folds
                .iter()
                .enumerate()
                .map(|(k, f)| (format!("folds[{k}]"), f.path())),
        )
        .chain(p.file.iter().map(|f| ("file".to_string(), f.path())));
    for (param, path) in named {
        if input.join(path).exists() {
            continue;
        }
        let upstream = ctx
            .inputs
            .one("source")
            .map(|a| a.stage.clone())
            .unwrap_or_else(|_| "source".into());
        let mut present: Vec<String> = std::fs::read_dir(input)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        present.sort();
        const SHOWN: usize = 12;
        let more = present.len().saturating_sub(SHOWN);
        present.truncate(SHOWN);
        if more > 0 {
            present.push(format!("… ({more} more)"));
        }
        return Err(ParamError::new(
            param,
            format!(
                "`{path}` is not in the output of `{upstream}` (it holds: {})",
                present.join(", ")
            ),
        )
        .into());
    }
    Ok(())
}
