//! Corpus and split tests on the committed fixture slices (`tests/fixtures/corpora/`,
//! real lines of the real corpora; expected counts computed independently, see the
//! README there). Full-file counts are in `tests/corpora_real.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::corpus::{self, Corpus, Units};
use super::schema::{Instance, LABELS_FILE, STATS_FILE};
use super::split::{self, SplitSpec};
use super::{stats_of, CorpusSpec, DataError};

fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/corpora")
        .join(sub)
}

fn spec(yaml: &str) -> CorpusSpec {
    serde_yaml::from_str(yaml).expect("valid corpus params")
}

fn build(yaml: &str, dir: &Path) -> Result<Corpus, DataError> {
    corpus::build(&spec(yaml), dir)
}

fn rel(c: &Corpus) -> &[Instance] {
    match &c.units {
        Units::Relation(u) => u,
        _ => panic!("expected relation units"),
    }
}

fn counts(rows: &[(&str, &[(&str, u64)])]) -> BTreeMap<String, BTreeMap<String, u64>> {
    rows.iter()
        .map(|(g, r)| {
            (
                g.to_string(),
                r.iter().map(|(l, c)| (l.to_string(), *c)).collect(),
            )
        })
        .collect()
}

const CHEMPROT: &str = "format: blurb_tsv
files: {train: blurb/train_blurb.tsv, dev: blurb/dev_blurb.tsv, test: blurb/test_blurb.tsv}
label2id: blurb/label2id.tsv
negative: '0'";

#[test]
fn chemprot_blurb_slice() {
    let c = build(CHEMPROT, &fixtures("chemprot")).unwrap();
    assert_eq!(
        c.labels.labels,
        ["0", "CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9"]
    );
    assert_eq!(c.labels.negative.as_deref(), Some("0"));
    let z = |n| n;
    assert_eq!(
        c.stats().counts,
        counts(&[
            (
                "train",
                &[
                    ("0", 23),
                    ("CPR:3", 1),
                    ("CPR:4", 17),
                    ("CPR:5", 1),
                    ("CPR:6", 1),
                    ("CPR:9", 1)
                ]
            ),
            (
                "dev",
                &[
                    ("0", 20),
                    ("CPR:3", z(0)),
                    ("CPR:4", 0),
                    ("CPR:5", 0),
                    ("CPR:6", 0),
                    ("CPR:9", 0)
                ]
            ),
            (
                "test",
                &[
                    ("0", 17),
                    ("CPR:3", 0),
                    ("CPR:4", 0),
                    ("CPR:5", 0),
                    ("CPR:6", 3),
                    ("CPR:9", 0)
                ]
            ),
        ])
    );
    let first = &rel(&c)[0];
    assert_eq!(first.id, "train-1");
    assert_eq!(first.doc_id, None);
    assert!(first.text.contains("@CHEMICAL$") && first.text.contains("@GENE$"));
}

#[test]
fn ddi_blurb_with_rebuilt_train_slice() {
    let c = build(
        "format: blurb_tsv
files:
  train: {path: blurb/train_reconstructed.tsv, format: ddi_reconstructed_tsv}
  dev: blurb/dev_blurb.tsv
  test: blurb/test_blurb.tsv
label2id: blurb/label2id.tsv
rename_labels: {'0': DDI-false}
negative: DDI-false",
        &fixtures("ddi"),
    )
    .unwrap();
    let row = |f, m, i, a, e| -> Vec<(&str, u64)> {
        vec![
            ("DDI-false", f),
            ("DDI-mechanism", m),
            ("DDI-int", i),
            ("DDI-advise", a),
            ("DDI-effect", e),
        ]
    };
    let (tr, de, te) = (
        row(13, 4, 0, 2, 12),
        row(23, 1, 0, 0, 1),
        row(22, 2, 0, 1, 0),
    );
    assert_eq!(
        c.stats().counts,
        counts(&[("train", &tr), ("dev", &de), ("test", &te)])
    );
}

const DDI_XML: &str = "format: ddi_xml
files:
  train: 'original/DDICorpus-slice.zip#DDICorpus/Train/'
  test: 'original/DDICorpus-slice.zip#DDICorpus/Test/Test for DDI Extraction task/'";

