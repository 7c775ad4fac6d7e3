//! One local copy per host: readers of one mount directory in several processes (and several
//! readers in one process) share it. The first owns it (polls the bucket, writes the shared
//! image and overlay); the others attach, make no storage requests, see every write, refuse
//! a mount that serves something else, and take it over when the owner goes.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ikv_core::bucket::{create_store, discover_tip};
use ikv_core::metrics::catalog::*;
use ikv_core::{ErrorKind, Storage, StoreConfig, StoreLayout};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::counting::{CountingStore, CountsOf};
use ikv_tests::fixture::wait_until;
use ikv_tests::model::Model;
use ikv_tests::model_check::{assert_equals_model, write_and_record};
use ikv_tests::random_ops::{PRIMARY_KEY, Workload};
use ikv_tests::runtime;
use ikv_writer::{Writer, WriterOptions};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

const KEYS: usize = 60;

struct Fixture {
    dir: tempfile::TempDir,
    url: String,
    storage: Storage,
    config: StoreConfig,
    rt: tokio::runtime::Runtime,
}

fn fixture(partitions: u32) -> Fixture {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let url = format!("file://{}", bucket.display());
    let storage = Storage::open(&url, &Default::default()).unwrap();
    let config = StoreConfig::new("shared", PRIMARY_KEY, None, partitions).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    Fixture {
        dir,
        url,
        storage,
        config,
        rt,
    }
}

impl Fixture {
    fn options(&self, mount: &str) -> ReaderOptions {
        let mut o = ReaderOptions::new(&self.url, "shared", self.dir.path().join(mount));
        o.poll_interval = Duration::from_millis(10);
        o
    }

    /// Options whose storage requests are counted by `counting`.
    fn counted_options(&self, mount: &str, counting: &Arc<CountingStore>) -> ReaderOptions {
        let mut o = self.options(mount);
        o.storage = Some(Storage::new(
            counting.clone(),
            ObjectPath::from(""),
            self.url.clone(),
        ));
        o
    }

    fn writer(&self) -> Writer {
        self.rt
            .block_on(Writer::open(
                self.storage.clone(),
                "shared",
                WriterOptions::default(),
            ))
            .unwrap()
    }

    fn tips(&self) -> Vec<u64> {
        let layout = StoreLayout::new(&self.storage.prefix, "shared").unwrap();
        (0..self.config.num_partitions)
            .map(|p| {
                self.rt
                    .block_on(discover_tip(&self.storage, &layout, p))
                    .unwrap()
            })
            .collect()
    }

    fn reader_process(&self, mount: &str, partitions: Option<&str>, url: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ikv-test-reader"));
        cmd.args([url, "shared", self.dir.path().join(mount).to_str().unwrap()]);
        if let Some(p) = partitions {
            cmd.arg(p);
        }
        cmd
    }
}

impl Fixture {
    /// `batches` random batches of up to 10 operations, written and recorded in `model`.
    fn write(&self, writer: &Writer, model: &mut Model, work: &mut Workload, batches: usize) {
        for _ in 0..batches {
            let ops = work.batch(10);
            self.rt.block_on(write_and_record(writer, model, &ops));
        }
    }

    /// A forced snapshot of every partition.
    fn snapshot_all(&self) {
        for p in 0..self.config.num_partitions {
            self.rt
                .block_on(ikv_tests::force_snapshot(&self.storage, &self.config, p))
                .unwrap();
        }
    }

    /// A reader process on `mount`, once it has printed `ready` (its role must be `expected`).
    fn ready_process(&self, mount: &str, expected: &str) -> std::process::Child {
        let mut child = self
            .reader_process(mount, None, &self.url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), expected);
        child
    }
}

fn caught_up(reader: &Reader, tips: &[u64]) -> bool {
    reader
        .status()
        .iter()
        .all(|s| s.applied_sequence >= tips[s.partition as usize])
}

