//! Pass 3, kinds: checks each merged stage's kind, refusing a stage without one and a kind
//! the registry does not know (the error lists the known kinds). Later passes read the
//! kind from the stage (`doc.kind`, set for every stage once this pass passes).

use super::error::PipelineError;
use super::load::Context;

/// Checks the kind of every stage of `cx.stages`.
pub(super) fn resolve(cx: &mut Context) -> Result<(), PipelineError> {
    for (name, m) in &cx.stages {
        let Some(kind) = &m.doc.kind else {
            return Err(cx.map.error(
                &["stages", name],
                format!("stage `{name}` has no `kind:` (nor a template that gives one)"),
            ));
        };
        if cx.registry.get(kind).is_none() {
            let at = ["stages", name.as_str(), "kind"];
            let known: Vec<&str> = cx.registry.kinds().collect();
            let suggestion = crate::spelling::nearest(kind, known.iter().copied())
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(cx.map.error(
                &at,
                format!(
                    "unknown stage kind `{kind}`{suggestion}; known kinds: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}
