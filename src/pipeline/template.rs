//! Pass 2, templates: takes the document's stages and produces each stage's definition
//! with its template merged in (the stage's own kind, params, inputs, matrix axes,
//! `publish`, `resources` and `foreach` win), remembering the template's file for errors.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::doc::StageDoc;
use super::error::PipelineError;
use super::load::Context;
use super::locate::SourceMap;

/// Template + stage, merged; where each piece was written.
pub(super) struct MergedStage {
    pub doc: Box<StageDoc>,
    /// Positions of the template's file, when the stage has a template. Shared, not
    /// copied: a source map is as large as its file.
    pub map_of_template: Option<Rc<SourceMap>>,
}

/// Moves `cx.doc.stages` into `cx.stages`, each with its template merged.
pub(super) fn apply(cx: &mut Context) -> Result<(), PipelineError> {
    let stages = std::mem::take(&mut cx.doc.stages);
    let (templates, map, template_maps) = (&cx.doc.templates, &cx.map, &cx.template_maps);
    // collected, not inserted one by one: a map built from its sorted entries fills its
    // nodes, where inserting them in order leaves each about half empty (30 MB of empty
    // slots at 100,000 stages when the entries held the documents inline, #27; they are
    // boxed since, so an entry is a name and two pointers)
    let merged = stages
        .into_iter()
        .map(|(name, mut out)| {
            if !valid_stage_name(&name) {
                return Err(map.error(
                    &["stages", &name],
                    format!("stage name `{name}` may use only letters, digits, `_` and `-`"),
                ));
            }
            let mut map_of_template = None;
            if let Some(t) = &out.template {
                let Some(tpl) = templates.get(t) else {
                    let known: Vec<&String> = templates.keys().collect();
                    return Err(map.error(
                        &["stages", &name, "template"],
                        format!("unknown template `{t}` (defined: {known:?})"),
                    ));
                };
                map_of_template = template_maps.get(t).cloned();
                merge(&mut out, tpl);
            }
            let stage = MergedStage {
                doc: out,
                map_of_template,
            };
            Ok((name, stage))
        })
        .collect::<Result<BTreeMap<String, MergedStage>, PipelineError>>()?;
    cx.stages = merged;
    Ok(())
}

/// Fills `out` from template `tpl` where the stage does not say otherwise.
fn merge(out: &mut StageDoc, tpl: &StageDoc) {
    out.kind = out.kind.take().or_else(|| tpl.kind.clone());
    out.params = std::mem::take(&mut out.params).over(&tpl.params);
    let mut inputs = tpl.inputs.clone();
    inputs.overlay(std::mem::take(&mut out.inputs));
    out.inputs = inputs;
    let mut matrix = tpl.matrix.clone();
    matrix.append(&mut out.matrix);
    out.matrix = matrix;
    out.publish = out.publish.take().or_else(|| tpl.publish.clone());
    out.resources = match (&tpl.resources, out.resources.take()) {
        (Some(t), Some(o)) => Some(Box::new(t.overlaid(&o))),
        (t, o) => o.or_else(|| t.clone()),
    };
    if out.foreach.is_empty() {
        out.foreach = tpl.foreach.clone();
    }
}

/// Letters, digits, `_` and `-`, at least one.
fn valid_stage_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
