//! Source tests on real bytes: pins, mirrors, downloads from a loopback HTTP server,
//! wheels, and archives built here with hostile entries.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use indicatif::ProgressBar;

use super::unpack::{unpack, ArchiveKind};
use super::*;

fn env<'a>(
    mirrors: &'a Mirrors,
    scratch: &'a Path,
    bar: &'a ProgressBar,
    cancel: &'a AtomicBool,
) -> FetchEnv<'a> {
    FetchEnv {
        mirrors,
        scratch,
        progress: bar,
        cancel,
    }
}

fn hash_of(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Serves `files` (path → bytes) over HTTP on 127.0.0.1 for up to `requests` requests.
fn serve(files: HashMap<String, Vec<u8>>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let (status, body) = match files.get(&path) {
                Some(b) => ("200 OK", b.clone()),
                None => ("404 Not Found", b"not here".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn zip_file(path: &Path, files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    for (name, data) in files {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    for (name, target) in symlinks {
        z.add_symlink(*name, *target, opts).unwrap();
    }
    z.finish().unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    tree_hash::files_below(dir)
        .unwrap()
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

#[test]
fn path_source_pin_match_and_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("corpus.tsv");
    std::fs::write(&file, "a sentence\t0\n").unwrap();
    let src: Source = format!("path:{}", file.display()).parse().unwrap();
    let (m, bar, cancel) = (
        Mirrors::default(),
        ProgressBar::hidden(),
        AtomicBool::new(false),
    );
    let right = hash_of(b"a sentence\t0\n");
    let ok = fetch(&src, Some(&right), &env(&m, d.path(), &bar, &cancel)).unwrap();
    assert_eq!(ok.hash, right);
    let wrong = "0".repeat(64);
    let err = fetch(&src, Some(&wrong), &env(&m, d.path(), &bar, &cancel))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "blake3 mismatch for {src}: expected {wrong}, actual {right} (nothing was written)"
        )
    );
}

#[test]
fn fingerprint_follows_local_content_and_skips_remote_sources() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("c")).unwrap();
    std::fs::write(d.path().join("c/train.tsv"), "x\t0\n").unwrap();
    let source = format!("path:{}", d.path().join("c").display());
    let before = fingerprint(&source).unwrap().unwrap();
    assert_eq!(before, tree_hash::dir_hash(&d.path().join("c")).unwrap());
    std::fs::write(d.path().join("c/train.tsv"), "x\t1\n").unwrap();
    assert_ne!(fingerprint(&source).unwrap().unwrap(), before);
    assert_eq!(fingerprint("https://example.org/a.zip").unwrap(), None);
    assert_eq!(fingerprint("pip:a==1#b").unwrap(), None);
    assert!(fingerprint(&format!("path:{}/missing", d.path().display())).is_err());
}

#[test]
fn mirrors_are_searched_first_by_name_and_verified_by_pin() {
    let d = tempfile::tempdir().unwrap();
    let (stale, good) = (d.path().join("stale"), d.path().join("good"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(stale.join("DDICorpus-2013.zip"), b"old bytes").unwrap();
    std::fs::write(good.join("DDICorpus-2013.zip"), b"right bytes").unwrap();
    let mirrors = Mirrors::parse(&format!("{}:{}", stale.display(), good.display()));
    // Port 1 on loopback refuses connections: the network is never the answer here.
    let src: Source = "http://127.0.0.1:1/x/DDICorpus-2013.zip".parse().unwrap();
    let (bar, cancel) = (ProgressBar::hidden(), AtomicBool::new(false));
    let scratch = d.path().join("scratch");

    let unpinned = fetch(&src, None, &env(&mirrors, &scratch, &bar, &cancel)).unwrap();
    assert_eq!(unpinned.path, stale.join("DDICorpus-2013.zip"));

    let pin = hash_of(b"right bytes");
    let pinned = fetch(&src, Some(&pin), &env(&mirrors, &scratch, &bar, &cancel)).unwrap();
    assert_eq!(pinned.path, good.join("DDICorpus-2013.zip"));
    assert!(
        pinned
            .notes
            .iter()
            .any(|n| n.contains("stale") && n.contains("skipped")),
        "{:?}",
        pinned.notes
    );

    let absent = hash_of(b"bytes no mirror has");
    let err = fetch(&src, Some(&absent), &env(&mirrors, &scratch, &bar, &cancel)).unwrap_err();
    assert!(matches!(err, SourceError::Http { .. }), "{err}");
}

#[test]
fn download_verifies_the_pin_and_unpacks_tar_gz() {
    let archive = tar_gz(&[
        ("corpus/train.tsv", b"s1\t0\n"),
        ("corpus/test.tsv", b"s2\t1\n"),
    ]);
    let pin = hash_of(&archive);
    let base = serve([("/files/corpus.tar.gz".to_string(), archive)].into(), 3);
    let d = tempfile::tempdir().unwrap();
    let (m, bar, cancel) = (
        Mirrors::default(),
        ProgressBar::hidden(),
        AtomicBool::new(false),
    );
    let src: Source = format!("{base}/files/corpus.tar.gz").parse().unwrap();

    let got = fetch(
        &src,
        Some(&pin),
        &env(&m, &d.path().join("s1"), &bar, &cancel),
    )
    .unwrap();
    assert_eq!(bar.position(), std::fs::metadata(&got.path).unwrap().len());
    let out = d.path().join("out");
    place(
        &got,
        &Placement {
            unpack: None,
            subpath: Some("corpus"),
            ..Placement::default()
        },
        &out,
        &d.path().join("s1"),
    )
    .unwrap();
    assert_eq!(listing(&out), ["test.tsv", "train.tsv"]);
    assert_eq!(
        std::fs::read_to_string(out.join("train.tsv")).unwrap(),
        "s1\t0\n"
    );

    let wrong = "f".repeat(64);
    let err = fetch(
        &src,
        Some(&wrong),
        &env(&m, &d.path().join("s2"), &bar, &cancel),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("expected {wrong}, actual {pin}")),
        "{err}"
    );

    let missing: Source = format!("{base}/files/none.zip").parse().unwrap();
    let err = fetch(
        &missing,
        None,
        &env(&m, &d.path().join("s3"), &bar, &cancel),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("404"), "{err}");
}

#[test]
fn hf_files_are_fetched_from_resolve_urls() {
    let base = serve(
        [
            (
                "/org/tiny-bert/resolve/v1/config.json".to_string(),
                b"{\"hidden_size\": 4}".to_vec(),
            ),
            (
                "/org/tiny-bert/resolve/v1/sub/vocab.txt".to_string(),
                b"[PAD]\n".to_vec(),
            ),
        ]
        .into(),
        2,
    );
    // Only this test reads HF_ENDPOINT.
    std::env::set_var(hf::ENDPOINT_ENV, &base);
    let d = tempfile::tempdir().unwrap();
    let (m, bar, cancel) = (
        Mirrors::default(),
        ProgressBar::hidden(),
        AtomicBool::new(false),
    );
    let src: Source = "hf:org/tiny-bert@v1#config.json,sub/vocab.txt"
        .parse()
        .unwrap();
    let got = fetch(&src, None, &env(&m, d.path(), &bar, &cancel)).unwrap();
    std::env::remove_var(hf::ENDPOINT_ENV);
    assert_eq!(got.hash, tree_hash::dir_hash(&got.path).unwrap());
    let out = d.path().join("out");
    place(&got, &Placement::default(), &out, d.path()).unwrap();
    assert_eq!(listing(&out), ["config.json", "sub/vocab.txt"]);
}

#[test]
fn pip_wheel_from_a_mirror_is_unpacked_and_the_package_path_taken() {
    let d = tempfile::tempdir().unwrap();
    let mirror = d.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    let wheel = mirror.join("demo_pkg-1.2.0-py3-none-any.whl");
    zip_file(
        &wheel,
        &[
            ("demo_pkg/__init__.py", b""),
            ("demo_pkg/model/config.json", b"{}"),
            ("demo_pkg/model/tokenizer.json", b"{\"v\": 1}"),
            ("demo_pkg-1.2.0.dist-info/METADATA", b"Name: demo-pkg\n"),
        ],
        &[],
    );
    let pin = tree_hash::file_hash(&wheel).unwrap();
    let mirrors = Mirrors::parse(&mirror.display().to_string());
    let (bar, cancel) = (ProgressBar::hidden(), AtomicBool::new(false));
    let src: Source = "pip:demo-pkg==1.2.0#demo_pkg/model".parse().unwrap();
    let got = fetch(
        &src,
        Some(&pin),
        &env(&mirrors, &d.path().join("s"), &bar, &cancel),
    )
    .unwrap();
    assert_eq!(got.path, wheel);
    let out = d.path().join("out");
    place(&got, &Placement::default(), &out, &d.path().join("s")).unwrap();
    assert_eq!(listing(&out), ["config.json", "tokenizer.json"]);
    // Asking to keep the wheel packed contradicts the path inside it.
    let err = place(
        &got,
        &Placement {
            unpack: Some(false),
            ..Placement::default()
        },
        &d.path().join("o2"),
        &d.path().join("s"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs it unpacked"));
}

fn refused(archive: &Path, kind: ArchiveKind) -> (String, PathBuf) {
    let target = archive.parent().unwrap().join("target");
    let err = unpack(archive, kind, &target).unwrap_err();
    assert!(matches!(err, SourceError::UnsafeEntry { .. }), "{err}");
    (err.to_string(), target)
}

#[test]
fn zip_slip_entries_are_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("a");
    std::fs::create_dir_all(&root).unwrap();
    let zip = root.join("evil.zip");
    zip_file(&zip, &[("ok.txt", b"fine"), ("../evil.txt", b"pwned")], &[]);
    let (msg, target) = refused(&zip, ArchiveKind::Zip);
    assert_eq!(
        msg,
        format!(
            "{}: refusing entry `../evil.txt`: `..` would escape the target directory",
            zip.display()
        )
    );
    assert!(!d.path().join("evil.txt").exists() && !target.exists());

    zip_file(&zip, &[("/tmp/abs.txt", b"x")], &[]);
    assert!(refused(&zip, ArchiveKind::Zip).0.contains("absolute path"));

    zip_file(&zip, &[("ok.txt", b"fine")], &[("link", "../../etc")]);
    assert!(refused(&zip, ArchiveKind::Zip)
        .0
        .contains("symlink to `../../etc` points outside"));

    zip_file(
        &zip,
        &[("s/f.txt", b"through the link")],
        &[("s", "inside")],
    );
    assert!(refused(&zip, ArchiveKind::Zip)
        .0
        .contains("which the archive makes a symlink"));

    // A symlink that stays inside is kept.
    zip_file(&zip, &[("data/f.txt", b"x")], &[("alias", "data/f.txt")]);
    let target = root.join("ok");
    unpack(&zip, ArchiveKind::Zip, &target).unwrap();
    assert_eq!(std::fs::read_to_string(target.join("alias")).unwrap(), "x");
}

#[test]
fn a_chain_of_symlinks_that_leads_outside_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("a");
    std::fs::create_dir_all(&root).unwrap();
    let zip = root.join("chain.zip");
    // each link alone stays inside: x/y is the root, and x/z looks like x
    zip_file(
        &zip,
        &[("x/f.txt", b"x")],
        &[("x/y", ".."), ("x/z", "y/..")],
    );
    let (msg, target) = refused(&zip, ArchiveKind::Zip);
    assert!(
        msg.contains("`x/z`") && msg.contains("points outside"),
        "{msg}"
    );
    assert!(!target.exists(), "nothing written");
}

#[test]
fn an_archive_past_its_limits_is_refused() {
    use super::unpack::{unpack_within, UnpackLimits};
    let d = tempfile::tempdir().unwrap();
    let zip = d.path().join("bomb.zip");
    // 4 MiB of zeros deflate to about 4 KiB (deflate's best is about 1000:1)
    let zeros = vec![0u8; 4 << 20];
    zip_file(&zip, &[("zeros.bin", &zeros)], &[]);
    let archive_size = std::fs::metadata(&zip).unwrap().len();
    assert!(archive_size * 100 < zeros.len() as u64, "{archive_size}");
    let strict = UnpackLimits {
        max_ratio: 100.0,
        ..UnpackLimits::default()
    };
    let target = d.path().join("t1");
    let err = unpack_within(&zip, ArchiveKind::Zip, &target, &strict).unwrap_err();
    assert!(matches!(err, SourceError::UnsafeEntry { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("`zeros.bin`")
            && msg.contains("unpacks to more than")
            && msg.contains("max_ratio"),
        "{msg}"
    );
    // it stopped at the limit: no more than 100 × the archive was written
    let written = std::fs::metadata(target.join("zeros.bin")).unwrap().len();
    assert!(written <= archive_size * 100, "{written}");
    // a limit the stage raises lets it through
    let generous = UnpackLimits {
        max_ratio: 1e6,
        ..UnpackLimits::default()
    };
    let target = d.path().join("ok");
    unpack_within(&zip, ArchiveKind::Zip, &target, &generous).unwrap();
    assert_eq!(
        std::fs::metadata(target.join("zeros.bin")).unwrap().len(),
        4 << 20
    );
    // total bytes and entry count
    let small = UnpackLimits {
        max_bytes: 1000,
        max_ratio: 1e6,
        ..UnpackLimits::default()
    };
    let err = unpack_within(&zip, ArchiveKind::Zip, &d.path().join("t2"), &small).unwrap_err();
    assert!(
        err.to_string().contains("more than 1000 bytes, max_bytes"),
        "{err}"
    );
    zip_file(&zip, &[("a", b"1"), ("b", b"2"), ("c", b"3")], &[]);
    let few = UnpackLimits {
        max_entries: 2,
        ..UnpackLimits::default()
    };
    let err = unpack_within(&zip, ArchiveKind::Zip, &d.path().join("t3"), &few).unwrap_err();
    assert!(
        err.to_string()
            .contains("3 entries, more than the 2 allowed"),
        "{err}"
    );
}

#[test]
fn tar_slip_entries_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let archive = d.path().join("evil.tar.gz");
    // The tar crate refuses to *write* `..`, so set the raw name bytes.
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..12].copy_from_slice(b"../../escape");
    h.set_size(4);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    b.append(&h, &b"evil"[..]).unwrap();
    std::fs::write(&archive, b.into_inner().unwrap().finish().unwrap()).unwrap();
    assert!(refused(&archive, ArchiveKind::TarGz)
        .0
        .contains("`../../escape`"));

    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "passwd", "/etc/passwd").unwrap();
    std::fs::write(&archive, b.into_inner().unwrap().finish().unwrap()).unwrap();
    assert!(refused(&archive, ArchiveKind::TarGz)
        .0
        .contains("symlink to `/etc/passwd` points outside"));
}