/// Names, sizes and modification times of everything under `dir`.
fn listing(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.push((
                e.path().display().to_string(),
                meta.len(),
                meta.modified().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn a_second_process_attaches_and_one_asking_for_something_else_is_refused() {
    let f = fixture(2);
    let owner = Reader::open(f.options("mount")).unwrap();
    assert!(owner.owns_mount());
    let mut attached = f.ready_process("mount", "ready attached");
    attached.kill().unwrap();
    attached.wait().unwrap();

    let before = listing(&f.dir.path().join("mount"));
    let elsewhere = format!("file://{}/elsewhere", f.dir.path().display());
    for (partitions, url, names) in [
        (Some("1"), f.url.as_str(), "partitions [1]"),
        (None, elsewhere.as_str(), "storage root"),
    ] {
        let out = f.reader_process("mount", partitions, url).output().unwrap();
        assert_eq!(out.status.code(), Some(3));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("in use by a reader that serves") && stderr.contains(names),
            "{stderr}"
        );
    }
    // In-process, too.
    let mut other = f.options("mount");
    other.partitions = vec![0];
    let err = Reader::open(other).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MountInUse);
    assert!(err.to_string().contains("partitions [0, 1]"), "{err}");
    assert_eq!(
        listing(&f.dir.path().join("mount")),
        before,
        "a refused reader changed nothing of the mount"
    );
}

/// Four attached readers make no storage request at all while they follow every write; the
/// owner's requests are what one reader's would be.
#[test]
fn attached_readers_make_no_storage_requests_and_see_every_write() {
    let f = fixture(2);
    let inner: Arc<dyn object_store::ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(f.dir.path().join("bucket")).unwrap());
    let owner_counts = Arc::new(CountingStore::new(inner.clone()));
    let attached_counts = Arc::new(CountingStore::new(inner));
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, f.config.num_partitions);
    let mut work = Workload::new(3, KEYS);
    let keys = work.all_keys();
    f.write(&writer, &mut model, &mut work, 10);
    let owner = Reader::open(f.counted_options("mount", &owner_counts)).unwrap();
    let attached: Vec<Reader> = (0..4)
        .map(|_| Reader::open(f.counted_options("mount", &attached_counts)).unwrap())
        .collect();
    assert!(attached.iter().all(|r| !r.owns_mount()));
    f.write(&writer, &mut model, &mut work, 30);
    let tips = f.tips();
    for r in attached.iter().chain([&owner]) {
        wait_until("every reader caught up", || caught_up(r, &tips));
        assert_equals_model(r, &keys, &model.state());
    }
    assert_eq!(
        attached_counts.counts().total(),
        0,
        "attached readers never touch the bucket"
    );
    assert!(owner_counts.counts().total() > 0);

    // Their metrics say so: summed over the host's processes, polls and requests are the
    // owner's alone (nothing counted twice); each process counts its own reads.
    for r in &attached {
        let gets = r.metrics().sum(&READER_GETS, &[]);
        assert!(gets > 0.0, "the model check's reads were counted");
        r.get(&keys[0], "v").unwrap();
        let m = r.metrics();
        assert_eq!(m.value(&READER_OWNS_MOUNT, &[]), Some(0.0));
        assert_eq!(m.sum(&READER_POLLS, &[]), 0.0);
        assert_eq!(m.sum(&READER_DELTAS_APPLIED, &[]), 0.0);
        assert_eq!(m.sum(&STORAGE_REQUESTS, &[]), 0.0);
        assert_eq!(m.sum(&READER_GETS, &[]), gets + 1.0);
    }
    assert_eq!(owner.metrics().value(&READER_OWNS_MOUNT, &[]), Some(1.0));
    // A poll is counted when it ends; the readers see its deltas as it applies them, so the
    // one that applied the last may still be running (a stop would leave it uncounted).
    wait_until("the owner counted a poll", || {
        owner.metrics().sum(&READER_POLLS, &[("outcome", "ok")]) > 0.0
    });
    owner.stop().unwrap();
    let m = owner.metrics();
    assert!(m.sum(&READER_POLLS, &[("outcome", "ok")]) > 0.0);
    // It applied every delta (no snapshot: it bootstrapped from an empty one).
    assert_eq!(
        m.sum(&READER_DELTAS_APPLIED, &[]),
        tips.iter().sum::<u64>() as f64
    );
    let c = owner_counts.counts();
    for (kind, n) in [
        ("get", c.gets),
        ("list", c.lists),
        ("head", c.heads),
        ("put", c.puts),
    ] {
        assert_eq!(
            m.sum(&STORAGE_REQUESTS, &[("kind", kind)]),
            n as f64,
            "{kind} requests: metrics against an independent counter"
        );
    }
}