#[test]
fn ddi_xml_slice_matches_the_rebuilt_train_rows() {
    let dir = fixtures("ddi");
    let all = build(DDI_XML, &dir).unwrap();
    let row = |f, m, i, a, e| -> Vec<(&str, u64)> {
        vec![
            ("DDI-false", f),
            ("DDI-mechanism", m),
            ("DDI-int", i),
            ("DDI-advise", a),
            ("DDI-effect", e),
        ]
    };
    let (tr, te) = (row(19, 5, 1, 2, 14), row(6, 2, 0, 2, 2));
    assert_eq!(all.stats().counts, counts(&[("train", &tr), ("test", &te)]));
    assert_eq!(all.labels.negative.as_deref(), Some("DDI-false"));

    let moved = build(
        &format!("{DDI_XML}\nmove_ids: {{file: blurb/dev_ids.txt, strip_prefix: dev_}}"),
        &dir,
    )
    .unwrap();
    let s = moved.stats();
    assert_eq!(
        (s.total("train"), s.total("dev"), s.total("test")),
        (31, 10, 12)
    );
    let rebuilt = build(
        "format: ddi_reconstructed_tsv\nfiles: {train: blurb/train_reconstructed.tsv}",
        &dir,
    )
    .unwrap();
    let key = |i: &Instance| {
        (
            i.id.clone(),
            i.doc_id.clone(),
            i.text.clone(),
            i.label.clone(),
        )
    };
    let xml: BTreeSet<_> = rel(&moved)
        .iter()
        .filter(|i| i.split.as_deref() == Some("train"))
        .map(key)
        .collect();
    let tsv: BTreeSet<_> = rel(&rebuilt).iter().map(key).collect();
    assert_eq!(xml, tsv);
    // The discontinuous mention of DDI-DrugBank.d356 spans first start to last end.
    assert!(rel(&all)
        .iter()
        .any(|i| i.doc_id.as_deref() == Some("DDI-DrugBank.d356")));
}

#[test]
fn ddi_xml_reads_an_unpacked_directory_like_the_zip() {
    let dir = tempfile::tempdir().unwrap();
    crate::sources::unpack::unpack(
        &fixtures("ddi/original/DDICorpus-slice.zip"),
        crate::sources::unpack::ArchiveKind::Zip,
        dir.path(),
    )
    .unwrap();
    let from_dir = build(
        "format: ddi_xml\nfiles: {train: DDICorpus/Train, test: 'DDICorpus/Test/Test for DDI Extraction task'}",
        dir.path(),
    )
    .unwrap();
    let from_zip = build(DDI_XML, &fixtures("ddi")).unwrap();
    assert_eq!(from_dir.units, from_zip.units);
}

fn aimed_json() -> String {
    let folds: Vec<String> = (0..10).map(|k| format!("original/test_{k}.json")).collect();
    format!("format: aimed_json\nfolds: [{}]", folds.join(", "))
}

/// (positive, negative, documents) per fold of the slice.
const AIMED_SLICE: [(u64, u64, usize); 10] = [
    (2, 4, 2),
    (0, 6, 2),
    (1, 5, 2),
    (1, 5, 1),
    (3, 3, 2),
    (2, 4, 2),
    (0, 6, 2),
    (2, 4, 2),
    (0, 6, 2),
    (1, 5, 1),
];

#[test]
fn aimed_json_slice_equals_the_tagged_tsv() {
    let dir = fixtures("aimed");
    let json = build(&aimed_json(), &dir).unwrap();
    let tsv = build("format: aimed_tsv\nfile: aimed_protein_tagged.tsv", &dir).unwrap();
    assert_eq!(rel(&json), rel(&tsv));
    assert_eq!(json.labels.labels, ["negative", "positive"]);
    let s = json.stats();
    for (k, (p, n, docs)) in AIMED_SLICE.iter().enumerate() {
        let g = format!("fold-{k}");
        assert_eq!(
            (s.counts[&g]["positive"], s.counts[&g]["negative"]),
            (*p, *n),
            "{g}"
        );
        let d: BTreeSet<_> = rel(&json)
            .iter()
            .filter(|i| i.fold == Some(k as u32))
            .map(|i| i.doc_id.clone())
            .collect();
        assert_eq!(d.len(), *docs, "{g}");
    }
    assert_eq!(
        rel(&json)
            .iter()
            .filter(|i| i.text.contains("@PROTEIN-PROTEIN$"))
            .count(),
        11
    );
    let first = &rel(&json)[0];
    assert_eq!(first.id, "AIMed.d193.s1641.p0");
    assert_eq!(first.doc_id.as_deref(), Some("AIMed.d193"));
    assert_eq!(
        first.text,
        "Physical and functional interactions between the transcriptional inhibitors @PROTEIN$ and @PROTEIN$. \
         Evidence toward a novel mechanism regulating muscle-specific gene expression."
    );
}

