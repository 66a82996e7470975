//! Exact counts on the full real corpora in `../shared/data` (relative to the repository
//! root), checked against the numbers in each corpus's SOURCE.md. Each test prints a skip
//! line and returns when the data is absent; the committed fixture slices are tested by
//! the unit tests in `src/data/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use pipe::data::corpus::{self, Units};
use pipe::data::split::{self, SplitSpec};
use pipe::data::{CorpusSpec, Instance, Stats};

fn shared(sub: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(sub);
    if p.exists() {
        Some(p)
    } else {
        println!(
            "SKIP: {} absent; full-corpus counts not checked",
            p.display()
        );
        None
    }
}

fn spec(yaml: &str) -> CorpusSpec {
    serde_yaml::from_str(yaml).expect("valid corpus params")
}

fn instances(units: &Units) -> &[Instance] {
    match units {
        Units::Relation(u) => u,
        _ => panic!("expected a relation corpus"),
    }
}

/// `{group: {label: count}}` from a table of (group, [(label, count)]).
fn table(rows: &[(&str, &[(&str, u64)])]) -> BTreeMap<String, BTreeMap<String, u64>> {
    rows.iter()
        .map(|(g, r)| {
            (
                g.to_string(),
                r.iter().map(|(l, c)| (l.to_string(), *c)).collect(),
            )
        })
        .collect()
}

#[test]
fn chemprot_blurb_counts_match_source_md() {
    let Some(dir) = shared("chemprot") else {
        return;
    };
    let c = corpus::build(
        &spec(
            "format: blurb_tsv
files: {train: blurb/train_blurb.tsv, dev: blurb/dev_blurb.tsv, test: blurb/test_blurb.tsv}
label2id: blurb/label2id.tsv
rename_labels: {'0': 'false'}
negative: 'false'",
        ),
        &dir,
    )
    .unwrap();
    assert_eq!(
        c.labels.labels,
        ["false", "CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9"]
    );
    let s = c.stats();
    let expected = table(&[
        (
            "train",
            &[
                ("false", 13_923),
                ("CPR:3", 756),
                ("CPR:4", 2_227),
                ("CPR:5", 173),
                ("CPR:6", 229),
                ("CPR:9", 727),
            ],
        ),
        (
            "dev",
            &[
                ("false", 8_860),
                ("CPR:3", 546),
                ("CPR:4", 1_091),
                ("CPR:5", 115),
                ("CPR:6", 199),
                ("CPR:9", 457),
            ],
        ),
        (
            "test",
            &[
                ("false", 12_315),
                ("CPR:3", 663),
                ("CPR:4", 1_655),
                ("CPR:5", 178),
                ("CPR:6", 292),
                ("CPR:9", 642),
            ],
        ),
    ]);
    assert_eq!(s.counts, expected);
    assert_eq!(
        (s.total("train"), s.total("dev"), s.total("test")),
        (18_035, 11_268, 15_745)
    );
    assert!(s.warnings.is_empty());
}

const DDI_LABELS: &str =
    "{DDI-false: 0, DDI-mechanism: 1, DDI-int: 2, DDI-advise: 3, DDI-effect: 4}";

fn ddi_blurb_expected() -> BTreeMap<String, BTreeMap<String, u64>> {
    table(&[
        (
            "train",
            &[
                ("DDI-false", 21_745),
                ("DDI-mechanism", 1_163),
                ("DDI-int", 177),
                ("DDI-advise", 725),
                ("DDI-effect", 1_486),
            ],
        ),
        (
            "dev",
            &[
                ("DDI-false", 2_027),
                ("DDI-mechanism", 156),
                ("DDI-int", 11),
                ("DDI-advise", 101),
                ("DDI-effect", 201),
            ],
        ),
        (
            "test",
            &[
                ("DDI-false", 4_737),
                ("DDI-mechanism", 302),
                ("DDI-int", 96),
                ("DDI-advise", 221),
                ("DDI-effect", 360),
            ],
        ),
    ])
}