/// The owner shuts down: an attached reader takes the mount over from the durable copy (no
/// bootstrap: no snapshot is read) and keeps following writes. Then the owner process is
/// killed with SIGKILL mid-stream: the in-process reader takes over again.
#[test]
fn the_owner_leaving_or_killed_hands_the_mount_over_without_a_bootstrap() {
    let f = fixture(2);
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, f.config.num_partitions);
    let mut work = Workload::new(4, KEYS);
    let keys = work.all_keys();
    f.write(&writer, &mut model, &mut work, 10);
    f.snapshot_all();
    let inner: Arc<dyn object_store::ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(f.dir.path().join("bucket")).unwrap());
    let follower_counts = Arc::new(CountingStore::new(inner));
    let owner = Reader::open(f.options("mount")).unwrap();
    let follower = Reader::open(f.counted_options("mount", &follower_counts)).unwrap();
    assert!(!follower.owns_mount());
    let images = || {
        listing(&f.dir.path().join("mount"))
            .into_iter()
            .filter(|(name, _, _)| name.contains("/image-"))
            .collect::<Vec<_>>()
    };
    let published = images();
    assert_eq!(published.len(), 1, "{published:?}");
    owner.shutdown().unwrap();
    wait_until("the follower owns the mount", || follower.owns_mount());
    // Adopted, not rebuilt: the same image file (a bootstrap or a fold writes a new one).
    assert_eq!(images(), published);
    f.write(&writer, &mut model, &mut work, 10);
    let tips = f.tips();
    wait_until("the new owner caught up", || caught_up(&follower, &tips));
    assert_equals_model(&follower, &keys, &model.state());
    assert!(follower_counts.counts().gets > 0, "the new owner polls");
    assert_eq!(images(), published, "still no new image");
    follower.shutdown().unwrap();

    // A separate owner process, killed mid-stream; this process follows and takes over.
    let mut process = f.ready_process("mount", "ready owner");
    let reader = Reader::open(f.options("mount")).unwrap();
    assert!(!reader.owns_mount());
    f.write(&writer, &mut model, &mut work, 10);
    process.kill().unwrap();
    process.wait().unwrap();
    f.write(&writer, &mut model, &mut work, 10);
    wait_until("this reader owns the mount", || reader.owns_mount());
    let tips = f.tips();
    wait_until("caught up after the takeover", || caught_up(&reader, &tips));
    assert_equals_model(&reader, &keys, &model.state());
}

