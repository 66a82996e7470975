//! Splitting a corpus for training and evaluation:
//! - `standard`: the shipped train/dev/test splits;
//! - `shipped_folds`: the shipped cross-validation folds (AIMed: fold k's test set is
//!   `test_k`, its training set the other nine);
//! - `kfold`: our own k folds grouped by document — no document in two folds, the same
//!   folds for the same seed, fold sizes balanced (documents are shuffled with the seed,
//!   then placed largest first into the currently smallest fold).
//!
//! `dev_fraction` carves a dev set out of each training set, by document (seeded).
//! Output files are `train.jsonl`/`dev.jsonl`/`test.jsonl` or `fold-K/{train,dev,test}.jsonl`;
//! each unit's `split` is rewritten to the role of the file it is in, its `fold` is its
//! own (shipped or assigned) fold.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::schema::Unit;
use super::shuffle::SplitMix64;
use super::DataError;

/// How to split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Standard,
    ShippedFolds,
    Kfold,
}

/// Params of a `split` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    pub method: Method,
    /// Number of folds (`kfold` only).
    #[serde(default)]
    pub k: Option<u32>,
    /// Seed of the `kfold` assignment and of `dev_fraction` carving.
    #[serde(default)]
    pub seed: u64,
    /// Allow instance-level folds/dev sets for units without a document id.
    #[serde(default)]
    pub allow_instance_level: bool,
    /// Fraction of each training set moved to a dev set, by document.
    #[serde(default)]
    pub dev_fraction: Option<f64>,
    /// `kfold`: which corpus splits to pool before folding (default: all units).
    #[serde(default)]
    pub pool: Option<Vec<String>>,
}

/// Counted warning keys.
pub const INSTANCE_LEVEL: &str = "units_without_doc_id_split_by_instance";
pub const DOCS_IN_SEVERAL_FOLDS: &str = "documents_in_several_shipped_folds";

impl SplitSpec {
    /// Plan-time checks.
    pub fn check(&self) -> Result<(), DataError> {
        let bad = |param: &str, message: &str| {
            Err(DataError::Param {
                param: param.into(),
                message: message.into(),
            })
        };
        match (self.method, self.k) {
            (Method::Kfold, None) => return bad("k", "method kfold needs `k`"),
            (Method::Kfold, Some(k)) if k < 2 => return bad("k", "must be at least 2"),
            (Method::Standard | Method::ShippedFolds, Some(_)) => {
                return bad(
                    "k",
                    "only method kfold takes `k` (shipped folds are counted from the data)",
                )
            }
            _ => {}
        }
        if self.pool.is_some() && self.method != Method::Kfold {
            return bad("pool", "only method kfold pools splits");
        }
        if let Some(f) = self.dev_fraction {
            if !(f > 0.0 && f < 1.0) {
                return bad("dev_fraction", "must be in (0, 1)");
            }
        }
        Ok(())
    }
}

/// The files a split writes: relative name without `.jsonl` → units.
#[derive(Debug, Clone)]
pub struct SplitOutput<U> {
    pub files: Vec<(String, Vec<U>)>,
    pub warnings: BTreeMap<String, u64>,
    /// Loud human-readable warnings for the log.
    pub notes: Vec<String>,
}

/// Grouping key of a unit: its document, or (when allowed) the unit itself.
fn group_key<U: Unit>(u: &U) -> String {
    match u.doc_id() {
        Some(d) => format!("doc:{d}"),
        None => format!("unit:{}", u.id()),
    }
}

/// Checks document ids; units without one are an error unless instance-level fallback is
/// allowed (then a loud warning is recorded).
fn check_docs<U: Unit>(
    units: &[U],
    spec: &SplitSpec,
    what: &str,
    out: &mut SplitOutput<U>,
) -> Result<(), DataError> {
    let missing = units.iter().filter(|u| u.doc_id().is_none()).count();
    if missing == 0 {
        return Ok(());
    }
    if !spec.allow_instance_level {
        return Err(DataError::Invalid(format!(
            "{what}: {missing} of {} units have no document id, so they cannot be grouped by document; \
             set `allow_instance_level: true` to split them by instance (pairs of one document may then \
             land on both sides, which inflates scores)",
            units.len()
        )));
    }
    *out.warnings.entry(INSTANCE_LEVEL.into()).or_insert(0) += missing as u64;
    out.notes.push(format!(
        "WARNING: {what}: {missing} of {} units have no document id; splitting them by instance \
         (allow_instance_level: true) — pairs of one document may land on both sides",
        units.len()
    ));
    Ok(())
}

/// Groups of unit indices by document, in order of first appearance.
fn groups<U: Unit>(units: &[U]) -> Vec<Vec<usize>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let g = *index.entry(group_key(u)).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[g].push(i);
    }
    out
}

