//! A `split` stage's output read for training: the directory of one fold, its label set,
//! and each file's instances capped and tokenized. Used by every stage that trains or
//! evaluates on a split (`finetune`, `multitask`, `probe`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::jsonl;
use crate::data::schema::{Document, LabelSet, Pair, Task, LABELS_FILE};
use crate::data::DataError;
use crate::model::{BertTokenizer, Encoding, ModelError};
use crate::train::scores::{encode_document, encode_pair, ScoredUnit};
use crate::train::tagging::{word_windows, WordWindow};
use crate::train::EncodedInstance;

/// Why a split could not be read for training.
#[derive(Debug, thiserror::Error)]
pub enum SplitDataError {
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("no {LABELS_FILE} in {0}")]
    NoLabels(PathBuf),
    #[error("{0}: too few labels for its task")]
    TooFewLabels(PathBuf),
    #[error("{path}: instance `{id}` has label `{label}`, which labels.json does not declare")]
    UndeclaredLabel {
        path: PathBuf,
        id: String,
        label: String,
    },
    #[error("{path}: sentence `{id}` has {tokens} tokens but {tags} tags")]
    TagCount {
        path: PathBuf,
        id: String,
        tokens: usize,
        tags: usize,
    },
    /// A scoring head's split of another task.
    #[error("{path}: a scoring head reads a similarity or multi-label split, not {task:?}")]
    NotScored { path: PathBuf, task: Task },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// One line of a split file (other fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct SplitInstance {
    pub id: String,
    pub text: String,
    pub label: String,
}

/// One line of an NER split file: a sentence's words and their IOB2 tags.
#[derive(Debug, Clone, Deserialize)]
pub struct SplitSentence {
    pub id: String,
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
}

/// An NER split file read, tagged by index and cut into windows of at most `max_len` pieces.
pub struct TaggedSet {
    pub sentences: Vec<SplitSentence>,
    /// Each sentence's gold tag indices.
    pub gold: Vec<Vec<usize>>,
    pub windows: Vec<WordWindow>,
}

/// A split file read and tokenized.
pub struct SplitSet {
    pub instances: Vec<SplitInstance>,
    pub encodings: Vec<Encoding>,
    pub encoded: Vec<EncodedInstance>,
}

impl SplitSet {
    pub fn gold(&self) -> Vec<usize> {
        self.encoded.iter().map(|x| x.label).collect()
    }
}

/// A split file of a scoring head read and encoded: sentence pairs (similarity) with their
/// gold scores, or documents (multi-label) with their gold labels.
pub struct ScoredSet {
    /// [`Task::Similarity`] or [`Task::Multilabel`].
    pub task: Task,
    pub ids: Vec<String>,
    pub units: Vec<ScoredUnit>,
    /// Pairs: the gold score per unit.
    pub gold_scores: Vec<f64>,
    /// Documents: the gold label names per unit.
    pub gold_labels: Vec<Vec<String>>,
    /// Documents: the gold label indices per unit.
    pub gold_indices: Vec<Vec<usize>>,
}

