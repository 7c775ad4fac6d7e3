//! Bytes that rot in the bucket are never served: each kind of object ikv writes, damaged on
//! a local-directory store as a new user found it, is refused with a `Corrupt` error naming
//! the object, by the reader (running or opening) and by the compactor, which never carries
//! it into a snapshot.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ikv_core::bucket::create_store;
use ikv_core::{Document, ErrorKind, FieldValue, Storage, StorageOptions, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::runtime;
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStoreExt;

struct Fixture {
    dir: tempfile::TempDir,
    url: String,
    storage: Storage,
    config: StoreConfig,
    writer: Writer,
    rt: tokio::runtime::Runtime,
}

fn s(v: &str) -> FieldValue {
    FieldValue::String(v.into())
}

/// Store "rot" (one partition) on `storage` with 200 documents written, and its writer.
fn seeded_store(rt: &tokio::runtime::Runtime, storage: &Storage) -> (StoreConfig, Writer) {
    let config = StoreConfig::new("rot", "id", None, 1).unwrap();
    rt.block_on(create_store(storage, &config)).unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "rot",
            WriterOptions::default(),
        ))
        .unwrap();
    let ops: Vec<ikv_core::Operation> = (0..200)
        .map(|i| {
            ikv_core::Operation::UpsertFields(
                Document::new()
                    .with("id", s(&format!("k{i:03}")))
                    .with("v", s(&format!("value-{i:03}-{}", "x".repeat(40)))),
            )
        })
        .collect();
    rt.block_on(writer.write(&ops)).unwrap();
    (config, writer)
}

/// A one-partition store on a local directory with 200 documents and a snapshot of them.
fn fixture() -> Fixture {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
    let (config, writer) = seeded_store(&rt, &storage);
    let f = Fixture {
        dir,
        url,
        storage,
        config,
        writer,
        rt,
    };
    f.snapshot().unwrap();
    f
}

impl Fixture {
    fn bucket(&self) -> PathBuf {
        self.dir.path().join("bucket/rot")
    }

    fn snapshot(&self) -> ikv_core::Result<()> {
        self.rt
            // A full pass, which reads the snapshot it rewrites (a layer pass reads none of
            // it: tests/tests/snapshot_layers.rs).
            .block_on(ikv_tests::force_full_snapshot(
                &self.storage,
                &self.config,
                0,
            ))
            .map(|_| ())
    }

    fn options(&self, mount: &str) -> ReaderOptions {
        let mut o = ReaderOptions::new(&self.url, "rot", self.dir.path().join(mount));
        o.poll_interval = Duration::from_millis(10);
        o
    }
}

/// Files under `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Flips `n` bytes in the middle of a file, as the "16 bytes flipped" did.
fn flip(path: &Path, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() / 2;
    let end = (at + n).min(bytes.len());
    for b in &mut bytes[at..end] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

fn assert_corrupt_naming(err: &ikv_core::Error, name: &str) {
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(name), "{name} not named in: {err}");
}

#[test]
fn a_damaged_snapshot_file_is_refused_by_reader_and_compactor_never_served() {
    let f = fixture();
    let parquet = files(&f.bucket(), ".parquet");
    assert_eq!(parquet.len(), 1);
    flip(&parquet[0], 16);
    let name = parquet[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let err = Reader::open(f.options("m1")).unwrap_err();
    assert_corrupt_naming(&err, &name);
    assert!(err.to_string().contains("checksum"), "{err}");
    // The compactor does not fold it into a new snapshot either.
    f.rt.block_on(
        f.writer
            .upsert_fields(Document::new().with("id", s("new")).with("v", s("1"))),
    )
    .unwrap();
    let err = f.snapshot().unwrap_err();
    assert_corrupt_naming(&err, &name);
    assert_eq!(
        files(&f.bucket(), "manifest.json").len(),
        1,
        "no snapshot built on it"
    );
}

#[test]
fn a_damaged_delta_is_never_applied_and_the_reader_keeps_serving_and_says_which() {
    let f = fixture();
    let reader = Reader::open(f.options("m1")).unwrap();
    f.rt.block_on(
        f.writer.upsert_fields(
            Document::new()
                .with("id", s("k001"))
                .with("v", s("renamed?")),
        ),
    )
    .unwrap();
    // Damage the new delta before the running reader fetches it: key bytes changed, as the
    // issue did, which used to rename a document silently.
    let deltas = files(&f.bucket(), ".arrow");
    let newest = deltas.last().unwrap().clone();
    // (The reader may have applied it already; only a damaged copy read later matters, so
    // the check below uses a fresh reader too.)
    flip(&newest, 4);
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    let fresh = Reader::open(f.options("m2"));
    match fresh {
        Err(e) => assert_corrupt_naming(&e, &name),
        Ok(r) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            while r.status()[0].last_error.is_none() {
                assert!(Instant::now() < deadline, "{:?}", r.status());
                std::thread::sleep(Duration::from_millis(10));
            }
            let error = r.status()[0].last_error.clone().unwrap_or_default();
            assert!(
                error.contains(&name) && error.contains("checksum"),
                "{error}"
            );
            // The state before the damaged delta, never the damaged bytes.
            assert_eq!(
                r.get(b"k001", "v").unwrap(),
                Some(s(&format!("value-001-{}", "x".repeat(40))))
            );
        }
    }
    let err = f.snapshot().unwrap_err();
    assert_corrupt_naming(&err, &name);
    drop(reader);
}