/// Assigns each document group to one of `k` folds: seeded shuffle, then largest group
/// first into the smallest fold (ties: lowest fold index). Returns the fold of each unit.
pub fn assign_folds<U: Unit>(units: &[U], k: u32, seed: u64) -> Vec<u32> {
    let mut gs = groups(units);
    SplitMix64::new(seed, "kfold").shuffle(&mut gs);
    gs.sort_by_key(|g| std::cmp::Reverse(g.len())); // stable: ties keep the shuffled order
    let mut sizes = vec![0usize; k as usize];
    let mut fold_of = vec![0u32; units.len()];
    for g in gs {
        let (f, _) = sizes
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| (**s, *i))
            .unwrap_or((0, &0));
        sizes[f] += g.len();
        for i in g {
            fold_of[i] = f as u32;
        }
    }
    fold_of
}

/// Splits `train` into (train, dev) with about `fraction` of the units in dev, by document.
fn carve_dev<U: Unit>(train: Vec<U>, fraction: f64, seed: u64, purpose: &str) -> (Vec<U>, Vec<U>) {
    let mut gs = groups(&train);
    SplitMix64::new(seed, purpose).shuffle(&mut gs);
    let target = ((train.len() as f64) * fraction).round().max(1.0) as usize;
    let mut in_dev = vec![false; train.len()];
    let mut n = 0;
    for g in gs {
        if n >= target {
            break;
        }
        n += g.len();
        for i in g {
            in_dev[i] = true;
        }
    }
    let (mut t, mut d) = (Vec::new(), Vec::new());
    for (u, dev) in train.into_iter().zip(in_dev) {
        if dev {
            d.push(u);
        } else {
            t.push(u);
        }
    }
    (t, d)
}

fn with_role<U: Unit>(mut units: Vec<U>, role: &str) -> Vec<U> {
    for u in &mut units {
        u.set_split(Some(role.to_string()));
    }
    units
}

/// Writes the fold files for units whose `fold` is set, folds `0..k`.
fn fold_files<U: Unit>(
    units: &[U],
    k: u32,
    spec: &SplitSpec,
    out: &mut SplitOutput<U>,
) -> Result<(), DataError> {
    for f in 0..k {
        let test: Vec<U> = units
            .iter()
            .filter(|u| u.fold() == Some(f))
            .cloned()
            .collect();
        let train: Vec<U> = units
            .iter()
            .filter(|u| u.fold() != Some(f))
            .cloned()
            .collect();
        let (train, dev) = match spec.dev_fraction {
            Some(fr) => {
                check_docs(&train, spec, &format!("dev_fraction (fold {f})"), out)?;
                carve_dev(train, fr, spec.seed, &format!("dev/{f}"))
            }
            None => (train, Vec::new()),
        };
        out.files
            .push((format!("fold-{f}/train"), with_role(train, "train")));
        if !dev.is_empty() {
            out.files
                .push((format!("fold-{f}/dev"), with_role(dev, "dev")));
        }
        out.files
            .push((format!("fold-{f}/test"), with_role(test, "test")));
    }
    Ok(())
}