/// Reads and encodes `dir/name.jsonl` of a similarity split (pairs as `[CLS] a [SEP] b
/// [SEP]`, segment ids 0/1) or a multi-label split (documents cut to `max_len` pieces), at
/// most `cap` units (see [`capped`]); `None` when the file does not exist. A split of any
/// other task is [`SplitDataError::NotScored`], file or not.
pub fn read_scored_split(
    dir: &Path,
    name: &str,
    cap: Option<usize>,
    labels: &LabelSet,
    tokenizer: &BertTokenizer,
    max_len: usize,
) -> Result<Option<ScoredSet>, SplitDataError> {
    let mut set = ScoredSet {
        task: labels.task,
        ids: Vec::new(),
        units: Vec::new(),
        gold_scores: Vec::new(),
        gold_labels: Vec::new(),
        gold_indices: Vec::new(),
    };
    match labels.task {
        Task::Similarity => {
            let Some((_, pairs)) = read_capped::<Pair>(dir, name, cap)? else {
                return Ok(None);
            };
            for x in pairs {
                set.units.push(encode_pair(
                    tokenizer,
                    &x.text_a,
                    &x.text_b,
                    max_len,
                    x.score as f32,
                )?);
                set.gold_scores.push(x.score);
                set.ids.push(x.id);
            }
        }
        Task::Multilabel => {
            let Some((path, documents)) = read_capped::<Document>(dir, name, cap)? else {
                return Ok(None);
            };
            for x in documents {
                let indices = x
                    .labels
                    .iter()
                    .map(|l| {
                        labels.labels.iter().position(|k| k == l).ok_or_else(|| {
                            SplitDataError::UndeclaredLabel {
                                path: path.clone(),
                                id: x.id.clone(),
                                label: l.clone(),
                            }
                        })
                    })
                    .collect::<Result<Vec<usize>, _>>()?;
                set.units.push(encode_document(
                    tokenizer,
                    &x.text,
                    max_len,
                    &indices,
                    labels.labels.len(),
                )?);
                set.gold_indices.push(indices);
                set.gold_labels.push(x.labels);
                set.ids.push(x.id);
            }
        }
        task => {
            let path = dir.join(format!("{name}.jsonl"));
            return Err(SplitDataError::NotScored { path, task });
        }
    }
    Ok(Some(set))
}

/// A split directory resolved for one run: `data` itself or its `fold-K/`, and the
/// `labels.json` that applies (the fold's own, else the split's).
pub struct SplitSource {
    pub dir: PathBuf,
    pub labels_path: PathBuf,
    pub label_set: LabelSet,
}

/// Resolves the `data` input (a `split` output) for `fold`; at least 2 labels.
pub fn split_source(data_root: &Path, fold: Option<u32>) -> Result<SplitSource, SplitDataError> {
    let dir = match fold {
        Some(k) => data_root.join(format!("fold-{k}")),
        None => data_root.to_path_buf(),
    };
    if !dir.is_dir() {
        return Err(SplitDataError::NotADirectory(dir));
    }
    let labels_path = [dir.join(LABELS_FILE), data_root.join(LABELS_FILE)]
        .into_iter()
        .find(|path| path.is_file())
        .ok_or_else(|| SplitDataError::NoLabels(dir.clone()))?;
    let label_set: LabelSet = jsonl::read_json(&labels_path)?;
    // classes need two labels, a multi-label task one, a similarity task none
    let needed = match label_set.task {
        Task::Relation | Task::Ner => 2,
        Task::Multilabel => 1,
        Task::Similarity => 0,
    };
    if label_set.labels.len() < needed {
        return Err(SplitDataError::TooFewLabels(labels_path));
    }
    Ok(SplitSource {
        dir,
        labels_path,
        label_set,
    })
}

/// The units of `dir/name.jsonl` (`name`: `train`, `dev` or `test`), at most `cap` of them
/// (see [`capped`]), with the file's path for error messages; `None` when the split has no
/// such file (a corpus without a dev split).
pub fn read_capped<T: Identified + serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    cap: Option<usize>,
) -> Result<Option<(PathBuf, Vec<T>)>, DataError> {
    let path = dir.join(format!("{name}.jsonl"));
    if !path.is_file() {
        return Ok(None);
    }
    let units = capped(jsonl::read::<T>(&path)?, cap);
    Ok(Some((path, units)))
}

/// Reads and tokenizes `dir/name.jsonl`, keeping at most `cap` instances (see [`capped`]);
/// `None` when the file does not exist.
pub fn read_split(
    dir: &Path,
    name: &str,
    cap: Option<usize>,
    labels: &[String],
    tokenizer: &BertTokenizer,
    max_len: usize,
) -> Result<Option<SplitSet>, SplitDataError> {
    let Some((path, instances)) = read_capped::<SplitInstance>(dir, name, cap)? else {
        return Ok(None);
    };
    encode_split(&path, instances, labels, tokenizer, max_len).map(Some)
}