#[test]
fn a_damaged_manifest_or_store_configuration_is_refused_naming_it() {
    let f = fixture();
    let manifest = files(&f.bucket(), "manifest.json").pop().unwrap();
    let original = std::fs::read(&manifest).unwrap();
    // A change that keeps valid JSON: only the checksum can tell.
    let text = String::from_utf8(original.clone()).unwrap();
    let changed = text.replacen("\"row_count\": 200", "\"row_count\": 201", 1);
    assert_ne!(changed, text, "the manifest holds its row count");
    std::fs::write(&manifest, changed).unwrap();
    let err = Reader::open(f.options("m1")).unwrap_err();
    assert_corrupt_naming(&err, "manifest.json");
    let err = f.snapshot().unwrap_err();
    assert_corrupt_naming(&err, "manifest.json");
    std::fs::write(&manifest, original).unwrap();

    let store_json = f.bucket().join("store.json");
    let text = std::fs::read_to_string(&store_json).unwrap();
    std::fs::write(&store_json, text.replacen("\"id\"", "\"ie\"", 1)).unwrap();
    let err = Reader::open(f.options("m3")).unwrap_err();
    assert_corrupt_naming(&err, "store.json");
    let err =
        f.rt.block_on(Writer::open(
            f.storage.clone(),
            "rot",
            WriterOptions::default(),
        ))
        .unwrap_err();
    assert_corrupt_naming(&err, "store.json");
}

/// The same on the S3 emulator: objects rewritten in the bucket with damaged bytes (a delta,
/// a snapshot file, a manifest) are refused by a new reader and by the compactor, naming them.
#[test]
fn localstack_damaged_objects_are_refused_naming_them() {
    let rt = runtime();
    let storage = rt.block_on(ikv_tests::localstack_storage(false));
    let (config, writer) = seeded_store(&rt, &storage);
    let snapshot = || rt.block_on(ikv_tests::force_full_snapshot(&storage, &config, 0));
    snapshot().unwrap();
    rt.block_on(writer.upsert_fields(Document::new().with("id", s("k001")).with("v", s("new"))))
        .unwrap();
    let all = rt.block_on(ikv_tests::bucket_contents(&storage));
    let mount = tempfile::tempdir().unwrap();
    let url = storage.url.clone();
    let open = |mount_name: &str| {
        let mut o = ReaderOptions::new(&url, "rot", mount.path().join(mount_name));
        o.storage = Some(storage.clone());
        Reader::open(o)
    };
    let damage = |suffix: &str| -> String {
        let (path, bytes) = all
            .iter()
            .rfind(|(p, _)| p.ends_with(suffix))
            .expect("the object exists");
        let mut bad = bytes.to_vec();
        let at = bad.len() / 2;
        bad[at] ^= 0x01;
        rt.block_on(
            storage
                .object_store()
                .put(&path.as_str().into(), bad.into()),
        )
        .unwrap();
        path.clone()
    };
    let restore = |path: &str| {
        rt.block_on(
            storage
                .object_store()
                .put(&path.into(), all[path].clone().into()),
        )
        .unwrap();
    };
    for (i, suffix) in [".arrow", ".parquet", "manifest.json"].iter().enumerate() {
        let path = damage(suffix);
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        let err = open(&format!("m{i}")).unwrap_err();
        assert_corrupt_naming(&err, &name);
        let err = snapshot().unwrap_err();
        assert_corrupt_naming(&err, &name);
        restore(&path);
    }
    let reader = open("intact").expect("opens once the objects are intact");
    assert_eq!(reader.get(b"k001", "v").unwrap(), Some(s("new")));
}

/// Flips bytes in place (a mapped file must not be truncated under its readers).
fn flip_in_place(path: &Path, range: std::ops::Range<u64>) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut bytes = vec![0u8; (range.end - range.start) as usize];
    file.read_exact_at(&mut bytes, range.start).unwrap();
    for b in &mut bytes {
        *b ^= 0xff;
    }
    file.write_all_at(&bytes, range.start).unwrap();
}

