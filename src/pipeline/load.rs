//! The loader: reads a pipeline file into one [`Context`] and runs the passes over it,
//! includes → templates → kinds → profile → matrix → inputs (bound, then checked against
//! each kind's contract).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use super::doc::PipelineDoc;
use super::error::PipelineError;
use super::expanded_store::{ExpandedStore, SourceFile};
use super::instance::{Pipeline, StageInstance};
use super::locate::SourceMap;
use super::template::MergedStage;
use super::{bind_inputs, contracts, include, kind, matrix, parse_in_pieces, profile, template};
use crate::stages::StageRegistry;

/// What the passes share: the document being built, where everything was written, and
/// what each pass has produced so far.
pub(super) struct Context<'a> {
    /// The pipeline file.
    pub path: &'a Path,
    pub registry: &'a StageRegistry,
    /// The document: includes merge into it; the templates pass moves its stages out.
    pub doc: PipelineDoc,
    /// Positions in the pipeline file, scanned once.
    pub map: Rc<SourceMap>,
    /// Template name -> positions of the file that defines it (ours or an include).
    pub template_maps: BTreeMap<String, Rc<SourceMap>>,
    /// Stage name -> its definition with its template merged (from the templates pass).
    pub stages: BTreeMap<String, MergedStage>,
    /// The expanded instances in expansion order (from the matrix pass).
    pub instances: Vec<StageInstance>,
    /// Stage name -> indices of its instances in `instances`.
    pub by_base: BTreeMap<String, Vec<usize>>,
    /// Every file read (the pipeline, then its includes), by content.
    pub sources: Vec<SourceFile>,
}

/// Loads `path`, applies `profile`, expands and validates everything.
pub fn load_pipeline(
    path: &Path,
    profile: Option<&str>,
    registry: &StageRegistry,
) -> Result<Pipeline, PipelineError> {
    load_in_full(path, profile, registry).map(|(pipeline, _)| pipeline)
}

/// [`load_pipeline`], with the expansion read from `store` when its files are as they
/// were the last time, and stored there otherwise (see [`ExpandedStore`]). The same
/// pipeline either way; errors come from the full load.
pub fn load_pipeline_stored(
    path: &Path,
    profile: Option<&str>,
    registry: &StageRegistry,
    store: &ExpandedStore,
) -> Result<Pipeline, PipelineError> {
    if let Some(pipeline) = store.get(path, profile, registry) {
        crate::timings::mark("load: stored expansion read");
        return Ok(pipeline);
    }
    let (pipeline, sources) = load_in_full(path, profile, registry)?;
    store.put(&pipeline, sources);
    crate::timings::mark("load: expansion stored");
    Ok(pipeline)
}

/// Every pass over the files; the pipeline and the files it was read from.
fn load_in_full(
    path: &Path,
    profile: Option<&str>,
    registry: &StageRegistry,
) -> Result<(Pipeline, Vec<SourceFile>), PipelineError> {
    use crate::timings::mark;
    let mut cx = Context::read(path, registry)?;
    mark("load: read and parse");
    include::merge(&mut cx)?;
    template::apply(&mut cx)?;
    kind::resolve(&mut cx)?;
    if let Some(name) = profile {
        profile::apply(&mut cx, name)?;
    }
    mark("load: templates, kinds");
    matrix::expand(&mut cx)?;
    mark("load: matrix expansion");
    bind_inputs::bind(&mut cx)?;
    mark("load: inputs bound");
    contracts::check(&mut cx)?;
    mark("load: contracts");
    let pipeline = Pipeline {
        file: path.to_path_buf(),
        profile: profile.map(str::to_string),
        description: cx.doc.description.take(),
        instances: std::mem::take(&mut cx.instances),
        profiles: cx.doc.profiles.keys().cloned().collect(),
    };
    let large = pipeline.instances.len() >= 10_000;
    let sources = std::mem::take(&mut cx.sources);
    drop(cx);
    if large {
        // the documents, freed just now, were built on several threads: their memory
        // stays with those threads' arenas unless given back (#27)
        crate::allocator::release_free_memory();
    }
    mark("load: documents freed");
    Ok((pipeline, sources))
}

impl<'a> Context<'a> {
    /// The pipeline file parsed, refused when it defines no stages; nothing built yet.
    fn read(path: &'a Path, registry: &'a StageRegistry) -> Result<Self, PipelineError> {
        let ParsedFile { doc, map, source } = ParsedFile::read(path)?;
        let map = Rc::new(map);
        if doc.stages.is_empty() {
            return Err(map.error(
                &["stages"],
                "the pipeline defines no stages (an empty file, or `stages:` with nothing under it)",
            ));
        }
        let template_maps = doc
            .templates
            .keys()
            .map(|k| (k.clone(), Rc::clone(&map)))
            .collect();
        Ok(Context {
            path,
            registry,
            doc,
            map,
            template_maps,
            stages: BTreeMap::new(),
            instances: Vec::new(),
            by_base: BTreeMap::new(),
            sources: vec![source],
        })
    }
}