/// A unit of a split file with an id (what [`capped`] keeps or drops).
pub trait Identified {
    fn id(&self) -> &str;
}

impl Identified for SplitInstance {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Identified for Pair {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Identified for Document {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Identified for SplitSentence {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Keeps at most `cap` instances: those whose ids hash lowest (blake3), in file order. The
/// subset depends only on the ids, never on the seed or the file order.
pub fn capped<T: Identified>(instances: Vec<T>, cap: Option<usize>) -> Vec<T> {
    let Some(cap) = cap.filter(|&c| c < instances.len()) else {
        return instances;
    };
    let mut ranked: Vec<(blake3::Hash, usize)> = instances
        .iter()
        .enumerate()
        .map(|(i, x)| (blake3::hash(x.id().as_bytes()), i))
        .collect();
    ranked.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    let mut keep: Vec<usize> = ranked.into_iter().take(cap).map(|(_, i)| i).collect();
    keep.sort_unstable();
    let mut instances: Vec<Option<T>> = instances.into_iter().map(Some).collect();
    keep.into_iter()
        .filter_map(|i| instances[i].take())
        .collect()
}

fn encode_split(
    path: &Path,
    instances: Vec<SplitInstance>,
    labels: &[String],
    tokenizer: &BertTokenizer,
    max_len: usize,
) -> Result<SplitSet, SplitDataError> {
    let mut encodings = Vec::with_capacity(instances.len());
    let mut encoded = Vec::with_capacity(instances.len());
    for x in &instances {
        let label = labels.iter().position(|l| *l == x.label).ok_or_else(|| {
            SplitDataError::UndeclaredLabel {
                path: path.to_path_buf(),
                id: x.id.clone(),
                label: x.label.clone(),
            }
        })?;
        let encoding = tokenizer.encode(&x.text, max_len)?;
        encoded.push(EncodedInstance::new(&x.text, &encoding, label));
        encodings.push(encoding);
    }
    Ok(SplitSet {
        instances,
        encodings,
        encoded,
    })
}

/// Reads `dir/name.jsonl` of an NER split (at most `cap` sentences, see [`capped`]), maps
/// each tag to its index in `tags` and cuts each sentence into windows of at most `max_len`
/// word pieces; `None` when the file does not exist.
pub fn read_tagged_split(
    dir: &Path,
    name: &str,
    cap: Option<usize>,
    tags: &[String],
    tokenizer: &BertTokenizer,
    max_len: usize,
) -> Result<Option<TaggedSet>, SplitDataError> {
    let Some((path, sentences)) = read_capped::<SplitSentence>(dir, name, cap)? else {
        return Ok(None);
    };
    let mut gold = Vec::with_capacity(sentences.len());
    let mut windows = Vec::new();
    for (k, x) in sentences.iter().enumerate() {
        if x.tokens.len() != x.tags.len() {
            return Err(SplitDataError::TagCount {
                path: path.clone(),
                id: x.id.clone(),
                tokens: x.tokens.len(),
                tags: x.tags.len(),
            });
        }
        let y = x
            .tags
            .iter()
            .map(|tag| {
                tags.iter()
                    .position(|t| t == tag)
                    .ok_or_else(|| SplitDataError::UndeclaredLabel {
                        path: path.clone(),
                        id: x.id.clone(),
                        label: tag.clone(),
                    })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let pieces = tokenizer.encode_words(&x.tokens)?;
        let continues: Vec<bool> = x.tags.iter().map(|t| t.starts_with("I-")).collect();
        windows.extend(word_windows(
            k,
            &pieces,
            &y,
            &continues,
            [tokenizer.cls_id(), tokenizer.sep_id()],
            max_len,
        ));
        gold.push(y);
    }
    Ok(Some(TaggedSet {
        sentences,
        gold,
        windows,
    }))
}