#[test]
fn shipped_folds_and_own_kfold_keep_documents_together() {
    let c = build(&aimed_json(), &fixtures("aimed")).unwrap();
    let units = rel(&c).to_vec();
    let shipped = split::split(
        units.clone(),
        &serde_yaml::from_str("method: shipped_folds").unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = shipped.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 20);
    assert_eq!(&names[..2], ["fold-0/train", "fold-0/test"]);
    for pair in shipped.files.chunks(2) {
        let train_docs: BTreeSet<_> = pair[0].1.iter().map(|i| i.doc_id.clone()).collect();
        assert!(pair[1].1.iter().all(|i| !train_docs.contains(&i.doc_id)));
        assert_eq!(pair[0].1.len() + pair[1].1.len(), units.len());
    }

    let kfold = |seed| -> SplitSpec {
        serde_yaml::from_str(&format!("{{method: kfold, k: 4, seed: {seed}}}")).unwrap()
    };
    let a = split::split(units.clone(), &kfold(5)).unwrap();
    let b = split::split(units.clone(), &kfold(5)).unwrap();
    let tests = |o: &split::SplitOutput<Instance>| -> Vec<Vec<String>> {
        o.files
            .iter()
            .filter(|(n, _)| n.ends_with("/test"))
            .map(|(_, u)| u.iter().map(|i| i.id.clone()).collect())
            .collect()
    };
    assert_eq!(tests(&a), tests(&b));
    let mut fold_of_doc: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for (_, u) in a.files.iter().filter(|(n, _)| n.ends_with("/test")) {
        for i in u {
            fold_of_doc
                .entry(i.doc_id.clone().unwrap())
                .or_default()
                .insert(i.fold.unwrap());
        }
    }
    assert!(fold_of_doc.values().all(|f| f.len() == 1));
    let all_test: usize = tests(&a).iter().map(Vec::len).sum();
    assert_eq!(all_test, units.len());
}

#[test]
fn standard_split_writes_files_stats_and_labels() {
    let corpus_dir = tempfile::tempdir().unwrap();
    let c = build(CHEMPROT, &fixtures("chemprot")).unwrap();
    c.write(corpus_dir.path()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (stats, notes) = split::split_dir(
        corpus_dir.path(),
        &serde_yaml::from_str("method: standard").unwrap(),
        out.path(),
    )
    .unwrap();
    assert!(notes.is_empty());
    for f in [
        "train.jsonl",
        "dev.jsonl",
        "test.jsonl",
        LABELS_FILE,
        STATS_FILE,
    ] {
        assert!(out.path().join(f).is_file(), "{f}");
    }
    let train: Vec<Instance> = super::jsonl::read(&out.path().join("train.jsonl")).unwrap();
    assert_eq!(train.len(), 44);
    assert_eq!(stats.total("test"), 20);
    let read_back = stats_of(out.path()).unwrap();
    assert_eq!(read_back.counts, stats.counts);
    assert_eq!(
        read_back.label_order,
        ["0", "CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9"]
    );
    let table = read_back.to_string();
    assert!(table.lines().next().unwrap().starts_with("split"));
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["total", "84", "60", "1", "17", "1", "4", "1"]),
        "{table}"
    );
    assert_eq!(read_back.counts_json()["test"]["CPR:6"], 3);

    // The corpus ships a dev split, so carving one is refused; ChemProt has no document
    // ids, so carving from a corpus without dev needs consent.
    let carve: SplitSpec = serde_yaml::from_str("{method: standard, dev_fraction: 0.2}").unwrap();
    assert!(split::split(rel(&c).to_vec(), &carve)
        .unwrap_err()
        .to_string()
        .contains("already ships a dev split"));
    let no_dev: Vec<Instance> = rel(&c)
        .iter()
        .filter(|i| i.split.as_deref() != Some("dev"))
        .cloned()
        .collect();
    assert!(split::split(no_dev.clone(), &carve)
        .unwrap_err()
        .to_string()
        .contains("allow_instance_level"));
    let carve_ok: SplitSpec = serde_yaml::from_str(
        "{method: standard, dev_fraction: 0.25, allow_instance_level: true, seed: 9}",
    )
    .unwrap();
    let o = split::split(no_dev, &carve_ok).unwrap();
    let sizes: Vec<(String, usize)> = o.files.iter().map(|(n, u)| (n.clone(), u.len())).collect();
    assert_eq!(
        sizes,
        [
            ("train".to_string(), 33),
            ("dev".to_string(), 11),
            ("test".to_string(), 20)
        ]
    );
}

