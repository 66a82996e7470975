//! A job's inputs: named by the scheduler when it starts the job, made ready (each result
//! checked, given a read-only view) by the executor where the job runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::plan::Plan;
use crate::cache::Cache;
use crate::pipeline::Pipeline;
use crate::stages::{InputArtifact, Inputs, StageError};

/// The results a job reads, named, to be made ready ([`PendingInputs::resolve`]) by the
/// executor where it runs the job: each is checked and given a view in the cache, file
/// work that on the scheduler's thread was a quarter of its time a stage, the one part of
/// a cold run that more cores do not divide (#27). The local executor resolves them on the
/// worker thread that then runs the stage.
pub enum PendingInputs<'a> {
    /// The inputs of an instance of a pipeline under a plan (their producers committed).
    Named {
        p: &'a Pipeline,
        plan: &'a Plan,
        instance: usize,
    },
    /// Resolved already (by the scheduler: see [`PendingInputs::RESOLVED_BY_SCHEDULER`]).
    Resolved(Inputs),
}

impl<'a> PendingInputs<'a> {
    /// A stage reading at least this many results has them resolved on the scheduler's
    /// thread: its views and paths (about 14 MB at a table over 50,000 cells) then reuse
    /// what the scheduler's heap freed after planning, where a worker's heap grew by as
    /// much and kept it (+5 MiB peak RSS, #27). Such stages are few, so their serial
    /// cost is too.
    pub const RESOLVED_BY_SCHEDULER: usize = 4096;

    /// The inputs of instance `i` of `p` under `plan`: resolved now when it reads at
    /// least [`Self::RESOLVED_BY_SCHEDULER`] results, else named.
    pub fn of(
        p: &'a Pipeline,
        plan: &'a Plan,
        cache: &Cache,
        i: usize,
    ) -> Result<Self, StageError> {
        let results: usize = p.instances[i].inputs.values().map(Vec::len).sum();
        Ok(match results >= Self::RESOLVED_BY_SCHEDULER {
            true => PendingInputs::Resolved(resolve_inputs(p, plan, cache, i)?),
            false => PendingInputs::Named {
                p,
                plan,
                instance: i,
            },
        })
    }

    /// Checks each result and makes its read-only view ([`resolve_inputs`]); resolved
    /// inputs are handed over (once).
    pub fn resolve(&mut self, cache: &Cache) -> Result<Inputs, StageError> {
        match self {
            PendingInputs::Named { p, plan, instance } => resolve_inputs(p, plan, cache, *instance),
            PendingInputs::Resolved(inputs) => Ok(std::mem::take(inputs)),
        }
    }
}

/// Materializes the inputs of instance `i` from the cache.
fn resolve_inputs(
    p: &Pipeline,
    plan: &Plan,
    cache: &Cache,
    i: usize,
) -> Result<Inputs, StageError> {
    let inst = &p.instances[i];
    let mut by_name: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
    for (name, refs) in &inst.inputs {
        let mut arts = Vec::with_capacity(refs.len());
        for r in refs {
            let up = &p.instances[r.instance];
            let key = plan.item(r.instance).key;
            let view = cache.materialize(&key).map_err(|e| {
                if e.is_damage() {
                    // nothing is computed from it; the next run computes it again
                    let _ = cache.remove(&key);
                }
                StageError::Input {
                    name: name.to_string(),
                    message: format!("output of `{}` unavailable: {e}", up.name),
                }
            })?;
            let path: PathBuf = match &r.sub {
                Some(sub) => {
                    let path = view.join(sub);
                    if !path.exists() {
                        return Err(StageError::Input {
                            name: name.to_string(),
                            message: format!(
                                "`{}.{sub}` does not exist in the output of `{}`",
                                up.base, up.name
                            ),
                        });
                    }
                    path
                }
                None => view,
            };
            arts.push(InputArtifact {
                stage: up.name.clone(),
                key: Some(key),
                coords: up.coords.clone(),
                path,
            });
        }
        by_name.insert(name.to_string(), arts);
    }
    Ok(Inputs { by_name })
}