/// Splits `units` by `spec`.
pub fn split<U: Unit>(units: Vec<U>, spec: &SplitSpec) -> Result<SplitOutput<U>, DataError> {
    spec.check()?;
    let mut out = SplitOutput {
        files: Vec::new(),
        warnings: BTreeMap::new(),
        notes: Vec::new(),
    };
    match spec.method {
        Method::Standard => {
            let missing = units.iter().filter(|u| u.split().is_none()).count();
            if missing > 0 {
                return Err(DataError::Invalid(format!(
                    "method standard: {missing} of {} units have no split (this corpus ships folds or \
                     nothing); use method shipped_folds or kfold",
                    units.len()
                )));
            }
            let mut by: BTreeMap<String, Vec<U>> = BTreeMap::new();
            for u in units {
                by.entry(u.split().unwrap_or_default().to_string())
                    .or_default()
                    .push(u);
            }
            let mut train = by.remove("train").ok_or_else(|| {
                DataError::Invalid("method standard: the corpus has no train split".into())
            })?;
            let mut dev = by.remove("dev").unwrap_or_default();
            if let Some(fr) = spec.dev_fraction {
                if !dev.is_empty() {
                    return Err(DataError::Param {
                        param: "dev_fraction".into(),
                        message: format!(
                            "the corpus already ships a dev split ({} units)",
                            dev.len()
                        ),
                    });
                }
                check_docs(&train, spec, "dev_fraction", &mut out)?;
                (train, dev) = carve_dev(train, fr, spec.seed, "dev");
            }
            out.files.push(("train".into(), with_role(train, "train")));
            if !dev.is_empty() {
                out.files.push(("dev".into(), with_role(dev, "dev")));
            }
            if let Some(test) = by.remove("test") {
                out.files.push(("test".into(), test));
            }
        }
        Method::ShippedFolds => {
            let missing = units.iter().filter(|u| u.fold().is_none()).count();
            if missing > 0 {
                return Err(DataError::Invalid(format!(
                    "method shipped_folds: {missing} of {} units have no fold (this corpus ships no \
                     folds); use method kfold",
                    units.len()
                )));
            }
            let folds: BTreeSet<u32> = units.iter().filter_map(|u| u.fold()).collect();
            let k = folds.len() as u32;
            if k < 2 || folds.iter().copied().ne(0..k) {
                return Err(DataError::Invalid(format!(
                    "method shipped_folds: folds must be 0..k-1 with k ≥ 2, found {folds:?}"
                )));
            }
            let mut fold_of_doc: HashMap<&str, BTreeSet<u32>> = HashMap::new();
            for u in &units {
                if let (Some(d), Some(f)) = (u.doc_id(), u.fold()) {
                    fold_of_doc.entry(d).or_default().insert(f);
                }
            }
            let shared = fold_of_doc.values().filter(|f| f.len() > 1).count();
            if shared > 0 {
                out.warnings
                    .insert(DOCS_IN_SEVERAL_FOLDS.into(), shared as u64);
                out.notes.push(format!(
                    "WARNING: {shared} documents have units in more than one shipped fold"
                ));
            }
            fold_files(&units, k, spec, &mut out)?;
        }
        Method::Kfold => {
            let k = spec.k.unwrap_or(0);
            let mut pool: Vec<U> = match &spec.pool {
                Some(p) => units
                    .into_iter()
                    .filter(|u| u.split().is_some_and(|s| p.iter().any(|x| x == s)))
                    .collect(),
                None => units,
            };
            if pool.len() < k as usize {
                return Err(DataError::Invalid(format!(
                    "method kfold: {} units for k = {k} folds",
                    pool.len()
                )));
            }
            check_docs(&pool, spec, "method kfold", &mut out)?;
            let folds = assign_folds(&pool, k, spec.seed);
            for (u, f) in pool.iter_mut().zip(folds) {
                u.set_fold(Some(f));
            }
            fold_files(&pool, k, spec, &mut out)?;
        }
    }
    Ok(out)
}

/// Reads the corpus in `corpus_dir`, splits it by `spec`, and writes the split files,
/// `labels.json` (copied) and `stats.json` into `out_dir`. Returns the statistics and the
/// warnings to print.
pub fn split_dir(
    corpus_dir: &std::path::Path,
    spec: &SplitSpec,
    out_dir: &std::path::Path,
) -> Result<(super::Stats, Vec<String>), DataError> {
    use super::schema::{Document, Instance, LabelSet, Pair, Sentence, Task, LABELS_FILE};
    let labels: LabelSet = super::jsonl::read_json(&corpus_dir.join(LABELS_FILE))?;
    let units_path = corpus_dir.join(labels.task.units_file());
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    let (stats, notes) = match labels.task {
        Task::Relation => write_split(
            split(super::jsonl::read::<Instance>(&units_path)?, spec)?,
            &labels,
            out_dir,
            |_| 0,
        )?,
        Task::Ner => write_split(
            split(super::jsonl::read::<Sentence>(&units_path)?, spec)?,
            &labels,
            out_dir,
            |s| s.tokens.len() as u64,
        )?,
        Task::Similarity => write_split(
            split(super::jsonl::read::<Pair>(&units_path)?, spec)?,
            &labels,
            out_dir,
            |_| 0,
        )?,
        Task::Multilabel => write_split(
            split(super::jsonl::read::<Document>(&units_path)?, spec)?,
            &labels,
            out_dir,
            |_| 0,
        )?,
    };
    super::jsonl::write_json(&out_dir.join(LABELS_FILE), &labels)?;
    stats.write(out_dir)?;
    Ok((stats, notes))
}

fn write_split<U: Unit>(
    out: SplitOutput<U>,
    labels: &super::LabelSet,
    dir: &std::path::Path,
    tokens_of: impl Fn(&U) -> u64 + Copy,
) -> Result<(super::Stats, Vec<String>), DataError> {
    let mut stats = super::Stats::count::<U>(
        &[],
        |_| String::new(),
        labels,
        out.warnings.clone(),
        tokens_of,
    );
    for (name, units) in &out.files {
        super::jsonl::write(&dir.join(format!("{name}.jsonl")), units)?;
        let part = super::Stats::count(units, |_| name.clone(), labels, BTreeMap::new(), tokens_of);
        stats.counts.extend(part.counts);
        stats.sentences.extend(part.sentences);
        stats.tokens.extend(part.tokens);
    }
    Ok((stats, out.notes))
}