/// A parsed file (the pipeline or an include) with its positions.
pub(super) struct ParsedFile {
    pub doc: PipelineDoc,
    pub map: SourceMap,
    /// The text that was parsed, by content.
    pub source: SourceFile,
}

/// A file that is not UTF-8 text, located at its first byte that is not.
fn not_utf8(path: &Path, bytes: &[u8], e: std::str::Utf8Error) -> PipelineError {
    let valid = &bytes[..e.valid_up_to()];
    let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
    let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // every byte before the bad one is valid UTF-8: count characters, not bytes
    let col = 1 + String::from_utf8_lossy(&valid[line_start..])
        .chars()
        .count();
    PipelineError::new(
        path,
        line,
        col,
        format!(
            "not UTF-8 text: byte 0x{:02x} (is it the right file, or saved in another \
             encoding?)",
            bytes[e.valid_up_to()]
        ),
    )
}

impl ParsedFile {
    /// Reads and parses `path`, scanning its positions once; a stage, template or profile
    /// written twice is refused at the second one.
    pub(super) fn read(path: &Path) -> Result<Self, PipelineError> {
        let bytes = std::fs::read(path).map_err(|e| {
            PipelineError::new(path, 0, 0, format!("cannot read the pipeline file: {e}"))
        })?;
        let text =
            String::from_utf8(bytes).map_err(|e| not_utf8(path, e.as_bytes(), e.utf8_error()))?;
        let source = SourceFile::of(path, &text);
        let map = SourceMap::scan(path, text);
        if let Some(e) = map.repeated_name(&["stages", "templates", "profiles"]) {
            return Err(e);
        }
        let text = map.text();
        if let Some(doc) = parse_in_pieces::stages_in_pieces(text) {
            return Ok(ParsedFile { doc, map, source });
        }
        let doc: PipelineDoc = serde_yaml::from_str(text).map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            PipelineError::new(path, line, col, describe_yaml_error(&e))
        })?;
        Ok(ParsedFile { doc, map, source })
    }
}