#[test]
fn ner_slices_count_sentences_tokens_and_mentions() {
    for (name, rows) in [
        (
            "NCBI-disease-IOB",
            [
                (12, 256, ("Disease", 9)),
                (12, 285, ("Disease", 8)),
                (12, 346, ("Disease", 29)),
            ],
        ),
        (
            "BC5CDR-chem-IOB",
            [
                (10, 274, ("Chemical", 12)),
                (10, 258, ("Chemical", 12)),
                (10, 308, ("Chemical", 9)),
            ],
        ),
        (
            "BC5CDR-disease-IOB",
            [
                (10, 274, ("Disease", 13)),
                (10, 258, ("Disease", 9)),
                (10, 308, ("Disease", 18)),
            ],
        ),
    ] {
        let c = build(
            "format: conll\nfiles: {train: train.tsv, dev: devel.tsv, test: test.tsv}",
            &fixtures(&format!("ner/{name}")),
        )
        .unwrap();
        let s = c.stats();
        for (split, (sentences, tokens, (ty, mentions))) in
            ["train", "dev", "test"].into_iter().zip(rows)
        {
            assert_eq!(
                (s.sentences[split], s.tokens[split], s.counts[split][ty]),
                (sentences, tokens, mentions),
                "{name} {split}"
            );
        }
        let ty = rows[0].2 .0;
        assert_eq!(
            c.labels.labels,
            ["O".to_string(), format!("B-{ty}"), format!("I-{ty}")]
        );
    }
    let j = build(
        "format: conll\nfiles: {dev: devel.tsv}",
        &fixtures("ner/JNLPBA"),
    )
    .unwrap();
    let s = j.stats();
    assert_eq!((s.sentences["dev"], s.tokens["dev"]), (29, 821));
    let expected: BTreeMap<String, u64> = [
        ("DNA", 30),
        ("RNA", 5),
        ("cell_line", 18),
        ("cell_type", 4),
        ("protein", 44),
    ]
    .iter()
    .map(|(t, n)| (t.to_string(), *n))
    .collect();
    assert_eq!(s.counts["dev"], expected);
    let Units::Ner(sentences) = &j.units else {
        panic!()
    };
    let docs: BTreeSet<_> = sentences
        .iter()
        .map(|s| s.doc_id.clone().unwrap())
        .collect();
    assert_eq!(docs.len(), 3);
    assert!(sentences
        .iter()
        .all(|s| !s.tokens.iter().any(|t| t.starts_with("-DOCSTART-"))));
}

#[test]
fn ner_types_can_be_renamed_and_declared() {
    let dir = fixtures("ner/BC5CDR-chem-IOB");
    let c = build("format: conll\nfiles: {train: train.tsv}\nrename_labels: {Chemical: chemical}\nlabels: [chemical]", &dir).unwrap();
    assert_eq!(c.labels.labels, ["O", "B-chemical", "I-chemical"]);
    let err = build(
        "format: conll\nfiles: {train: train.tsv}\nlabels: [Disease]",
        &dir,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("train.tsv:")
            && err.contains("entity type `Chemical` is not one of the declared types"),
        "{err}"
    );
}

/// Copies a fixture file into a temp dir with `line` (1-based) replaced.
fn with_broken_line(src: &Path, name: &str, line: usize, replacement: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(src).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[line - 1] = replacement;
    std::fs::write(dir.path().join(name), lines.join("\n") + "\n").unwrap();
    dir
}

