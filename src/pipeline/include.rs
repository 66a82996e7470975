//! Pass 1, includes: takes the pipeline's `include:` list and merges each file's
//! `templates:` and `profiles:` into the document (a template defined twice is an error; a
//! profile entry of ours wins over an include's), recording which file each template comes
//! from.

use std::path::Path;
use std::rc::Rc;

use super::error::PipelineError;
use super::load::{Context, ParsedFile};

/// Merges every included file into `cx.doc`.
pub(super) fn merge(cx: &mut Context) -> Result<(), PipelineError> {
    let base_dir = cx.path.parent().unwrap_or(Path::new("."));
    for (i, inc) in cx.doc.include.clone().iter().enumerate() {
        let inc_path = base_dir.join(inc);
        let idx = i.to_string();
        if !inc_path.is_file() {
            return Err(cx.map.error(
                &["include", &idx],
                format!("included file `{}` does not exist", inc_path.display()),
            ));
        }
        let loaded = ParsedFile::read(&inc_path)?;
        cx.sources.push(loaded.source);
        let inc_map = Rc::new(loaded.map);
        if !loaded.doc.stages.is_empty() {
            return Err(inc_map.error(
                &["stages"],
                "an included file may define `templates:` and `profiles:` only, not `stages:`",
            ));
        }
        for (name, t) in loaded.doc.templates {
            if cx.doc.templates.contains_key(&name) {
                return Err(inc_map.error(
                    &["templates", &name],
                    format!("template `{name}` is defined twice"),
                ));
            }
            cx.template_maps.insert(name.clone(), Rc::clone(&inc_map));
            cx.doc.templates.insert(name, t);
        }
        for (name, p) in loaded.doc.profiles {
            let entry = cx.doc.profiles.entry(name).or_default();
            if entry.extends.is_none() {
                entry.extends = p.extends;
            }
            for (stage, overrides) in p.overrides {
                entry.overrides.entry(stage).or_insert(overrides);
            }
        }
    }
    Ok(())
}