/// Reads all 200 documents until every read answers right after at least one failed; a
/// failed read must say the copy is being rebuilt, and no read may return a wrong value.
fn assert_recovers(reader: &Reader) {
    let expected = |i: usize| Some(s(&format!("value-{i:03}-{}", "x".repeat(40))));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failures = 0;
    loop {
        let mut all_ok = true;
        for i in 0..200 {
            match reader.get(format!("k{i:03}").as_bytes(), "v") {
                Ok(v) => assert_eq!(v, expected(i), "a damaged entry was served"),
                Err(e) => {
                    assert!(e.to_string().contains("rebuilding"), "{e}");
                    failures += 1;
                    all_ok = false;
                }
            }
        }
        if all_ok && failures > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered ({failures} failed reads)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mapped read image damaged under a running reader: reads of a damaged entry fail
/// (never serve it) and say the copy is being rebuilt; the image is the only local home of
/// its values (rfcs/0010), so the owner's fold from it fails on the damage and the owner
/// rebuilds from the bucket. Then the image and the durable state's table files both
/// damaged: rebuilt from the bucket again. Every read then answers as before.
#[test]
fn a_damaged_local_copy_is_rebuilt_while_running() {
    let f = fixture();
    let reader = Reader::open(f.options("m")).unwrap();
    let store_dir = f.dir.path().join("m/rot");
    // The newest image: the one published (an old one may linger until it is deleted, just
    // after the new one is published).
    let image = || -> PathBuf {
        files(&store_dir, "")
            .into_iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("image-") && !name.ends_with(".tmp")
            })
            .max()
            .expect("a read image")
    };
    // Entries start after the 64-byte header; damage the first half of them.
    let damage_image = |path: &Path| {
        let len = std::fs::metadata(path).unwrap().len();
        flip_in_place(path, 64..len / 3);
    };
    let first = image();
    damage_image(&first);
    assert_recovers(&reader);
    assert_ne!(image(), first, "a new image replaced the damaged one");

    let tables: Vec<PathBuf> = files(&store_dir.join("db"), "")
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "tables"))
        .collect();
    assert!(!tables.is_empty(), "fjall wrote table files");
    for t in &tables {
        let len = std::fs::metadata(t).unwrap().len();
        flip_in_place(t, 64.min(len)..(len / 2).min(64 << 10).max(64.min(len)));
    }
    damage_image(&image());
    assert_recovers(&reader);
}

/// A snapshot's manifest and the deltas below it deleted: what is left (later deltas) cannot
/// be read without what is gone. A new reader reports the gap at the first missing delta and
/// never claims to be caught up (it used to read the partition as empty, silently).
#[test]
fn a_deleted_snapshot_and_the_deltas_below_it_show_as_a_gap_not_an_empty_store() {
    let f = fixture(); // delta 1 (200 documents) and a snapshot at 1
    for i in 0..3 {
        f.rt.block_on(
            f.writer.upsert_fields(
                Document::new()
                    .with("id", s(&format!("later{i}")))
                    .with("v", s("x")),
            ),
        )
        .unwrap();
    }
    for manifest in files(&f.bucket(), "manifest.json") {
        std::fs::remove_file(manifest).unwrap();
    }
    let first = files(&f.bucket(), ".arrow")
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("00000000000000000001"))
        })
        .expect("delta 1");
    std::fs::remove_file(first).unwrap();

    let mut options = f.options("m");
    options.gap_check_interval = Duration::from_millis(10);
    let reader = Reader::open(options).unwrap();
    let status = &reader.status()[0];
    assert_eq!(status.gap, Some(1), "{status:?}");
    assert_eq!(status.caught_up_at, None, "never caught up across the hole");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("delta 1")),
        "{status:?}"
    );
    assert_eq!(
        status.applied_sequence, 0,
        "nothing past the hole is applied"
    );
}

/// The base image is the only local home of the values it holds (rfcs/0010): removed while no
/// process runs (an operator, a cleaner), the next owner finds its durable state without a
/// base and rebuilds from the bucket, with the changes made since the snapshot; it never
/// serves an empty or partial store. The same with fjall's database removed instead.
#[test]
fn a_removed_base_image_or_tail_is_rebuilt_from_the_bucket_never_served_partly() {
    let f = fixture();
    let store_dir = f.dir.path().join("m/rot");
    let expected = |i: usize| {
        Some(s(&match i {
            1 => "changed after the snapshot".to_owned(),
            _ => format!("value-{i:03}-{}", "x".repeat(40)),
        }))
    };
    let reader = Reader::open(f.options("m")).unwrap();
    f.rt.block_on(
        f.writer.upsert_fields(
            Document::new()
                .with("id", s("k001"))
                .with("v", s("changed after the snapshot")),
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.get(b"k001", "v").unwrap() != expected(1) {
        assert!(Instant::now() < deadline, "the change was never applied");
        std::thread::sleep(Duration::from_millis(10));
    }
    reader.shutdown().unwrap();
    for removed in ["image-", "db"] {
        for entry in std::fs::read_dir(&store_dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(removed) {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).unwrap();
                } else {
                    std::fs::remove_file(&path).unwrap();
                }
            }
        }
        let reader = Reader::open(f.options("m")).unwrap();
        assert!(reader.owns_mount());
        for i in 0..200 {
            let got = reader.get(format!("k{i:03}").as_bytes(), "v").unwrap();
            assert_eq!(got, expected(i), "k{i:03} after {removed}* was removed");
        }
        reader.shutdown().unwrap();
    }
}
