//! kill -9 at proven points. Each child process runs with one failpoint armed
//! (`IKV_FAILPOINTS`, compiled only into test builds): at the chosen hit it prints where it is
//! and blocks, and only then is it killed with SIGKILL, so every kill provably lands inside
//! the step named, at a hit chosen at random (the seed is in every message). After each kill
//! the state is compared in full with the reference model of the generated operations.
//!
//! Steps: reader bootstrap (between ingestion batches, before activation), reader delta apply
//! with drops (before and after the local commit), snapshot upload (after each file, before
//! the manifest), multi-round compaction (after each round's commit), retention deletes.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use ikv_core::StoreLayout;
use ikv_core::bucket::list_snapshot_seqs;
use ikv_core::bucket::{create_store, discover_tip, list_delta_seqs};
use ikv_core::expiry::served_at;
use ikv_core::{Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot::{SnapshotOptions, snapshot_partition};
use ikv_snapshot_format::{Manifest, StackDocs};
use ikv_tests::fixture::wait_caught_up;
use ikv_tests::model::{Committed, Model};
use ikv_tests::model_check::{assert_equals_model, write_and_record};
use ikv_tests::random_ops::Workload;
use ikv_writer::{Writer, WriterOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STORE: &str = "crash";

fn seed() -> u64 {
    std::env::var("IKV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// Runs `cmd` with `point` armed at hit `n`. Returns true when the child reported stopping
/// there and was then killed by SIGKILL; false when it finished its work (`done`/`ready`)
/// without reaching that hit. Anything else (a crash, an error exit) fails the test.
fn kill_at(mut cmd: Command, point: &str, n: u64, seed: u64) -> bool {
    let mut child = cmd
        .env("IKV_FAILPOINTS", format!("{point}={n}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let want = format!("failpoint {point} {n}");
    for line in stdout.lines() {
        let line = line.unwrap();
        if line == want {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert_eq!(
                status.signal(),
                Some(9),
                "seed {seed}: the child at {want} ended by SIGKILL, not {status:?}"
            );
            return true;
        }
        if line == "done" || line.starts_with("ready") {
            child.kill().unwrap();
            child.wait().unwrap();
            return false;
        }
    }
    let out = child.wait_with_output().unwrap();
    panic!(
        "seed {seed}: the child exited ({:?}) before {want}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills at a random hit of `point` in `1..=max`; the callers pick `max` no larger than the
/// hits the run is known to make, since a run that completes changes the bucket.
fn kill_somewhere(
    rng: &mut StdRng,
    max: u64,
    seed: u64,
    point: &str,
    cmd: impl Fn() -> Command,
) -> u64 {
    let n = rng.random_range(1..=max);
    assert!(
        kill_at(cmd(), point, n, seed),
        "seed {seed}: the run completed before hit {n} of {point}"
    );
    n
}

struct Bucket {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    url: String,
    storage: Storage,
    config: StoreConfig,
    layout: StoreLayout,
    rt: tokio::runtime::Runtime,
    writer: Writer,
    model: Model,
    work: Workload,
    keys: Vec<Vec<u8>>,
}

impl Bucket {
    fn new(partitions: u32, seed: u64) -> Bucket {
        Bucket::with(partitions, seed, false)
    }

    /// A bucket whose random writes carry event times (most of them, out of order) when
    /// `event_times` says so.
    fn with(partitions: u32, seed: u64, event_times: bool) -> Bucket {
        let rt = ikv_tests::runtime();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let url = format!("file://{}/bucket", root.display());
        let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
        let config = StoreConfig::new(STORE, "id", None, partitions).unwrap();
        rt.block_on(create_store(&storage, &config)).unwrap();
        let layout = StoreLayout::new(&storage.prefix, STORE).unwrap();
        let writer = rt
            .block_on(Writer::open(
                storage.clone(),
                STORE,
                WriterOptions::default(),
            ))
            .unwrap();
        let mut work = Workload::new(seed, 200);
        if event_times {
            work = work.with_event_times();
        }
        let keys = work.all_keys();
        Bucket {
            _dir: dir,
            root,
            url,
            storage,
            model: Model::new("id", None, partitions),
            config,
            layout,
            rt,
            writer,
            work,
            keys,
        }
    }

    /// Random batches of all six operations (drops included), the last of them always
    /// ending with one upsert: a random `drop_all` near the end would otherwise leave the
    /// model empty, and an empty model checks nothing.
    fn write_random(&mut self, batches: usize) {
        for i in 0..batches {
            let mut ops = self.work.batch(12);
            if i + 1 == batches {
                ops.push(Operation::UpsertFields(
                    Document::new()
                        .with("id", FieldValue::String("kept".into()))
                        .with("n", FieldValue::Int64(i as i64)),
                ));
            }
            self.rt
                .block_on(write_and_record(&self.writer, &mut self.model, &ops));
        }
    }

    /// `docs` documents with long values, in calls of 2,000, under keys `bulk{i}`.
    fn write_bulk(&mut self, docs: usize, round: usize) {
        let all: Vec<usize> = (0..docs).collect();
        for chunk in all.chunks(2_000) {
            let ops: Vec<Operation> = chunk
                .iter()
                .map(|i| {
                    Operation::UpsertFields(
                        Document::new()
                            .with("id", FieldValue::String(format!("bulk{i:06}")))
                            .with("a", FieldValue::String(format!("a-{round}-{i:0>40}")))
                            .with("b", FieldValue::Int64((i * 7 + round) as i64)),
                    )
                })
                .collect();
            self.rt
                .block_on(write_and_record(&self.writer, &mut self.model, &ops));
        }
        self.keys.extend(
            (0..docs)
                .step_by(97)
                .map(|i| format!("bulk{i:06}").into_bytes()),
        );
    }

    fn snapshot_all(&self) {
        for p in 0..self.config.num_partitions {
            let options = SnapshotOptions {
                force: true,
                ..SnapshotOptions::default()
            };
            self.rt
                .block_on(snapshot_partition(
                    &self.storage,
                    &self.config,
                    p,
                    &options,
                    std::time::SystemTime::now(),
                ))
                .unwrap();
        }
    }

    fn reader_cmd(&self, mount: &std::path::Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ikv-test-reader"));
        cmd.args([&self.url, STORE, mount.to_str().unwrap()]);
        cmd
    }

    fn compactor_cmd(&self, partition: u32, mode: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ikv-test-compactor"));
        cmd.args([&self.url, STORE, &partition.to_string()])
            .args(mode);
        cmd
    }

    fn tips(&self) -> Vec<u64> {
        (0..self.config.num_partitions)
            .map(|p| {
                self.rt
                    .block_on(discover_tip(&self.storage, &self.layout, p))
                    .unwrap()
            })
            .collect()
    }

    /// A reader on `mount` (resuming whatever a killed process left) equals the model.
    fn assert_mount_matches(&self, mount: &std::path::Path, seed: u64) {
        let mut options = ReaderOptions::new(&self.url, STORE, mount);
        options.poll_interval = Duration::from_millis(10);
        let reader = Reader::open(options).unwrap();
        let tips = self.tips();
        let expected: Vec<u64> = (0..self.config.num_partitions)
            .map(|p| self.model.tip(p))
            .collect();
        assert_eq!(tips, expected, "seed {seed}");
        for s in reader.status() {
            assert_eq!(
                s.applied_sequence, tips[s.partition as usize],
                "seed {seed}"
            );
        }
        assert_equals_model(&reader, &self.keys, &self.model.state());
        reader.shutdown().unwrap();
    }

    /// Partition 0 compacted with a budget of one byte (every delta a round that commits a
    /// snapshot), killed twice after a random round: each time the newest snapshot is valid
    /// and past `last`; then a run finishes and a reader resumes to the model.
    fn kill_between_rounds_then_finish(&self, rng: &mut StdRng, mut last: u64, seed: u64) {
        let rounds = || self.compactor_cmd(0, &["snapshot", "1", "20000"]);
        for _ in 0..2 {
            kill_somewhere(rng, 12, seed, "snapshot.round_committed", rounds);
            let seq = self.assert_newest_snapshot_valid(0, seed);
            assert!(
                seq > last,
                "seed {seed}: a round committed ({seq} after {last})"
            );
            last = seq;
        }
        assert!(!kill_at(rounds(), "snapshot.round_committed", 1000, seed));
        assert_eq!(
            self.assert_newest_snapshot_valid(0, seed),
            self.model.tip(0)
        );
        self.assert_mount_matches(&self.root.join("after-rounds"), seed);
    }

    /// The newest committed snapshot of `partition` equals the model at its sequence.
    fn assert_newest_snapshot_valid(&self, partition: u32, seed: u64) -> u64 {
        let Some(manifest) = self
            .rt
            .block_on(Manifest::load_newest(
                &self.storage,
                &self.layout,
                partition,
            ))
            .unwrap()
        else {
            return 0;
        };
        let seq = manifest.sequence;
        let docs = self
            .rt
            .block_on(async {
                StackDocs::open(&self.storage, &self.layout, manifest)
                    .await?
                    .collect_all()
                    .await
            })
            .unwrap();
        // As a reader serves it: event-time companions are no fields (nothing expires here).
        let got: std::collections::BTreeMap<_, _> = docs
            .into_iter()
            .filter_map(|(k, d)| Some((k, served_at(d, "id", i64::MIN)?)))
            .collect();
        assert_eq!(
            got,
            self.model.partition_at(partition, seq),
            "seed {seed}: snapshot {seq} of partition {partition}"
        );
        seq
    }
}

#[test]
fn a_reader_killed_in_bootstrap_or_in_delta_apply_resumes_to_the_model() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    // Random writes with event times, most of them, committed out of order: a resumed
    // reader weighs each delta's sets against what its killed predecessor left.
    let mut b = Bucket::with(2, seed, true);
    // Bulk last: a random drop_all would otherwise leave little to bootstrap.
    b.write_random(60);
    b.write_bulk(24_000, 0);
    b.snapshot_all();
    let mount = b.root.join("mount");

    // Bootstrap: ~24k documents ingest in batches of 4,096; kill between batches, on the
    // mount the previous kill left, then just before the new copy is activated.
    for _ in 0..3 {
        kill_somewhere(&mut rng, 5, seed, "reader.bootstrap.batch", || {
            b.reader_cmd(&mount)
        });
    }
    assert!(kill_at(
        b.reader_cmd(&mount),
        "reader.bootstrap.before_activate",
        1,
        seed
    ));
    // And once the durable copy is activated, before the shared read image is published.
    assert!(kill_at(
        b.reader_cmd(&mount),
        "reader.generation.before_current",
        1,
        seed
    ));
    b.assert_mount_matches(&mount, seed);

    // Delta apply, drops included: the reopened reader catches up delta by delta and is
    // killed before or after a delta's local commit.
    for round in 0..6 {
        b.write_random(25);
        // Documents always remain after the round (a random drop_all may have just emptied
        // the store), so the comparison below has something to compare.
        b.write_bulk(if round == 2 { 6_000 } else { 100 }, round);
        // Before the durable commit, after it, and between it and the shared overlay (the
        // next owner then folds a new image from the durable copy).
        let point = match round % 3 {
            0 => "reader.apply.before_commit",
            1 => "reader.apply.after_commit",
            _ => "reader.apply.before_overlay",
        };
        kill_somewhere(&mut rng, 25, seed, point, || b.reader_cmd(&mount));
        b.assert_mount_matches(&mount, seed);
    }
}

/// A fold runs on a thread of its own: stopped there, its owner keeps applying deltas (a
/// process attached to the mount sees every one), and a kill -9 in the middle of it leaves a
/// mount that resumes to the model.
#[test]
fn a_reader_killed_while_folding_in_the_background_served_every_delta_and_resumes() {
    let seed = seed();
    let mut b = Bucket::new(2, seed);
    b.write_random(20);
    b.write_bulk(2_000, 0);
    let mount = b.root.join("mount");
    let mut child = KillOnDrop(
        b.reader_cmd(&mount)
            .env("IKV_TEST_FOLD_BYTES", "1")
            .env("IKV_FAILPOINTS", "reader.fold.background=1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The first delta the owner applies past the 1-byte threshold (catching up from the
    // bootstrap, before or after it says it is ready) starts a fold, whose thread stops.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let mut said: Vec<String> = (0..2)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("seed {seed}: the owner never folded in the background"))
        })
        .collect();
    said.sort();
    assert_eq!(
        said,
        ["failpoint reader.fold.background 1", "ready owner"],
        "seed {seed}"
    );
    b.write_random(30);
    b.write_bulk(300, 2);
    let mut options = ReaderOptions::new(&b.url, STORE, &mount);
    options.poll_interval = Duration::from_millis(10);
    let attached = Reader::open(options).unwrap();
    assert!(!attached.owns_mount(), "seed {seed}");
    wait_caught_up(&attached, &b.tips());
    assert_equals_model(&attached, &b.keys, &b.model.state());
    attached.shutdown().unwrap();
    child.0.kill().unwrap();
    assert_eq!(child.0.wait().unwrap().signal(), Some(9), "seed {seed}");
    b.assert_mount_matches(&mount, seed);
}

/// The image is the only home of values (rfcs/0010): a fold names its image the new base,
/// with the changes carried past it as the new tail, in one batch. Killed before that batch,
/// after it (the old generation still published), or between publishing and `current`, with
/// a fold after every delta and deltas landing while folds run: every reopened mount resumes
/// to the model, from its base and tail where they are complete.
#[test]
fn a_reader_killed_at_each_step_of_a_folds_switch_resumes_to_the_model() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Bucket::new(2, seed);
    b.write_random(30);
    b.write_bulk(3_000, 0);
    b.snapshot_all();
    let mount = b.root.join("mount");
    let folding = |b: &Bucket| {
        let mut cmd = b.reader_cmd(&mount);
        cmd.env("IKV_TEST_FOLD_BYTES", "1");
        cmd
    };
    for round in 0..6 {
        b.write_random(20);
        b.write_bulk(if round == 3 { 2_000 } else { 100 }, round + 1);
        let point = match round % 3 {
            0 => "reader.base.before_switch",
            1 => "reader.base.after_switch",
            _ => "reader.generation.before_current",
        };
        // Folds go on after the reader is ready, as long as deltas come: keep writing until
        // the hit, then kill.
        let n = rng.random_range(1..=4);
        let mut child = KillOnDrop(
            folding(&b)
                .env("IKV_FAILPOINTS", format!("{point}={n}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let lines = lines_of(&mut child.0);
        let want = format!("failpoint {point} {n}");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            match lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) if line == want => break,
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => b.write_random(3),
                Err(e) => panic!("seed {seed}: the reader ended before {want}: {e}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "seed {seed}: never reached {want}"
            );
        }
        child.0.kill().unwrap();
        assert_eq!(child.0.wait().unwrap().signal(), Some(9), "seed {seed}");
        b.assert_mount_matches(&mount, seed);
    }
}

/// The lines a child prints, as they come.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_compactor_killed_while_uploading_or_between_rounds_leaves_valid_snapshots() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Bucket::new(1, seed);
    b.write_random(40);
    b.write_bulk(4_000, 0);

    // Upload: tiny files (5 kB: well over six of them), killed after a random file, then just
    // before the manifest. Nothing is committed, so no snapshot is visible; the next run
    // commits a correct one.
    let upload = |b: &Bucket| b.compactor_cmd(0, &["snapshot", "1000000000", "5000"]);
    kill_somewhere(&mut rng, 6, seed, "snapshot.file_written", || upload(&b));
    assert!(kill_at(upload(&b), "snapshot.before_manifest", 1, seed));
    assert!(
        b.rt.block_on(list_snapshot_seqs(&b.storage, &b.layout, 0))
            .unwrap()
            .is_empty(),
        "seed {seed}: a killed upload committed nothing"
    );
    assert_eq!(b.assert_newest_snapshot_valid(0, seed), 0);
    assert!(!kill_at(upload(&b), "snapshot.before_manifest", 2, seed));
    assert_eq!(b.assert_newest_snapshot_valid(0, seed), b.model.tip(0));

    // Multi-round: a budget of one byte makes every delta a round that commits a snapshot;
    // killed after a random round, the newest snapshot is valid and the next run continues.
    b.write_random(30);
    b.kill_between_rounds_then_finish(&mut rng, b.model.tip(0) - 30, seed);
}

/// Event times committed out of order, over a snapshot that holds event times: a pass that
/// makes a round of every delta (each weighing its sets against the snapshot the round
/// before committed), killed after a random round, leaves snapshots equal to the model; the
/// next run finishes; a reader resumes to the model.
#[test]
fn a_compactor_killed_between_rounds_of_event_timed_writes_leaves_valid_snapshots() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Bucket::with(1, seed, true);
    b.write_random(40);
    b.snapshot_all();
    let last = b.assert_newest_snapshot_valid(0, seed);
    assert!(last > 0, "seed {seed}: a first snapshot");
    b.write_random(30);
    b.kill_between_rounds_then_finish(&mut rng, last, seed);
}

#[test]
fn retention_killed_between_deletes_leaves_a_readable_log_without_holes() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Bucket::new(1, seed);
    for _ in 0..3 {
        b.write_random(20);
        b.snapshot_all();
    }
    b.write_random(10);
    let deltas_before =
        b.rt.block_on(list_delta_seqs(&b.storage, &b.layout, 0))
            .unwrap()
            .len();
    // Three hours ahead: one superseded snapshot and 60 covered deltas are due, so three
    // kills within 15 deletes each never see the pass complete.
    let retention = |b: &Bucket| b.compactor_cmd(0, &["retention", "3"]);
    for _ in 0..3 {
        kill_somewhere(&mut rng, 15, seed, "retention.delete", || retention(&b));
        let seqs =
            b.rt.block_on(list_delta_seqs(&b.storage, &b.layout, 0))
                .unwrap();
        let tip = b.model.tip(0);
        assert_eq!(seqs.last().copied(), Some(tip), "seed {seed}");
        let first = seqs[0];
        assert_eq!(
            seqs,
            (first..=tip).collect::<Vec<_>>(),
            "seed {seed}: the deltas left are one run up to the tip"
        );
        b.assert_newest_snapshot_valid(0, seed);
        b.assert_mount_matches(&b.root.join(format!("r{first}")), seed);
    }
    assert!(!kill_at(retention(&b), "retention.delete", 1000, seed));
    let left =
        b.rt.block_on(list_delta_seqs(&b.storage, &b.layout, 0))
            .unwrap();
    assert!(
        left.len() < deltas_before,
        "seed {seed}: retention deleted deltas"
    );
    b.assert_mount_matches(&b.root.join("final"), seed);
}

/// The documents `ikv-test-importer ... ROWS ROUND` imports.
fn import_row(i: usize, round: i64) -> Document {
    Document::new()
        .with("id", FieldValue::String(format!("imp{i:06}")))
        .with("a", FieldValue::String(format!("i-{round}-{i}")))
        .with("b", FieldValue::Int64(i as i64 * 3 + round))
}

impl Bucket {
    fn model_tips(&self) -> Vec<u64> {
        (0..self.config.num_partitions)
            .map(|p| self.model.tip(p))
            .collect()
    }

    fn importer_cmd(&self, import_id: &str, rows: usize, round: i64) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ikv-test-importer"));
        cmd.args([
            self.url.as_str(),
            STORE,
            import_id,
            &rows.to_string(),
            &round.to_string(),
        ]);
        cmd
    }

    /// Records in the model an import of `rows` rows committed at the tips it moved to.
    fn record_import(&mut self, rows: usize, round: i64, before: &[u64]) {
        let after = self.tips();
        let commits: Vec<Committed> = (0..self.config.num_partitions)
            .filter(|p| after[*p as usize] > before[*p as usize])
            .map(|p| {
                assert_eq!(
                    after[p as usize],
                    before[p as usize] + 1,
                    "one delta per partition"
                );
                Committed {
                    partition: p,
                    sequence: after[p as usize],
                }
            })
            .collect();
        let ops: Vec<Operation> = (0..rows)
            .map(|i| Operation::UpsertFields(import_row(i, round)))
            .collect();
        self.model.record(&ops, &commits);
        self.keys.extend(
            (0..rows)
                .step_by(53)
                .map(|i| format!("imp{i:06}").into_bytes()),
        );
    }
}

#[test]
fn an_import_killed_before_its_commit_leaves_nothing_and_a_reader_killed_applying_one_resumes() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Bucket::new(2, seed);
    b.write_random(30);
    let mount = b.root.join("mount");
    assert!(!kill_at(
        b.reader_cmd(&mount),
        "reader.import.batch",
        1,
        seed
    ));

    // The importer killed after writing its runs, before any partition's commit: nothing is
    // committed, and the retry with the same id commits each partition once.
    let before = b.tips();
    assert!(kill_at(
        b.importer_cmd("day-1", 20_000, 1),
        "import.before_commit",
        1,
        seed
    ));
    assert_eq!(b.tips(), before, "seed {seed}: nothing committed");
    b.assert_mount_matches(&mount, seed);
    let out = b.importer_cmd("day-1", 20_000, 1).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.record_import(20_000, 1, &before);
    let again = b.importer_cmd("day-1", 20_000, 1).output().unwrap();
    assert!(again.status.success());
    assert_eq!(
        b.tips(),
        b.model_tips(),
        "seed {seed}: the retry committed nothing again"
    );
    b.write_random(5);

    // Killed after a partition's delta, before its marker: the retry finds the delta and
    // commits no partition twice (`record_import` checks one delta per partition).
    let before = b.tips();
    assert!(kill_at(
        b.importer_cmd("day-3", 6_000, 3),
        "import.before_marker",
        1,
        seed
    ));
    let out = b.importer_cmd("day-3", 6_000, 3).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.record_import(6_000, 3, &before);
    b.write_random(5);

    // A reader killed between the chunks of an import it applies (about 10,000 documents per
    // partition, in chunks of 4,096) rebuilds and equals the model.
    kill_somewhere(&mut rng, 4, seed, "reader.import.batch", || {
        b.reader_cmd(&mount)
    });
    b.assert_mount_matches(&mount, seed);

    // And once more with the import folded into a snapshot, and a second import on top.
    b.snapshot_all();
    let before = b.tips();
    let out = b.importer_cmd("day-2", 12_000, 2).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.record_import(12_000, 2, &before);
    kill_somewhere(&mut rng, 2, seed, "reader.import.batch", || {
        b.reader_cmd(&mount)
    });
    b.assert_mount_matches(&mount, seed);
}