/// Four readers opening one new mount at the same moment: one bootstraps (it owns the mount),
/// the others wait for its copy and attach; there is one read image (a second bootstrap would
/// have written another generation) and every reader equals the model.
#[test]
fn readers_starting_together_cause_one_bootstrap() {
    let f = fixture(2);
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, f.config.num_partitions);
    let mut work = Workload::new(6, KEYS);
    let keys = work.all_keys();
    f.write(&writer, &mut model, &mut work, 20);
    f.snapshot_all();
    let start = Arc::new(std::sync::Barrier::new(4));
    let readers: Vec<Reader> = (0..4)
        .map(|_| {
            let (options, start) = (f.options("mount"), start.clone());
            std::thread::spawn(move || {
                start.wait();
                Reader::open(options).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(readers.iter().filter(|r| r.owns_mount()).count(), 1);
    let images: Vec<String> = listing(&f.dir.path().join("mount"))
        .into_iter()
        .map(|(name, _, _)| name)
        .filter(|name| name.contains("/image-"))
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(images[0].ends_with("image-0000000001"), "{images:?}");
    let tips = f.tips();
    for r in &readers {
        wait_until("every reader caught up", || caught_up(r, &tips));
        assert_equals_model(r, &keys, &model.state());
    }
}

/// Removes every empty regular file under the mount's store directory, as a temporary-files
/// cleaner removing old zero-byte files does (the lock file of earlier layouts was one).
fn clean_empty_files(store_dir: &Path) -> usize {
    let mut removed = 0;
    for e in std::fs::read_dir(store_dir).unwrap().flatten() {
        let meta = e.metadata().unwrap();
        if meta.is_file() && meta.len() == 0 {
            std::fs::remove_file(e.path()).unwrap();
            removed += 1;
        }
    }
    removed
}

/// A cleaner removing the mount's empty files while its owner runs gives the mount no second
/// owner: processes started after it attach, and every reader keeps following the one owner.
#[test]
fn removing_the_mounts_files_never_gives_it_a_second_owner() {
    let f = fixture(2);
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, f.config.num_partitions);
    let mut work = Workload::new(9, KEYS);
    let keys = work.all_keys();
    f.write(&writer, &mut model, &mut work, 5);
    let store_dir = f.dir.path().join("mount").join("shared");
    let mut a = f.ready_process("mount", "ready owner");
    let mut c = f.ready_process("mount", "ready attached");
    // Also the name earlier layouts locked, should a leftover be there.
    std::fs::write(store_dir.join("owner.lock"), b"").unwrap();
    assert!(clean_empty_files(&store_dir) >= 1);
    let mut b = f.ready_process("mount", "ready attached");
    clean_empty_files(&store_dir);
    let mut d = f.ready_process("mount", "ready attached");
    let here = Reader::open(f.options("mount")).unwrap();
    assert!(!here.owns_mount());
    for _ in 0..20 {
        f.write(&writer, &mut model, &mut work, 1);
        clean_empty_files(&store_dir);
    }
    let tips = f.tips();
    wait_until("the attached reader caught up", || caught_up(&here, &tips));
    assert_equals_model(&here, &keys, &model.state());
    assert!(!here.owns_mount(), "the owner process still owns the mount");
    assert!(
        here.status().iter().all(|s| s.last_error.is_none()),
        "{:?}",
        here.status()
    );
    for p in [&mut a, &mut b, &mut c, &mut d] {
        p.kill().unwrap();
        p.wait().unwrap();
    }
    // With every other process gone, this one takes the mount over.
    wait_until("this reader owns the mount", || here.owns_mount());
}

/// A published generation that goes back (written by a process that does not hold the
/// mount's lock) is never followed: attached readers keep serving what they had and say why.
#[test]
fn attached_readers_never_follow_a_generation_back() {
    let f = fixture(2);
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, f.config.num_partitions);
    let mut work = Workload::new(10, KEYS);
    let keys = work.all_keys();
    f.write(&writer, &mut model, &mut work, 5);
    let owner = Reader::open(f.options("mount")).unwrap();
    let attached = Reader::open(f.options("mount")).unwrap();
    assert!(owner.owns_mount() && !attached.owns_mount());
    // `current` rewritten with a lower generation, sealed as the owner seals it.
    let path = f.dir.path().join("mount/shared/current");
    let bytes = std::fs::read(&path).unwrap();
    let json = ikv_core::checksum::open_json(&bytes, "current").unwrap();
    let mut current: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let generation = current["generation"].as_u64().unwrap();
    assert!(generation >= 1);
    current["generation"] = (generation - 1).into();
    let sealed = ikv_core::checksum::seal_json(serde_json::to_vec(&current).unwrap());
    std::fs::write(path.with_extension("tmp"), sealed).unwrap();
    std::fs::rename(path.with_extension("tmp"), &path).unwrap();
    wait_until(
        "the attached reader reports the generation going back",
        || {
            attached.status().iter().any(|s| {
                s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("generation went back"))
            })
        },
    );
    assert_equals_model(&attached, &keys, &model.state());
}