#[test]
fn ddi_blurb_and_reconstructed_train_counts_match_source_md() {
    let Some(dir) = shared("ddi") else { return };
    let c = corpus::build(
        &spec(
            "format: blurb_tsv
files:
  train: {path: blurb/train_reconstructed.tsv, format: ddi_reconstructed_tsv}
  dev: blurb/dev_blurb.tsv
  test: blurb/test_blurb.tsv
label2id: blurb/label2id.tsv
rename_labels: {'0': DDI-false}
negative: DDI-false",
        ),
        &dir,
    )
    .unwrap();
    assert_eq!(
        c.labels.labels,
        [
            "DDI-false",
            "DDI-mechanism",
            "DDI-int",
            "DDI-advise",
            "DDI-effect"
        ]
    );
    assert_eq!(c.stats().counts, ddi_blurb_expected());
    // Document ids come from the rebuilt train file's pair ids.
    let train: Vec<&Instance> = instances(&c.units)
        .iter()
        .filter(|i| i.split.as_deref() == Some("train"))
        .collect();
    assert!(train.iter().all(|i| i
        .doc_id
        .as_deref()
        .is_some_and(|d| i.id.starts_with(d) && d.starts_with("DDI-"))));
    let _ = DDI_LABELS;
}

#[test]
fn ddi_official_xml_reproduces_the_blurb_split() {
    let Some(dir) = shared("ddi") else { return };
    let xml_spec = |move_ids: bool| {
        let moved = if move_ids {
            "\nmove_ids: {file: blurb/dev_0.json, strip_prefix: dev_}"
        } else {
            ""
        };
        spec(&format!(
            "format: ddi_xml
files:
  train: 'original/DDICorpus-2013.zip#DDICorpus/Train/'
  test: 'original/DDICorpus-2013.zip#DDICorpus/Test/Test for DDI Extraction task/'{moved}"
        ))
    };
    // The official counts (SOURCE.md): the one ddi="true" pair without a type is labelled
    // DDI-false and counted as a warning.
    let all = corpus::build(&xml_spec(false), &dir).unwrap();
    assert_eq!(
        all.stats().counts,
        table(&[
            (
                "train",
                &[
                    ("DDI-false", 23_771 + 1),
                    ("DDI-mechanism", 1_319),
                    ("DDI-int", 188),
                    ("DDI-advise", 826),
                    ("DDI-effect", 1_687)
                ]
            ),
            (
                "test",
                &[
                    ("DDI-false", 4_737),
                    ("DDI-mechanism", 302),
                    ("DDI-int", 96),
                    ("DDI-advise", 221),
                    ("DDI-effect", 360)
                ]
            ),
        ])
    );
    assert_eq!(
        all.warnings.get("ddi_true_without_type_labelled_false"),
        Some(&1)
    );
    let docs: BTreeSet<&str> = instances(&all.units)
        .iter()
        .filter(|i| i.split.as_deref() == Some("train"))
        .filter_map(|i| i.doc_id.as_deref())
        .collect();
    assert!(
        docs.len() <= 714 && docs.len() > 600,
        "{} train documents with pairs",
        docs.len()
    );

    // With BLURB's dev pair ids moved out of train: BLURB's split sizes, and the train part
    // equals the rebuilt train file row for row (id, sentence, label).
    let moved = corpus::build(&xml_spec(true), &dir).unwrap();
    let s = moved.stats();
    assert_eq!(
        (s.total("train"), s.total("dev"), s.total("test")),
        (25_296, 2_496, 5_716)
    );
    assert_eq!(s.counts["train"], ddi_blurb_expected()["train"]);
    let rebuilt = corpus::build(
        &spec("format: ddi_reconstructed_tsv\nfiles: {train: blurb/train_reconstructed.tsv}"),
        &dir,
    )
    .unwrap();
    let key = |i: &Instance| (i.id.clone(), i.text.clone(), i.label.clone());
    let from_xml: BTreeSet<_> = instances(&moved.units)
        .iter()
        .filter(|i| i.split.as_deref() == Some("train"))
        .map(key)
        .collect();
    let from_tsv: BTreeSet<_> = instances(&rebuilt.units).iter().map(key).collect();
    assert_eq!(from_xml.len(), 25_296);
    assert_eq!(from_xml, from_tsv);

    // The test part equals BLURB's real test file as a multiset of (sentence, label).
    let blurb = corpus::build(
        &spec(&format!(
            "format: blurb_tsv\nfiles: {{test: blurb/test_blurb.tsv}}\nlabel2id: {DDI_LABELS}"
        )),
        &dir,
    )
    .unwrap();
    let multiset = |units: &[Instance]| {
        let mut m: HashMap<(String, String), u32> = HashMap::new();
        for i in units.iter().filter(|i| i.split.as_deref() == Some("test")) {
            *m.entry((i.text.clone(), i.label.clone())).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(
        multiset(instances(&moved.units)),
        multiset(instances(&blurb.units))
    );
}

/// SOURCE.md: (positive, negative) per shipped fold.
const AIMED_FOLDS: [(u64, u64); 10] = [
    (105, 516),
    (97, 449),
    (102, 491),
    (102, 485),
    (89, 434),
    (124, 475),
    (151, 454),
    (102, 614),
    (59, 432),
    (69, 484),
];

fn aimed_expected() -> BTreeMap<String, BTreeMap<String, u64>> {
    AIMED_FOLDS
        .iter()
        .enumerate()
        .map(|(k, (p, n))| {
            (
                format!("fold-{k}"),
                [("negative".to_string(), *n), ("positive".to_string(), *p)].into(),
            )
        })
        .collect()
}

fn aimed_json_spec() -> CorpusSpec {
    let folds: Vec<String> = (0..10).map(|k| format!("original/test_{k}.json")).collect();
    spec(&format!(
        "format: aimed_json\nfolds: [{}]",
        folds.join(", ")
    ))
}

#[test]
fn aimed_json_and_tsv_give_the_same_instances_and_source_md_counts() {
    let Some(dir) = shared("aimed") else { return };
    let json = corpus::build(&aimed_json_spec(), &dir).unwrap();
    let tsv = corpus::build(
        &spec("format: aimed_tsv\nfile: aimed_protein_tagged.tsv"),
        &dir,
    )
    .unwrap();
    assert_eq!(json.labels.negative.as_deref(), Some("negative"));
    assert_eq!(json.stats().counts, aimed_expected());
    let j = instances(&json.units);
    assert_eq!(j.len(), 5_834);
    assert_eq!(j.iter().filter(|i| i.label == "positive").count(), 1_000);
    // 22 documents per fold.
    for k in 0..10u32 {
        let docs: BTreeSet<&str> = j
            .iter()
            .filter(|i| i.fold == Some(k))
            .filter_map(|i| i.doc_id.as_deref())
            .collect();
        assert_eq!(docs.len(), 22, "fold {k}");
    }
    // 164 overlapping pairs become one @PROTEIN-PROTEIN$.
    assert_eq!(
        j.iter()
            .filter(|i| i.text.contains("@PROTEIN-PROTEIN$"))
            .count(),
        164
    );
    // The JSON spans, replaced by our rule, give the converted TSV exactly (the TSV's
    // instances carry no split, only the fold column).
    let t = instances(&tsv.units);
    assert_eq!(j, t);
}

#[test]
fn aimed_shipped_folds_hold_out_each_fold_with_disjoint_documents() {
    let Some(dir) = shared("aimed") else { return };
    let c = corpus::build(&aimed_json_spec(), &dir).unwrap();
    let units = instances(&c.units).to_vec();
    let out = split::split(
        units,
        &serde_yaml::from_str::<SplitSpec>("method: shipped_folds").unwrap(),
    )
    .unwrap();
    assert_eq!(out.files.len(), 20);
    for (k, (p, n)) in AIMED_FOLDS.iter().enumerate() {
        let train = &out.files[2 * k];
        let test = &out.files[2 * k + 1];
        assert_eq!(
            (train.0.as_str(), test.0.as_str()),
            (
                format!("fold-{k}/train").as_str(),
                format!("fold-{k}/test").as_str()
            )
        );
        assert_eq!(test.1.len() as u64, p + n);
        assert_eq!(train.1.len() as u64, 5_834 - p - n);
        assert!(test
            .1
            .iter()
            .all(|i| i.fold == Some(k as u32) && i.split.as_deref() == Some("test")));
        let train_docs: BTreeSet<_> = train.1.iter().map(|i| i.doc_id.clone()).collect();
        assert!(
            test.1.iter().all(|i| !train_docs.contains(&i.doc_id)),
            "fold {k}: a document on both sides"
        );
    }
    assert!(out.warnings.is_empty());
}

#[test]
fn aimed_own_kfold_is_document_grouped_balanced_and_seeded() {
    let Some(dir) = shared("aimed") else { return };
    let c = corpus::build(&aimed_json_spec(), &dir).unwrap();
    let units = instances(&c.units).to_vec();
    let fold_of = |seed: u64| split::assign_folds(&units, 10, seed);
    let a = fold_of(1);
    assert_eq!(a, fold_of(1));
    assert_ne!(a, fold_of(2));
    let mut doc_folds: HashMap<&str, BTreeSet<u32>> = HashMap::new();
    let mut doc_sizes: HashMap<&str, usize> = HashMap::new();
    for (u, f) in units.iter().zip(&a) {
        let d = u.doc_id.as_deref().unwrap();
        doc_folds.entry(d).or_default().insert(*f);
        *doc_sizes.entry(d).or_insert(0) += 1;
    }
    assert!(
        doc_folds.values().all(|f| f.len() == 1),
        "a document in two folds"
    );
    let mut sizes = [0usize; 10];
    for f in &a {
        sizes[*f as usize] += 1;
    }
    // Greedy largest-first into the smallest fold: sizes differ by at most the largest document.
    let largest = *doc_sizes.values().max().unwrap();
    let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
    assert!(
        max - min <= largest,
        "fold sizes {sizes:?}, largest document {largest}"
    );
    assert_eq!(sizes.iter().sum::<usize>(), 5_834);
}

/// (file, sentences, tokens, [(type, B- count)]) from ner/SOURCE.md.
type NerRow = (&'static str, u64, u64, &'static [(&'static str, u64)]);

fn check_ner(corpus_dir: &str, rows: [NerRow; 3]) {
    let Some(dir) = shared(&format!("ner/{corpus_dir}")) else {
        return;
    };
    let c = corpus::build(
        &spec("format: conll\nfiles: {train: train.tsv, dev: devel.tsv, test: test.tsv}"),
        &dir,
    )
    .unwrap();
    let s: Stats = c.stats();
    for ((split, (_, sentences, tokens, mentions)), _) in
        ["train", "dev", "test"].iter().zip(rows).zip(0..)
    {
        assert_eq!(
            s.sentences[*split], sentences,
            "{corpus_dir} {split} sentences"
        );
        assert_eq!(s.tokens[*split], tokens, "{corpus_dir} {split} tokens");
        let expected: BTreeMap<String, u64> =
            mentions.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        assert_eq!(s.counts[*split], expected, "{corpus_dir} {split} mentions");
    }
}

#[test]
fn ncbi_disease_counts_match_source_md() {
    check_ner(
        "NCBI-disease-IOB",
        [
            ("train", 5_424, 135_701, &[("Disease", 5_134)]),
            ("devel", 923, 23_969, &[("Disease", 787)]),
            ("test", 940, 24_497, &[("Disease", 960)]),
        ],
    );
}

#[test]
fn bc5cdr_counts_match_source_md() {
    check_ner(
        "BC5CDR-chem-IOB",
        [
            ("train", 4_560, 118_170, &[("Chemical", 5_203)]),
            ("devel", 4_581, 117_453, &[("Chemical", 5_347)]),
            ("test", 4_797, 124_750, &[("Chemical", 5_385)]),
        ],
    );
    check_ner(
        "BC5CDR-disease-IOB",
        [
            ("train", 4_560, 118_170, &[("Disease", 4_182)]),
            ("devel", 4_581, 117_453, &[("Disease", 4_246)]),
            ("test", 4_797, 124_750, &[("Disease", 4_424)]),
        ],
    );
}

#[test]
fn jnlpba_docstart_lines_are_document_boundaries_not_tokens() {
    let Some(dir) = shared("ner/JNLPBA") else {
        return;
    };
    let c = corpus::build(
        &spec("format: conll\nfiles: {dev: devel.tsv, test: test.tsv}"),
        &dir,
    )
    .unwrap();
    let s = c.stats();
    assert_eq!((s.sentences["dev"], s.tokens["dev"]), (1_739, 47_461));
    assert_eq!((s.sentences["test"], s.tokens["test"]), (3_856, 101_039));
    let expected: BTreeMap<String, u64> = [
        ("protein", 2_466),
        ("DNA", 1_052),
        ("cell_type", 526),
        ("cell_line", 400),
        ("RNA", 107),
    ]
    .iter()
    .map(|(t, n)| (t.to_string(), *n))
    .collect();
    assert_eq!(s.counts["dev"], expected);
    let Units::Ner(sentences) = &c.units else {
        panic!()
    };
    let docs: BTreeSet<&str> = sentences
        .iter()
        .filter(|s| s.split.as_deref() == Some("dev"))
        .filter_map(|s| s.doc_id.as_deref())
        .collect();
    assert_eq!(docs.len(), 200);
}

#[test]
fn chemprot_has_no_document_ids_so_kfold_needs_consent() {
    let Some(dir) = shared("chemprot") else {
        return;
    };
    let c = corpus::build(
        &spec("format: blurb_tsv\nfiles: {dev: blurb/dev_blurb.tsv}\nlabel2id: blurb/label2id.tsv"),
        &dir,
    )
    .unwrap();
    let units = instances(&c.units).to_vec();
    let strict: SplitSpec = serde_yaml::from_str("{method: kfold, k: 5, seed: 3}").unwrap();
    let err = split::split(units.clone(), &strict)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no document id") && err.contains("allow_instance_level"),
        "{err}"
    );
    let lenient: SplitSpec =
        serde_yaml::from_str("{method: kfold, k: 5, seed: 3, allow_instance_level: true}").unwrap();
    let out = split::split(units, &lenient).unwrap();
    assert_eq!(out.warnings.get(split::INSTANCE_LEVEL), Some(&11_268));
    assert!(out.notes.iter().any(|n| n.starts_with("WARNING")));
    let test_sizes: Vec<usize> = out
        .files
        .iter()
        .filter(|(n, _)| n.ends_with("/test"))
        .map(|(_, u)| u.len())
        .collect();
    assert_eq!(test_sizes.iter().sum::<usize>(), 11_268);
    assert!(
        test_sizes.iter().max().unwrap() - test_sizes.iter().min().unwrap() <= 1,
        "{test_sizes:?}"
    );
}

/// su2022's sub-domain selections on the merged PubMed view, as SOURCE.md counts them:
/// `protein(s)` or `gene(s)` 3,344, `drug(s)` 794 (whole words, any case), Chemical and
/// Gene both annotated 1,092, of 6,469 abstracts.
#[test]
fn subdomain_selections_match_source_md() {
    use pipe::pretrain::documents::{read, Format, RecordFields};
    use pipe::stages::subdomain_corpus::Selection;
    let Some(tsv) = shared("pubmed/abstracts.tsv.gz") else {
        return;
    };
    let documents = read(&tsv, Format::Tsv, &RecordFields::default()).expect("reads");
    assert_eq!(documents.len(), 6_469);
    let count = |query: Option<&str>, types: &[&str]| {
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        let selection = Selection::new(query, &types).expect("valid selection");
        documents.iter().filter(|d| selection.selects(d)).count()
    };
    assert_eq!(
        count(Some("Protein OR Proteins OR Gene OR Genes"), &[]),
        3_344
    );
    assert_eq!(count(Some("Drug OR Drugs"), &[]), 794);
    assert_eq!(count(None, &["Chemical", "Gene"]), 1_092);
}

#[test]
fn biosses_pairs_match_source_md() {
    let Some(dir) = shared("biosses") else { return };
    let spec = spec(
        "format: pair_tsv
files: {train: blurb/train_blurb.tsv, dev: blurb/dev_blurb.tsv, test: blurb/test_blurb.tsv}
layout: {header: false, text: 0, score: 1, strip_prefix: 's1: ', pair_separator: ' s2: '}",
    );
    let c = corpus::build(&spec, &dir).expect("biosses");
    let Units::Similarity(pairs) = &c.units else {
        panic!("expected pairs")
    };
    // SOURCE.md: pairs, score min / max / mean per file
    for (split, n, min, max, mean) in [
        ("train", 64, 0.0, 4.0, 2.400),
        ("dev", 16, 0.0, 3.2, 1.712),
        ("test", 20, 0.0, 3.6, 1.940),
    ] {
        let scores: Vec<f64> = pairs
            .iter()
            .filter(|p| p.split.as_deref() == Some(split))
            .map(|p| p.score)
            .collect();
        assert_eq!(scores.len(), n, "{split}");
        let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let avg = scores.iter().sum::<f64>() / n as f64;
        assert_eq!((lo, hi), (min, max), "{split}");
        assert!((avg - mean).abs() < 5e-4, "{split}: mean {avg}");
    }
}

#[test]
fn hoc_documents_match_source_md() {
    let Some(dir) = shared("hoc") else { return };
    let ids: Vec<String> = (0..10).map(|k| format!("h{k}: {k}")).collect();
    let spec = spec(&format!(
        "format: multilabel_tsv
files: {{train: blurb/train_blurb.tsv, dev: blurb/dev_blurb.tsv, test: blurb/test_blurb.tsv}}
layout: {{header: false, text: 0, label: 1, label_separator: '|', empty_label: '10'}}
label2id: {{{}}}",
        ids.join(", ")
    ));
    let c = corpus::build(&spec, &dir).expect("hoc");
    let Units::Multilabel(docs) = &c.units else {
        panic!("expected documents")
    };
    let stats = c.stats();
    // SOURCE.md: abstracts, then the abstracts carrying each id 0..9 and `10` (none)
    for (split, n, per_label, none) in [
        (
            "train",
            1295,
            [201, 86, 68, 87, 169, 222, 101, 309, 315, 180],
            197,
        ),
        ("dev", 186, [28, 8, 18, 4, 18, 46, 19, 41, 42, 20], 22),
        ("test", 371, [62, 14, 19, 24, 53, 65, 23, 79, 105, 40], 53),
    ] {
        assert_eq!(stats.total(split), n, "{split}");
        for (k, count) in per_label.iter().enumerate() {
            assert_eq!(
                stats.counts[split][&format!("h{k}")],
                *count,
                "{split} h{k}"
            );
        }
        let empty = docs
            .iter()
            .filter(|d| d.split.as_deref() == Some(split) && d.labels.is_empty())
            .count();
        assert_eq!(empty, none, "{split}");
    }
}
