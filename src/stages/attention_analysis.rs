//! `attention_analysis`: what the SLL-Att head attends to (su2022 Fig. 2 and Table 8;
//! su2020 Fig. 3, Table V and Fig. 4). Reads files only; no model is run.
//!
//! Input `finetune`: a `finetune` output directory of an `sll_att`/`sll_att_nocls` head
//! (its `attention.jsonl`: test instances with word pieces and α; and `labels.json`, whose
//! `negative` label tells positive instances from negative ones), or that `attention.jsonl`
//! itself with `labels.json` beside it. Several outputs (the folds of a cross-validation,
//! `ft_ppi[head=sll_att,seed=1]`) are pooled; an instance id may occur only once.
//!
//! Word pieces are merged into words, a word's weight being the sum of its pieces' α, and
//! entity tags (`@GENE$`, split by the tokenizer into `@`, `gene`, `$`) into one entity
//! word ([`crate::analysis::words`]). Then:
//! - **top words** (Table 8 / Table V): every word within `window` words of an entity mention
//!   in a positive instance (gold label not the negative one) is reduced to its Porter stem;
//!   stems are ranked by their mean weight. Only stems seen at least `min_count` times are
//!   ranked: the mean of a word seen once or twice is one or two draws of α, and α sums to 1
//!   over a sentence's pieces, so a rare word in a short sentence would outrank real trigger
//!   words by chance (the papers do not give their threshold). Entity tags, punctuation and
//!   numbers are not ranked; punctuation does not count as a word for the window.
//! - **triggers** (su2020 Fig. 4): the mean weight of each `triggers` stem, counted the same
//!   way (within `window` words of an entity), in positive and in negative instances.
//! - **heat maps** (Fig. 2 / Fig. 3): the words of chosen sentences shaded by weight. The
//!   sentences are `heatmap_ids` if given, else the `heatmap_instances` correctly predicted
//!   positive instances whose largest word weight is highest (file order breaks ties), as
//!   in Fig. 2; when too few positives were predicted correctly, misclassified positives
//!   fill up the list in the same order (each caption names gold and predicted label).
//!
//! Outputs: `metrics.json` (`instances`, `positive_instances`, `negative_instances`,
//! `counted_words`, `distinct_stems`, `top_words: [{stem, mean_weight, count, example}]`,
//! `triggers: [{stem, positive_mean, negative_mean, positive_count, negative_count}]` with
//! `null` means for a stem never seen, `heatmap_ids`), `top_words.md`, `triggers.md`,
//! `triggers.svg` (grouped bar chart, when any trigger occurs), and `heatmap.html` and
//! `heatmap.svg` (when there is a sentence to draw; a report embeds the SVG with
//! `![attention](heatmap.svg)`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::analysis::record::ATTENTION_FILE;
use crate::analysis::triggers::PAPER_TRIGGERS;
use crate::analysis::{
    read_attention, render_html, render_svg, render_trigger_svg, trigger_weights, AnalysisError,
    AttentionRecord, HeatmapSentence, StemTally, StemWeight, TriggerWeight, WordKind,
};
use crate::data::jsonl;
use crate::data::schema::{LabelSet, LABELS_FILE};

/// The input's name in the pipeline.
const INPUT: &str = "finetune";

/// Params of `attention_analysis`; defaults follow su2020 IV.D–E.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionAnalysisParams {
    /// Words counted on each side of an entity mention ("three words around the entities").
    #[serde(default = "default_window")]
    pub window: usize,
    /// Stems listed in `top_words` (the papers' tables list 10).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// A stem is ranked only when seen at least this often (see the module doc).
    #[serde(default = "default_min_count")]
    pub min_count: usize,
    /// Sentences drawn as heat maps when `heatmap_ids` is empty.
    #[serde(default = "default_heatmap_instances")]
    pub heatmap_instances: usize,
    /// Instance ids to draw, in this order (overrides `heatmap_instances`).
    #[serde(default)]
    pub heatmap_ids: Vec<String>,
    /// Trigger stems (Porter stems, lower case: `activ`, not `activates`) compared between
    /// positive and negative instances.
    #[serde(default = "default_triggers")]
    pub triggers: Vec<String>,
}

fn default_window() -> usize {
    3
}
fn default_top_k() -> usize {
    10
}
fn default_min_count() -> usize {
    5
}
fn default_heatmap_instances() -> usize {
    5
}
fn default_triggers() -> Vec<String> {
    PAPER_TRIGGERS.iter().map(|s| s.to_string()).collect()
}

/// The `attention_analysis` stage kind.
pub struct AttentionAnalysisStage;

