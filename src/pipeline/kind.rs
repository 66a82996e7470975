//! Pass 3, kinds: takes the merged stages and produces each stage's kind, refusing a stage
//! without one and a kind the registry does not know (the error lists the known kinds).

use super::error::PipelineError;
use super::load::Context;

/// Fills `cx.kinds` from `cx.stages`.
pub(super) fn resolve(cx: &mut Context) -> Result<(), PipelineError> {
    for (name, m) in &cx.stages {
        let Some(kind) = m.doc.kind.clone() else {
            return Err(cx.map.error(
                &["stages", name],
                format!("stage `{name}` has no `kind:` (nor a template that gives one)"),
            ));
        };
        if cx.registry.get(&kind).is_none() {
            let at = ["stages", name.as_str(), "kind"];
            let known: Vec<&str> = cx.registry.kinds().collect();
            return Err(cx.map.error(
                &at,
                format!(
                    "unknown stage kind `{kind}`; known kinds: {}",
                    known.join(", ")
                ),
            ));
        }
        cx.kinds.insert(name.clone(), kind);
    }
    Ok(())
}