#[test]
fn a_stray_column_or_a_nul_byte_is_an_error_at_its_line_never_dropped() {
    // #22 item 9: a headerless line with one column too many lost its text silently
    let label2id = |dir: &tempfile::TempDir| {
        std::fs::copy(
            fixtures("chemprot/blurb/label2id.tsv"),
            dir.path().join("label2id.tsv"),
        )
        .unwrap();
    };
    let yaml = "format: blurb_tsv\nfiles: {train: train.tsv}\nlabel2id: label2id.tsv";
    let extra = with_broken_line(
        &fixtures("chemprot/blurb/train_blurb.tsv"),
        "train.tsv",
        4,
        "@GENE$ binds @CHEMICAL$.\t0\tstray",
    );
    label2id(&extra);
    assert_eq!(
        build(yaml, extra.path()).unwrap_err().to_string(),
        "train.tsv:4: expected 2 tab-separated columns (as most lines of the file), found 3"
    );
    let nul = with_broken_line(
        &fixtures("chemprot/blurb/train_blurb.tsv"),
        "train.tsv",
        5,
        "@GENE$ binds\0 @CHEMICAL$.\t0",
    );
    label2id(&nul);
    assert_eq!(
        build(yaml, nul.path()).unwrap_err().to_string(),
        "train.tsv:5: a NUL byte in the line (a binary or damaged file?)"
    );
    // asked to skip, it is counted like any malformed line
    let skipped = build(&format!("{yaml}\non_error: skip"), nul.path()).unwrap();
    assert_eq!(skipped.warnings.get("skipped"), Some(&1));

    let json = tempfile::tempdir().unwrap();
    std::fs::write(
        json.path().join("train.jsonl"),
        "{\"text\": \"@GENE$ binds @CHEMICAL$.\", \"label\": \"yes\"}\n\
         {\"text\": \"@GENE$ \\u0000 @CHEMICAL$.\", \"label\": \"no\"}\n",
    )
    .unwrap();
    let err = build(
        "format: jsonl\nfiles: {train: train.jsonl}\nlayout: {text: text, label: label}",
        json.path(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "train.jsonl:2: a NUL byte in the line (a binary or damaged file?)"
    );

    let conll = with_broken_line(
        &fixtures("ner/NCBI-disease-IOB/train.tsv"),
        "train.tsv",
        2,
        "o\0f\tO",
    );
    let err = build("format: conll\nfiles: {train: train.tsv}", conll.path())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "train.tsv:2: a NUL byte in the line (a binary or damaged file?)"
    );
}

#[test]
fn malformed_lines_name_file_and_line_or_are_skipped_and_counted() {
    let dir = with_broken_line(
        &fixtures("chemprot/blurb/train_blurb.tsv"),
        "train.tsv",
        3,
        "a sentence without its label column",
    );
    std::fs::copy(
        fixtures("chemprot/blurb/label2id.tsv"),
        dir.path().join("label2id.tsv"),
    )
    .unwrap();
    let yaml = "format: blurb_tsv\nfiles: {train: train.tsv}\nlabel2id: label2id.tsv";
    let err = build(yaml, dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "train.tsv:3: expected 2 tab-separated columns, found 1"
    );

    let skipped = build(&format!("{yaml}\non_error: skip"), dir.path()).unwrap();
    assert_eq!(rel(&skipped).len(), 43);
    assert_eq!(skipped.warnings.get("skipped"), Some(&1));
    assert!(skipped.notes.iter().any(|n| n.contains("train.tsv:3")));
    let out = tempfile::tempdir().unwrap();
    skipped.write(out.path()).unwrap();
    let stats = stats_of(out.path()).unwrap();
    assert_eq!(stats.warnings.get("skipped"), Some(&1));

    let bad_label = with_broken_line(
        &fixtures("chemprot/blurb/train_blurb.tsv"),
        "train.tsv",
        7,
        "@GENE$ binds @CHEMICAL$.\t9",
    );
    std::fs::copy(
        fixtures("chemprot/blurb/label2id.tsv"),
        bad_label.path().join("label2id.tsv"),
    )
    .unwrap();
    let err = build(yaml, bad_label.path()).unwrap_err().to_string();
    assert_eq!(err, "train.tsv:7: label id `9` is not in label2id");

    let conll = with_broken_line(
        &fixtures("ner/NCBI-disease-IOB/train.tsv"),
        "train.tsv",
        2,
        "of\tI-Disease",
    );
    let err = build("format: conll\nfiles: {train: train.tsv}", conll.path())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "train.tsv:2: `I-Disease` follows `O`, not B-Disease/I-Disease (not IOB2)"
    );
    let skipped = build(
        "format: conll\nfiles: {train: train.tsv}\non_error: skip",
        conll.path(),
    )
    .unwrap();
    assert_eq!(skipped.stats().sentences["train"], 11);
    assert_eq!(skipped.warnings.get("skipped"), Some(&1));
}