/// A full disk under the mount: the owner's polls fail while it lasts (reads keep serving),
/// and once there is room again it catches up by itself, without a restart. The mount is a
/// small tmpfs (mounting needs root, as on the project's machines and CI).
#[test]
fn a_full_disk_under_the_mount_heals_when_space_returns() {
    let f = fixture(2);
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, f.config.num_partitions);
    let mut work = Workload::new(11, KEYS);
    let keys = work.all_keys();
    f.write(&writer, &mut model, &mut work, 5);
    let disk = f.dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&disk)
        .output()
        .unwrap();
    if !mounted.status.success() {
        // Mounting needs CAP_SYS_ADMIN, which this project's machines and CI have; say loudly
        // where it is missing rather than fail a run for want of a privilege.
        let why = String::from_utf8_lossy(&mounted.stderr);
        assert!(
            why.contains("permission denied")
                || why.contains("must be superuser")
                || why.contains("Operation not permitted"),
            "mount failed for another reason: {why}"
        );
        eprintln!("SKIPPED a_full_disk_under_the_mount_heals_when_space_returns: {why}");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let reader = Reader::open(f.options("disk/mount")).unwrap();
    assert!(reader.owns_mount());
    // Fill the disk.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut out = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 64 << 10];
        while out.write_all(&block).and_then(|_| out.sync_all()).is_ok() {}
    }
    f.write(&writer, &mut model, &mut work, 30);
    wait_until("the owner reports the failing local copy", || {
        reader.status().iter().any(|s| s.last_error.is_some())
    });
    // Reads go on meanwhile.
    for k in &keys {
        reader.get_document(k).unwrap();
    }
    std::fs::remove_file(&filler).unwrap();
    f.write(&writer, &mut model, &mut work, 5);
    let tips = f.tips();
    wait_until("the reader caught up once there was room", || {
        caught_up(&reader, &tips) && reader.status().iter().all(|s| s.last_error.is_none())
    });
    assert_equals_model(&reader, &keys, &model.state());
    reader.shutdown().unwrap();
}

/// The durable copy's keyspace files removed while no reader ran (a cleaner, a mistake): the
/// next open discards the copy and rebuilds it from the bucket at the first try.
#[test]
fn a_local_copy_missing_its_keyspace_files_is_rebuilt_at_the_first_open() {
    let f = fixture(2);
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, f.config.num_partitions);
    let mut work = Workload::new(12, KEYS);
    let keys = work.all_keys();
    f.write(&writer, &mut model, &mut work, 10);
    let reader = Reader::open(f.options("mount")).unwrap();
    reader.shutdown().unwrap();
    let keyspaces = f.dir.path().join("mount/shared/db/keyspaces");
    let mut removed = 0;
    for ks in std::fs::read_dir(&keyspaces).unwrap().flatten() {
        let current = ks.path().join("current");
        if current.exists() {
            std::fs::remove_file(current).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0, "the layout has keyspace files to remove");
    let reader = Reader::open(f.options("mount")).unwrap();
    let tips = f.tips();
    wait_until("caught up", || caught_up(&reader, &tips));
    assert_equals_model(&reader, &keys, &model.state());
}

/// A frozen owner (SIGSTOP) is noticed by the attached processes: their `last_error` names the
/// owner's pid and what to do, and clears once it runs again.
#[test]
fn attached_readers_notice_a_frozen_owner() {
    let f = fixture(2);
    let writer = f.writer();
    let mut model = Model::new(PRIMARY_KEY, None, f.config.num_partitions);
    let mut work = Workload::new(13, KEYS);
    f.write(&writer, &mut model, &mut work, 5);
    let mut owner = f.ready_process("mount", "ready owner");
    let attached = Reader::open(f.options("mount")).unwrap();
    assert!(!attached.owns_mount());
    let pid = owner.id().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    wait_until("the attached reader notices the frozen owner", || {
        attached.status().iter().all(|s| {
            s.last_error.as_deref().is_some_and(|e| {
                e.contains(&format!("(pid {pid}) has not found")) && e.contains("kill -CONT")
            })
        })
    });
    signal("-CONT");
    wait_until("the warning clears once the owner runs again", || {
        attached.status().iter().all(|s| s.last_error.is_none())
    });
    owner.kill().unwrap();
    owner.wait().unwrap();
}
