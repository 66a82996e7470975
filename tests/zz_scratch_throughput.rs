//! TEMPORARY scratch measurement (not to be committed): MiniLM fine-tuning throughput.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use pipe::stages::finetune::{FinetuneParams, FinetuneStage};
use pipe::stages::{InputArtifact, Inputs, Progress, Stage, StageCtx};

fn artifact(path: &Path) -> InputArtifact {
    InputArtifact { stage: "x".into(), key: "0".into(), coords: BTreeMap::new(), path: path.to_path_buf() }
}

#[test]
fn minilm_throughput() {
    let model = std::env::var("PIPE_TEST_MODEL_DIR").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ids = ["false", "CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9"];
    for (split, n) in [("train", 640usize), ("test", 320)] {
        let text = std::fs::read_to_string(format!("../shared/data/chemprot/blurb/{split}_blurb.tsv")).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().step_by(7).take(n).enumerate() {
            let (t, l) = line.split_once('\t').unwrap();
            out += &serde_json::json!({"id": format!("{split}-{i}"), "text": t, "label": ids[l.parse::<usize>().unwrap()]}).to_string();
            out += "\n";
        }
        std::fs::write(data.join(format!("{split}.jsonl")), out).unwrap();
    }
    std::fs::write(data.join("labels.json"), serde_json::json!({"task":"relation","labels":ids,"negative":"false"}).to_string()).unwrap();
    let heads: Vec<String> = std::env::var("HEADS").unwrap_or("cls".into()).split(',').map(String::from).collect();
    for head in heads {
        let root = tmp.path().join(&head);
        for d in ["out", "scratch", "ck"] { std::fs::create_dir_all(root.join(d)).unwrap(); }
        let params: FinetuneParams = serde_json::from_value(serde_json::json!({"head": head, "epochs": 1, "max_train": std::env::var("NTRAIN").map(|v| v.parse::<usize>().unwrap()).unwrap_or(320)})).unwrap();
        let mut inputs = Inputs::default();
        inputs.by_name.insert("data".into(), vec![artifact(&data)]);
        inputs.by_name.insert("model".into(), vec![artifact(Path::new(&model))]);
        let mut ctx = StageCtx { name: head.clone(), key: "k".into(), coords: BTreeMap::new(), inputs, out_dir: root.join("out"), scratch: root.join("scratch"), checkpoint_dir: root.join("ck"), progress: Progress::hidden(), device: "cpu".into(), cancel: Arc::new(AtomicBool::new(false)) };
        let t = std::time::Instant::now();
        FinetuneStage::run(&mut ctx, &params).unwrap();
        let h = std::fs::read_to_string(root.join("out/history.json")).unwrap();
        println!("HEAD {head}: total {:.1}s history {h}", t.elapsed().as_secs_f64());
    }
}