impl Stage for AttentionAnalysisStage {
    const KIND: &'static str = "attention_analysis";
    const VERSION: u32 = 1;
    type Params = AttentionAnalysisParams;
    const INPUTS: InputContract = InputContract::Declared(&[InputSpec::many(
        INPUT,
        "SLL-Att fine-tunings (their `attention.jsonl`)",
    )]);

    fn check(p: &AttentionAnalysisParams) -> Result<(), ParamError> {
        for (name, value) in [
            ("window", p.window),
            ("top_k", p.top_k),
            ("min_count", p.min_count),
        ] {
            if value == 0 {
                return Err(ParamError::new(name, "must be positive"));
            }
        }
        if let Some(bad) = p
            .triggers
            .iter()
            .find(|t| t.is_empty() || *t != &t.to_lowercase() || t.contains(char::is_whitespace))
        {
            return Err(ParamError::new(
                "triggers",
                format!("`{bad}` is not a lower-case stem (one word, e.g. `activ`)"),
            ));
        }
        Ok(())
    }

    fn run(ctx: &mut StageCtx, p: &AttentionAnalysisParams) -> Result<(), StageError> {
        run(ctx, p)
    }
}

impl From<AnalysisError> for StageError {
    fn from(e: AnalysisError) -> Self {
        match e {
            AnalysisError::Data(e) => StageError::Data(e),
            other => StageError::Input {
                name: INPUT.into(),
                message: other.to_string(),
            },
        }
    }
}

/// `attention.jsonl` and `labels.json` of the input.
fn input_files(input: &Path) -> Result<(PathBuf, PathBuf), StageError> {
    let (attention, dir) = if input.is_file() {
        (
            input.to_path_buf(),
            input.parent().unwrap_or(Path::new(".")),
        )
    } else {
        (input.join(ATTENTION_FILE), input)
    };
    let missing = |what: &str| StageError::Input {
        name: INPUT.into(),
        message: what.to_string(),
    };
    if !attention.is_file() {
        return Err(missing(&format!(
            "no {ATTENTION_FILE} in {} (only `finetune` with head sll_att or sll_att_nocls writes it)",
            dir.display()
        )));
    }
    let labels = dir.join(LABELS_FILE);
    if !labels.is_file() {
        return Err(missing(&format!("no {LABELS_FILE} in {}", dir.display())));
    }
    Ok((attention, labels))
}

/// What the pass over all instances gathers.
struct Tallies {
    positive: StemTally,
    negative: StemTally,
    positive_instances: usize,
    /// Positive instances: (correctly predicted, largest word weight, index).
    heatmap_candidates: Vec<(bool, f64, usize)>,
}

fn tally(
    ctx: &StageCtx,
    records: &[AttentionRecord],
    negative: Option<&str>,
    window: usize,
) -> Result<Tallies, StageError> {
    let mut t = Tallies {
        positive: StemTally::default(),
        negative: StemTally::default(),
        positive_instances: 0,
        heatmap_candidates: Vec::new(),
    };
    ctx.progress.set_length(records.len() as u64);
    for (i, record) in records.iter().enumerate() {
        if i % 256 == 0 {
            ctx.check_cancelled()?;
        }
        let words = record.words()?;
        if record.is_positive(negative) {
            t.positive_instances += 1;
            t.positive.add_near_entities(&words, window);
            let max = words
                .iter()
                .filter(|w| w.kind != WordKind::Special)
                .map(|w| w.weight)
                .fold(f64::NEG_INFINITY, f64::max);
            t.heatmap_candidates.push((record.is_correct(), max, i));
        } else {
            t.negative.add_near_entities(&words, window);
        }
        ctx.progress.inc(1);
    }
    Ok(t)
}