#[test]
fn a_split_that_yields_nothing_is_an_error_not_a_vanished_split() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures("chemprot/blurb/train_blurb.tsv"),
        dir.path().join("train.tsv"),
    )
    .unwrap();
    std::fs::copy(
        fixtures("chemprot/blurb/label2id.tsv"),
        dir.path().join("label2id.tsv"),
    )
    .unwrap();
    std::fs::write(dir.path().join("dev.tsv"), "").unwrap();
    let yaml = "format: blurb_tsv\nfiles: {train: train.tsv, dev: dev.tsv}\nlabel2id: label2id.tsv";
    let err = build(yaml, dir.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        "dev.tsv: split `dev` has no instances: the file holds none"
    );
    // every line malformed and skipped: the same error, saying why
    std::fs::write(dir.path().join("dev.tsv"), "no label here\nnor here\n").unwrap();
    let err = build(&format!("{yaml}\non_error: skip"), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("dev.tsv: split `dev` has no instances: 2 malformed line(s) were skipped"),
        "{err}"
    );
}

#[test]
fn a_new_corpus_needs_only_yaml_jsonl_with_markers() {
    // SciBERT's ChemProt copy marks chemicals `[[ … ]]` and genes `<< … >>`. One line's
    // chemical name itself contains `[[`, so bare `[[` markers make it malformed (line 15)
    // while the space-padded markers that SciBERT writes parse every line.
    let dir = fixtures("chemprot/scibert");
    let markers = |open: &str, close: &str| {
        format!(
            "format: jsonl
files: {{train: train.txt}}
layout: {{text: text, label: label}}
entities:
  style: markers
  markers:
    - {{open: '{open}', close: '{close}', tag: '@CHEMICAL$'}}
    - {{open: '<< ', close: ' >>', tag: '@GENE$'}}
overlap_tag: '@CHEM-GENE$'"
        )
    };
    let err = build(&markers("[[", "]]"), &dir).unwrap_err().to_string();
    assert!(err.starts_with("train.txt:15: "), "{err}");
    let c = build(&markers("[[ ", " ]]"), &dir).unwrap();
    assert_eq!(rel(&c).len(), 15);
    assert!(rel(&c).iter().all(
        |i| i.text.matches("@CHEMICAL$").count() == 1 && i.text.matches("@GENE$").count() == 1
    ));
    assert!(rel(&c)
        .iter()
        .all(|i| !i.text.contains("[[ ") && !i.text.contains("<< ")));
    assert_eq!(c.stats().counts["train"]["AGONIST"], 3);
    assert_eq!(c.labels.labels.len(), 9);
}

#[test]
fn a_new_corpus_needs_only_yaml_tsv_and_json_layouts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pairs.tsv"),
        "uid\tsent\tcls\tpart\nD1.s1.p1\tA binds B.\tyes\ttrain\nD1.s2.p1\tA not B.\tno\ttrain\nD2.s1.p1\tC and D.\tno\ttest\n",
    )
    .unwrap();
    let c = build(
        r"format: tsv
file: pairs.tsv
layout: {id: uid, text: sent, label: cls, split: part, doc_id_pattern: '^(D\d+)\.'}
labels: [no, yes]
negative: no",
        dir.path(),
    )
    .unwrap();
    let i = &rel(&c)[0];
    assert_eq!(
        (
            i.id.as_str(),
            i.doc_id.as_deref(),
            i.split.as_deref(),
            i.label.as_str()
        ),
        ("D1.s1.p1", Some("D1"), Some("train"), "yes")
    );
    assert_eq!(
        c.stats().counts,
        counts(&[
            ("train", &[("no", 1), ("yes", 1)]),
            ("test", &[("no", 1), ("yes", 0)])
        ])
    );

    std::fs::write(
        dir.path().join("data.json"),
        r#"{"data": [{"s": "IL-2 activates IL-2R.", "y": 1, "a": [0, 4], "b": [15, 20], "doc": "p1"},
                     {"s": "IL-2 receptor", "y": 0, "a": [0, 4], "b": [0, 13], "doc": "p2"}]}"#,
    )
    .unwrap();
    let j = build(
        "format: json
file: data.json
layout: {records: data, text: s, label: y, doc_id: doc}
entities: {style: spans, e1: a, e2: b}
tag: '@PROTEIN$'
label2id: {neg: 0, pos: 1}
negative: neg",
        dir.path(),
    )
    .unwrap();
    let texts: Vec<&str> = rel(&j).iter().map(|i| i.text.as_str()).collect();
    assert_eq!(
        texts,
        ["@PROTEIN$ activates @PROTEIN$.", "@PROTEIN-PROTEIN$"]
    );
    let labels: Vec<&str> = rel(&j).iter().map(|i| i.label.as_str()).collect();
    assert_eq!(labels, ["pos", "neg"]);
    assert_eq!(rel(&j)[1].id, "all-2");
}