/// serde_yaml's message without its trailing " at line X column Y" (we print our own). A
/// file that is not a YAML mapping (a text or data file passed by mistake) is said to be
/// that, without quoting its contents back.
pub(super) fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    if msg.starts_with("invalid type: ") && msg.ends_with("expected struct PipelineDoc") {
        let found = msg["invalid type: ".len()..]
            .split([' ', ','])
            .next()
            .unwrap_or("something else");
        return format!(
            "not a pipeline: the file is a YAML {found}, not a mapping with `stages:` \
             (is it the right file?)"
        );
    }
    msg
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::StageRegistry;
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn a_file_not_in_utf8_is_located_at_its_first_bad_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("latin1.yaml");
        // "stages:\n  é: " with é in Latin-1 (0xe9) after a UTF-8 "ü" on the same line
        std::fs::write(&p, b"stages:\n  \xc3\xbc\xe9: {}\n").expect("write");
        let e = ParsedFile::read(&p).err().expect("refused");
        assert_eq!((e.line, e.col), (2, 4), "{e}");
        assert!(e.message.contains("not UTF-8 text: byte 0xe9"), "{e}");
    }

    #[test]
    fn templates_from_includes_and_kind_profiles_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "t.yaml",
            "templates:\n  echo:\n    kind: shell\n    params:\n      cmd: echo base\n      outs: [a]\nprofiles:\n  smoke:\n    \"kind:shell\":\n      cmd: echo smoke\n",
        );
        let p = write(
            dir.path(),
            "p.yaml",
            "include: [t.yaml]\nstages:\n  one:\n    template: echo\n  two:\n    template: echo\n    params:\n      outs: [b]\n",
        );
        let reg = StageRegistry::builtin();
        let plain = load_pipeline(&p, None, &reg).expect("loads");
        assert_eq!(plain.instances[0].params["cmd"], "echo base");
        assert_eq!(plain.instances[1].params["outs"][0], "b");
        let smoke = load_pipeline(&p, Some("smoke"), &reg).expect("loads");
        assert!(smoke
            .instances
            .iter()
            .all(|s| s.params["cmd"] == "echo smoke"));
    }

    #[test]
    fn named_variants_set_their_params_and_profiles_pick_some() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "p.yaml",
            "stages:\n  sub:\n    kind: shell\n    params: {cmd: echo base, outs: [a]}\n    matrix:\n      domain:\n        pg: {cmd: echo pg}\n        d: {cmd: echo d}\n  use:\n    kind: shell\n    params: {cmd: echo use, outs: [b]}\n    inputs: {up: sub}\n    foreach: [domain]\nprofiles:\n  small:\n    sub: {matrix: {domain: [d]}}\n  bad:\n    sub: {matrix: {domain: [x]}}\n",
        );
        let reg = StageRegistry::builtin();
        let all = load_pipeline(&p, None, &reg).expect("loads");
        let names: Vec<&str> = all.instances.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sub[domain=d]",
                "sub[domain=pg]",
                "use[domain=d]",
                "use[domain=pg]"
            ]
        );
        assert_eq!(all.instances[1].params["cmd"], "echo pg");
        assert!(all.instances[1].params.get("domain").is_none());
        assert_eq!(all.instances[3].inputs["up"][0].instance, 1);
        let small = load_pipeline(&p, Some("small"), &reg).expect("loads");
        let names: Vec<&str> = small.instances.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sub[domain=d]", "use[domain=d]"]);
        let err = load_pipeline(&p, Some("bad"), &reg).expect_err("unknown variant");
        assert!(
            err.to_string().contains("no variant `x` (variants: d, pg)"),
            "{err}"
        );
    }

    #[test]
    fn a_profile_that_extends_another_applies_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "p.yaml",
            "stages:\n  ft:\n    kind: shell\n    params: {cmd: echo base, outs: [a]}\n    matrix: {env.SEED: [1, 2, 3]}\n  ev:\n    kind: shell\n    params: {cmd: echo ev, outs: [b]}\nprofiles:\n  cpu:\n    \"kind:shell\": {cmd: echo cpu}\n    ev: {cmd: echo cpu-ev}\n    ft: {matrix: {env.SEED: [1, 2]}}\n  probe:\n    extends: cpu\n    \"kind:shell\": {cmd: echo probe}\n  probe_one:\n    extends: probe\n    ft: {matrix: {env.SEED: [2]}}\n  loop_a: {extends: loop_b}\n  loop_b: {extends: loop_a}\n  orphan: {extends: gpu}\n",
        );
        let reg = StageRegistry::builtin();
        let cmds = |profile: &str| -> Vec<String> {
            let pl = load_pipeline(&p, Some(profile), &reg).expect("loads");
            pl.instances
                .iter()
                .map(|s| format!("{} {}", s.name, s.params["cmd"].as_str().unwrap_or("?")))
                .collect()
        };
        assert_eq!(
            cmds("cpu"),
            [
                "ev echo cpu-ev",
                "ft[env.SEED=1] echo cpu",
                "ft[env.SEED=2] echo cpu"
            ]
        );
        // the child's kind entry wins over the parent's stage entry: it applies after it
        assert_eq!(
            cmds("probe"),
            [
                "ev echo probe",
                "ft[env.SEED=1] echo probe",
                "ft[env.SEED=2] echo probe"
            ]
        );
        assert_eq!(
            cmds("probe_one"),
            ["ev echo probe", "ft[env.SEED=2] echo probe"]
        );
        let err = load_pipeline(&p, Some("loop_a"), &reg).expect_err("cycle");
        assert!(
            err.to_string()
                .contains("profile `loop_b` extends `loop_a`, which extends it back: loop_a -> loop_b -> loop_a"),
            "{err}"
        );
        assert!(err.to_string().contains("p.yaml:"), "{err}");
        let err = load_pipeline(&p, Some("orphan"), &reg).expect_err("unknown parent");
        assert!(
            err.to_string()
                .contains("profile `orphan` extends `gpu`, which is not defined"),
            "{err}"
        );
    }

    #[test]
    fn an_input_can_pick_upstream_cells_by_coordinates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "p.yaml",
            "stages:\n  ft:\n    kind: shell\n    params: {cmd: echo, outs: [a]}\n    matrix: {env.HEAD: [cls, att], env.SEED: [1, 2]}\n  pick:\n    kind: shell\n    params: {cmd: echo, outs: [b]}\n    inputs: {up: \"ft[env.HEAD=att,env.SEED=2].a\"}\n  typo:\n    kind: shell\n    params: {cmd: echo, outs: [c]}\n    inputs: {up: \"ft[env.HEAD=att\"}\n",
        );
        let reg = StageRegistry::builtin();
        let err = load_pipeline(&p, None, &reg).expect_err("unclosed bracket");
        assert!(err.to_string().contains("`[` without `]`"), "{err}");
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, text.replace("ft[env.HEAD=att\"", "ft[env.HEAD=cls]\"")).expect("write");
        let pl = load_pipeline(&p, None, &reg).expect("loads");
        let pick = pl.select("pick")[0];
        let bound = &pl.instances[pick].inputs["up"];
        assert_eq!(bound.len(), 1);
        assert_eq!(
            pl.instances[bound[0].instance].name,
            "ft[env.HEAD=att,env.SEED=2]"
        );
        assert_eq!(bound[0].sub.as_deref(), Some("a"));
        let typo = pl.select("typo")[0];
        assert_eq!(pl.instances[typo].inputs["up"].len(), 2);
        // `--only` takes the same partial filters.
        let seed2: Vec<&str> = pl
            .select("ft[env.SEED=2]")
            .into_iter()
            .map(|i| pl.instances[i].name.as_str())
            .collect();
        assert_eq!(
            seed2,
            ["ft[env.HEAD=cls,env.SEED=2]", "ft[env.HEAD=att,env.SEED=2]"]
        );
        assert!(pl.select("ft[env.SEED=9]").is_empty());
    }
}