/// Indices of the instances to draw (see the module doc).
fn heatmap_choice(
    p: &AttentionAnalysisParams,
    records: &[AttentionRecord],
    mut candidates: Vec<(bool, f64, usize)>,
) -> Result<Vec<usize>, StageError> {
    if !p.heatmap_ids.is_empty() {
        return p
            .heatmap_ids
            .iter()
            .map(|id| {
                records
                    .iter()
                    .position(|r| &r.id == id)
                    .ok_or_else(|| StageError::Input {
                        name: INPUT.into(),
                        message: format!("heatmap_ids: no instance `{id}` in {ATTENTION_FILE}"),
                    })
            })
            .collect();
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    Ok(candidates
        .into_iter()
        .take(p.heatmap_instances)
        .map(|(_, _, i)| i)
        .collect())
}

/// The instances of every bound `finetune` output, pooled in binding order (the test
/// folds of a cross-validation together cover the corpus once), with their label set.
fn pooled_records(ctx: &StageCtx) -> Result<(Vec<AttentionRecord>, LabelSet), StageError> {
    let bad = |message: String| StageError::Input {
        name: INPUT.into(),
        message,
    };
    let mut pooled: Vec<AttentionRecord> = Vec::new();
    let mut label_set: Option<LabelSet> = None;
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for artifact in ctx.inputs.all(INPUT)? {
        let (attention_path, labels_path) = input_files(&artifact.path)?;
        let labels: LabelSet = jsonl::read_json(&labels_path)?;
        if let Some(first) = &label_set {
            if first.labels != labels.labels || first.negative != labels.negative {
                return Err(bad(format!(
                    "{} has other labels than the first input's; pool the folds of one task",
                    artifact.stage
                )));
            }
        }
        label_set.get_or_insert(labels);
        let records = read_attention(&attention_path)?;
        if records.is_empty() {
            return Err(bad(format!(
                "{} has no instances",
                attention_path.display()
            )));
        }
        for record in records {
            if let Some(other) = seen.insert(record.id.clone(), artifact.stage.clone()) {
                return Err(bad(format!(
                    "instance `{}` is in both {other} and {}: bind the test folds of one \
                     model (each instance once), not several seeds or heads",
                    record.id, artifact.stage
                )));
            }
            pooled.push(record);
        }
    }
    let label_set = label_set.ok_or_else(|| bad("no `finetune` output bound".into()))?;
    Ok((pooled, label_set))
}

fn run(ctx: &mut StageCtx, p: &AttentionAnalysisParams) -> Result<(), StageError> {
    let (records, labels) = pooled_records(ctx)?;
    let negative = labels.negative.as_deref();
    let t = tally(ctx, &records, negative, p.window)?;
    let top = t.positive.top(p.top_k, p.min_count);
    let triggers = trigger_weights(&t.positive, &t.negative, &p.triggers);
    let chosen = heatmap_choice(p, &records, t.heatmap_candidates)?;

    let out = ctx.out_dir.clone();
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| StageError::io(&path, e))
    };
    write(
        "top_words.md",
        &top_words_markdown(&top, p, t.positive_instances),
    )?;
    write("triggers.md", &triggers_markdown(&triggers, p))?;
    if let Some(svg) = render_trigger_svg(&triggers) {
        write("triggers.svg", &svg)?;
    }
    let heatmap_ids: Vec<&str> = chosen.iter().map(|&i| records[i].id.as_str()).collect();
    if !chosen.is_empty() {
        let sentences = chosen
            .iter()
            .map(|&i| heatmap_sentence(&records[i]))
            .collect::<Result<Vec<_>, _>>()?;
        write(
            "heatmap.html",
            &render_html("Attention weights of the SLL-Att head", &sentences),
        )?;
        write("heatmap.svg", &render_svg(&sentences))?;
    }
    ctx.write_json(
        "metrics.json",
        &json!({
            "instances": records.len(),
            "positive_instances": t.positive_instances,
            "negative_instances": records.len() - t.positive_instances,
            "negative_label": negative,
            "window": p.window,
            "min_count": p.min_count,
            "counted_words": t.positive.total_count(),
            "distinct_stems": t.positive.len(),
            "top_words": top,
            "triggers": triggers,
            "heatmap_ids": heatmap_ids,
        }),
    )?;
    Ok(())
}

fn heatmap_sentence(record: &AttentionRecord) -> Result<HeatmapSentence, AnalysisError> {
    let words = record.words()?;
    let max = words
        .iter()
        .filter(|w| w.kind != WordKind::Special)
        .map(|w| w.weight)
        .fold(0.0f64, f64::max);
    Ok(HeatmapSentence {
        caption: format!(
            "{}: gold {}, predicted {}; darkest = word weight {max:.4}",
            record.id, record.gold, record.pred
        ),
        words,
    })
}

/// A markdown table cell: `|` escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn top_words_markdown(
    top: &[StemWeight],
    p: &AttentionAnalysisParams,
    positive_instances: usize,
) -> String {
    let mut md = String::from("# Top words by attention weight\n\n");
    let _ = writeln!(
        md,
        "Mean attention weight of each Porter stem over its occurrences within {} words of an \
         entity mention in the {positive_instances} positive test instances (stems seen at \
         least {} times; a word's weight is the sum of its word pieces' α).\n",
        p.window, p.min_count
    );
    if top.is_empty() {
        let _ = writeln!(
            md,
            "No stem occurs at least {} times within the window.",
            p.min_count
        );
        return md;
    }
    md.push_str("| rank | stem | most frequent word | mean α | occurrences |\n");
    md.push_str("|---:|---|---|---:|---:|\n");
    for (rank, w) in top.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.4} | {} |",
            rank + 1,
            cell(&w.stem),
            cell(&w.example),
            w.mean_weight,
            w.count
        );
    }
    md
}