#[test]
fn max_instances_keeps_the_first_n_of_each_split() {
    let c = build(
        &format!("{CHEMPROT}\nmax_instances: 5"),
        &fixtures("chemprot"),
    )
    .unwrap();
    let full = build(CHEMPROT, &fixtures("chemprot")).unwrap();
    for split in ["train", "dev", "test"] {
        let a: Vec<&Instance> = rel(&c)
            .iter()
            .filter(|i| i.split.as_deref() == Some(split))
            .collect();
        let b: Vec<&Instance> = rel(&full)
            .iter()
            .filter(|i| i.split.as_deref() == Some(split))
            .take(5)
            .collect();
        assert_eq!(a, b);
    }
}

#[test]
fn plan_time_checks_name_the_param() {
    let bad = |yaml: &str| spec(yaml).check().unwrap_err().to_string();
    assert!(bad("format: blurb_tsv\nfiles: {train: a.tsv}").contains("param `label2id`"));
    assert!(
        bad("format: tsv\nfiles: {train: ../a.tsv}\nlayout: {text: 0, label: 1}")
            .contains("inside the input directory")
    );
    assert!(bad("format: conll\nfiles: {validation: a.tsv}").contains("unknown split `validation`"));
    assert!(bad("format: tsv\nfiles: {train: a.tsv}").contains("layout.text"));
    assert!(
        bad("format: aimed_tsv\nfile: a.tsv\nlabels: [a, b]\nnegative: c")
            .contains("param `negative`")
    );
    let unknown = |yaml: &str| {
        serde_yaml::from_str::<CorpusSpec>(yaml)
            .unwrap_err()
            .to_string()
    };
    assert!(unknown("format: conll\nfiles: {train: a}\nlabelz: [x]").contains("labelz"));
    assert!(unknown("format: tsv\nfile: a\nlayout: {txt: 0}").contains("txt"));
    assert!(
        unknown("format: jsonl\nfile: a\nentities: {style: spans, e1: a, e2: b, tag3: x}")
            .contains("tag3")
    );
    assert!(unknown("format: jsonl\nfile: a\nentities: {style: boxes}").contains("boxes"));
    let split_bad = |yaml: &str| {
        serde_yaml::from_str::<SplitSpec>(yaml)
            .unwrap()
            .check()
            .unwrap_err()
            .to_string()
    };
    assert!(split_bad("method: kfold").contains("param `k`"));
    assert!(split_bad("{method: standard, dev_fraction: 1.5}").contains("dev_fraction"));
}

const BIOSSES: &str = "format: pair_tsv
files: {train: blurb/train_blurb.tsv, dev: blurb/dev_blurb.tsv, test: blurb/test_blurb.tsv}
layout: {header: false, text: 0, score: 1, strip_prefix: 's1: ', pair_separator: ' s2: '}";