fn triggers_markdown(triggers: &[TriggerWeight], p: &AttentionAnalysisParams) -> String {
    let mut md = String::from("# Trigger-word weights in positive and negative instances\n\n");
    let _ = writeln!(
        md,
        "Mean attention weight of each trigger stem within {} words of an entity mention; \
         – where the stem does not occur.\n",
        p.window
    );
    md.push_str("| trigger stem | positive mean α | positive n | negative mean α | negative n |\n");
    md.push_str("|---|---:|---:|---:|---:|\n");
    let mean = |m: Option<f64>| m.map_or("–".to_string(), |m| format!("{m:.4}"));
    for t in triggers {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            cell(&t.stem),
            mean(t.positive_mean),
            t.positive_count,
            mean(t.negative_mean),
            t.negative_count
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::*;
    use crate::stages::StageRegistry;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/attention")
    }

    fn stage_ctx(root: &Path, input: &Path) -> StageCtx {
        pooling_ctx(root, &[input])
    }

    fn pooling_ctx(root: &Path, inputs: &[&Path]) -> StageCtx {
        let bound: Vec<(&str, &Path)> = inputs.iter().map(|p| (INPUT, *p)).collect();
        let mut ctx = StageCtx::standalone("attention", root, &bound).unwrap();
        for (fold, artifact) in ctx
            .inputs
            .by_name
            .get_mut(INPUT)
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            artifact.stage = format!("ft[fold={fold}]");
        }
        ctx
    }

    /// Params through the registry, as the executor makes them (defaults, unknown refused).
    fn params(yaml: &str) -> Result<AttentionAnalysisParams, ParamError> {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        let normalized = StageRegistry::builtin()
            .get(AttentionAnalysisStage::KIND)
            .unwrap()
            .normalize(&value)?;
        Ok(serde_json::from_value(normalized).unwrap())
    }

    fn close(got: &Value, want: f64) -> bool {
        got.as_f64().is_some_and(|g| (g - want).abs() < 1e-6)
    }

    #[test]
    fn analyses_the_hand_written_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = stage_ctx(dir.path(), &fixture());
        let p = params("{min_count: 2, heatmap_instances: 2, triggers: [inhibit, activ, bind]}")
            .unwrap();
        AttentionAnalysisStage::run(&mut ctx, &p).unwrap();
        let out = dir.path().join("out");
        let metrics: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
                .unwrap();
        assert_eq!(metrics["instances"], 6);
        assert_eq!(metrics["positive_instances"], 4);
        assert_eq!(metrics["negative_instances"], 2);
        // positive words within 3 of an entity: p1 strongly, inhibits, activity; p2 was,
        // inhibited, by; p3 activates; p4 activates, the
        assert_eq!(metrics["counted_words"], 9);
        assert_eq!(metrics["distinct_stems"], 6);
        // activ: activity 0.15 (Porter: activiti → active → activ), activates 0.6 and 0.5
        // inhibit: inhibits 0.4, inhibit+##ed 0.25 + 0.1; the negative n1's 0.1 is not counted
        let top = metrics["top_words"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{top:?}");
        assert_eq!(top[0]["stem"], "activ");
        assert!(close(&top[0]["mean_weight"], 1.25 / 3.0), "{top:?}");
        assert_eq!(top[0]["count"], 3);
        assert_eq!(top[0]["example"], "activates");
        assert_eq!(top[1]["stem"], "inhibit");
        assert!(close(&top[1]["mean_weight"], 0.375));
        let triggers = metrics["triggers"].as_array().unwrap();
        assert_eq!(triggers[0]["stem"], "inhibit");
        assert!(close(&triggers[0]["positive_mean"], 0.375));
        assert!(close(&triggers[0]["negative_mean"], 0.1));
        assert_eq!(triggers[0]["negative_count"], 1);
        assert_eq!(triggers[1]["negative_mean"], Value::Null);
        assert_eq!(triggers[2]["positive_count"], 0);
        // correct positives by largest word weight: p3 (0.6), p1 (0.4), p2 (0.35)
        assert_eq!(metrics["heatmap_ids"], serde_json::json!(["p3", "p1"]));

        let md = std::fs::read_to_string(out.join("top_words.md")).unwrap();
        assert!(
            md.contains("| 1 | activ | activates | 0.4167 | 3 |"),
            "{md}"
        );
        let md = std::fs::read_to_string(out.join("triggers.md")).unwrap();
        assert!(md.contains("| inhibit | 0.3750 | 2 | 0.1000 | 1 |"), "{md}");
        assert!(md.contains("| bind | – | 0 | – | 0 |"), "{md}");
        let svg = std::fs::read_to_string(out.join("heatmap.svg")).unwrap();
        assert!(svg.contains(">activates</text>") && svg.contains(">@CHEMICAL$</text>"));
        assert!(!svg.contains("[CLS]"));
        let html = std::fs::read_to_string(out.join("heatmap.html")).unwrap();
        assert_eq!(html.matches("class=\"caption\"").count(), 2);
        assert!(out.join("triggers.svg").is_file());
    }

    #[test]
    fn pools_the_folds_of_a_cross_validation() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(fixture().join("attention.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let folds: Vec<PathBuf> = [&lines[..3], &lines[3..]]
            .iter()
            .enumerate()
            .map(|(k, part)| {
                let fold = dir.path().join(format!("fold-{k}"));
                std::fs::create_dir_all(&fold).unwrap();
                std::fs::write(fold.join(ATTENTION_FILE), part.join("\n") + "\n").unwrap();
                std::fs::copy(fixture().join(LABELS_FILE), fold.join(LABELS_FILE)).unwrap();
                fold
            })
            .collect();
        let p = params("{min_count: 2, heatmap_instances: 2}").unwrap();
        let metrics = |root: &Path, inputs: &[&Path]| -> Result<Value, StageError> {
            let mut ctx = pooling_ctx(root, inputs);
            AttentionAnalysisStage::run(&mut ctx, &p)?;
            let text = std::fs::read_to_string(root.join("out/metrics.json")).unwrap();
            Ok(serde_json::from_str(&text).unwrap())
        };
        let whole = metrics(&dir.path().join("whole"), &[&fixture()]).unwrap();
        let pooled = metrics(&dir.path().join("pooled"), &[&folds[0], &folds[1]]).unwrap();
        assert_eq!(pooled, whole);
        assert_eq!(pooled["instances"], 6);

        let twice = metrics(&dir.path().join("twice"), &[&fixture(), &folds[1]]).unwrap_err();
        assert!(
            twice
                .to_string()
                .contains("is in both ft[fold=0] and ft[fold=1]"),
            "{twice}"
        );
    }

    #[test]
    fn chosen_ids_missing_files_and_bad_params_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        // the attention.jsonl file itself is a valid input; ids are drawn in the given order
        let mut ctx = stage_ctx(dir.path(), &fixture().join("attention.jsonl"));
        let p = params("{heatmap_ids: [n2, p4]}").unwrap();
        AttentionAnalysisStage::run(&mut ctx, &p).unwrap();
        let metrics = std::fs::read_to_string(dir.path().join("out/metrics.json")).unwrap();
        let metrics: Value = serde_json::from_str(&metrics).unwrap();
        assert_eq!(metrics["heatmap_ids"], serde_json::json!(["n2", "p4"]));
        // with the default min_count 5 no stem of the tiny fixture is ranked
        assert_eq!(metrics["top_words"], serde_json::json!([]));

        // default heatmap_instances 5 > 3 correct positives: the misclassified p4 fills up
        let mut ctx = stage_ctx(&dir.path().join("fill"), &fixture());
        AttentionAnalysisStage::run(&mut ctx, &params("{}").unwrap()).unwrap();
        let metrics = std::fs::read_to_string(dir.path().join("fill/out/metrics.json")).unwrap();
        let metrics: Value = serde_json::from_str(&metrics).unwrap();
        assert_eq!(
            metrics["heatmap_ids"],
            serde_json::json!(["p3", "p1", "p2", "p4"])
        );

        let p = params("{heatmap_ids: [nope]}").unwrap();
        let err = AttentionAnalysisStage::run(&mut ctx, &p).unwrap_err();
        assert!(err.to_string().contains("no instance `nope`"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let mut ctx = stage_ctx(&dir.path().join("second"), empty.path());
        let err = AttentionAnalysisStage::run(&mut ctx, &params("{}").unwrap()).unwrap_err();
        assert!(err.to_string().contains("sll_att"), "{err}");

        assert_eq!(params("{window: 0}").unwrap_err().param, "window");
        assert_eq!(params("{triggers: [Activ]}").unwrap_err().param, "triggers");
        assert_eq!(params("{windw: 2}").unwrap_err().param, "windw");
    }
}