#[test]
fn biosses_pairs_and_their_split() {
    let c = build(BIOSSES, &fixtures("biosses")).unwrap();
    let Units::Similarity(pairs) = &c.units else {
        panic!("expected pairs")
    };
    assert_eq!(pairs.len(), 24 + 8 + 8);
    assert_eq!(c.labels.task, super::Task::Similarity);
    assert!(c.labels.labels.is_empty());
    let first = &pairs[0];
    assert_eq!(first.id, "train-1");
    assert_eq!(
        first.text_b,
        "Not surprisingly, GATA2 knockdown in KRAS mutant cells resulted in a striking \
         reduction of active GTP-bound RHO proteins, including the downstream ROCK kinase"
    );
    assert!(first
        .text_a
        .starts_with("Here, looking for agents that could specifically kill KRAS"));
    assert_eq!(first.score, 2.2);
    assert_eq!(c.stats().total("dev"), 8);
    // the pre-split files map to train/dev/test as every shipped split does
    let root = tempfile::tempdir().unwrap();
    c.write(&root.path().join("corpus")).unwrap();
    let spec: SplitSpec = serde_yaml::from_str("method: standard").unwrap();
    let (stats, _) = split::split_dir(
        &root.path().join("corpus"),
        &spec,
        &root.path().join("split"),
    )
    .unwrap();
    assert_eq!(
        (
            stats.total("train"),
            stats.total("dev"),
            stats.total("test")
        ),
        (24, 8, 8)
    );
    // and k-fold over the pairs (no document ids: instance-level on request)
    let kfold: SplitSpec =
        serde_yaml::from_str("{method: kfold, k: 4, seed: 1, allow_instance_level: true}").unwrap();
    let (stats, _) = split::split_dir(
        &root.path().join("corpus"),
        &kfold,
        &root.path().join("folds"),
    )
    .unwrap();
    let tests: u64 = (0..4).map(|k| stats.total(&format!("fold-{k}/test"))).sum();
    assert_eq!(tests, 40);
}

#[test]
fn a_score_that_is_not_a_number_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("blurb")).unwrap();
    for f in ["train", "dev", "test"] {
        std::fs::write(
            dir.path().join(format!("blurb/{f}_blurb.tsv")),
            "s1: A b. s2: C d.\t1.5\ns1: E f. s2: G h.\tn/a\n",
        )
        .unwrap();
    }
    let err = build(BIOSSES, dir.path()).unwrap_err().to_string();
    assert_eq!(err, "blurb/train_blurb.tsv:2: score `n/a` is not a number");
    let no_separator = BIOSSES.replace("' s2: '", "' S2: '");
    let err = build(&no_separator, dir.path()).unwrap_err().to_string();
    assert!(
        err.starts_with("blurb/train_blurb.tsv:1: no ` S2: `"),
        "{err}"
    );
    // both ways of finding the second sentence, or neither: refused at plan time
    let both = BIOSSES.replace("score: 1,", "score: 1, text_b: 2,");
    assert!(spec(&both).check().is_err());
}

const HOC: &str = "format: multilabel_tsv
files: {train: blurb/train_blurb.tsv, dev: blurb/dev_blurb.tsv, test: blurb/test_blurb.tsv}
layout: {header: false, text: 0, label: 1, label_separator: '|', empty_label: '10'}
label2id: {a0: 0, a1: 1, a2: 2, a3: 3, a4: 4, a5: 5, a6: 6, a7: 7, a8: 8, a9: 9}";

#[test]
fn hoc_documents_with_label_sets() {
    let c = build(HOC, &fixtures("hoc")).unwrap();
    let Units::Multilabel(docs) = &c.units else {
        panic!("expected documents")
    };
    assert_eq!(c.labels.labels.len(), 10);
    assert_eq!(c.labels.labels[0], "a0");
    // train lines 1-3: `10`, `1|7`, `6`
    assert!(docs[0].labels.is_empty());
    assert_eq!(docs[1].labels, ["a1", "a7"]);
    assert_eq!(docs[2].labels, ["a6"]);
    let stats = c.stats();
    // documents counted apart from the labels they carry (train: 24 documents, 4 of them `10`)
    assert_eq!(stats.total("train"), 24);
    assert_eq!(stats.counts["train"]["a7"], 7);
    assert_eq!(stats.counts["test"]["a0"], 3);
    let unknown = HOC.replace("a9: 9", "a9: 11");
    let err = build(&unknown, &fixtures("hoc")).unwrap_err().to_string();
    assert!(
        err.contains("blurb/train_blurb.tsv:") && err.contains("label id `9` is not in label2id"),
        "{err}"
    );
}

#[test]
fn layout_fields_added_later_stay_out_of_the_key_while_unset() {
    // corpora cached before `pair_tsv` / `multilabel_tsv` existed keep their keys
    let layout = serde_json::to_value(crate::data::corpus_spec::Layout::default()).unwrap();
    for added in [
        "text_b",
        "pair_separator",
        "strip_prefix",
        "score",
        "label_separator",
        "empty_label",
    ] {
        assert!(layout.get(added).is_none(), "{added} in {layout}");
    }
    assert!(layout.get("text").is_some(), "{layout}");
}
