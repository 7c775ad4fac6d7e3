//! Point-in-time readers (docs/READER.md, "Point-in-time readers"): a reader pinned to a
//! checkpoint or to a time serves exactly the model's state at that point after more writes,
//! layers, full passes and retention; it shares the host with a live reader of the same store
//! and with other pinned readers (one copy per point); it makes no request once open; and a
//! point whose data is gone is refused by name, nothing served.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::path::Path;
use std::time::{Duration, SystemTime};

use ikv_core::clock::ManualClock;
use ikv_core::{ErrorKind, Storage, StoreLayout};
use ikv_reader::{Pin, Reader, ReaderOptions};
use ikv_snapshot::checkpoint::{Checkpoint, create_checkpoint, delete_checkpoint};
use ikv_snapshot::{Retention, apply_retention, snapshot_partition};
use ikv_tests::fixture::{LocalStore, local_store, wait_caught_up, wait_until};
use ikv_tests::layered_pass;
use ikv_tests::model::{Model, PartitionDocs};
use ikv_tests::model_check::{assert_equals_model, write_and_record};
use ikv_tests::random_ops::{PRIMARY_KEY, Workload};
use ikv_writer::{Writer, WriterOptions};

const PARTITIONS: u32 = 2;

struct Scene {
    store: LocalStore,
    writer: Writer,
    work: Workload,
    model: Model,
}

impl Scene {
    fn new(name: &str, seed: u64) -> Scene {
        let store = local_store(name, PRIMARY_KEY, None, PARTITIONS);
        let writer = store
            .rt
            .block_on(Writer::open(
                store.storage.clone(),
                name,
                WriterOptions::default(),
            ))
            .unwrap();
        Scene {
            store,
            writer,
            work: Workload::new(seed, 300),
            model: Model::new(PRIMARY_KEY, None, PARTITIONS),
        }
    }

    fn write(&mut self, batches: usize) {
        for _ in 0..batches {
            let ops = self.work.batch(10);
            self.store
                .rt
                .block_on(write_and_record(&self.writer, &mut self.model, &ops));
        }
    }

    /// A snapshot pass of every partition: layers up to `max_layers`, 0 for a full snapshot.
    fn pass(&self, max_layers: usize) {
        for p in 0..PARTITIONS {
            self.store
                .rt
                .block_on(snapshot_partition(
                    &self.store.storage,
                    &self.store.config,
                    p,
                    &layered_pass(max_layers),
                    SystemTime::now(),
                ))
                .unwrap();
        }
    }

    /// Checkpoint `name` of the store as committed now.
    fn checkpoint(&self, name: &str) -> Checkpoint {
        self.store
            .rt
            .block_on(create_checkpoint(
                &self.store.storage,
                &self.store.config.store_name,
                name,
                SystemTime::now(),
            ))
            .unwrap()
    }

    /// The model's state with each partition at `tips`.
    fn state_at(&self, tips: &[u64]) -> Vec<PartitionDocs> {
        (0..PARTITIONS)
            .map(|p| self.model.partition_at(p, tips[p as usize]))
            .collect()
    }

    fn tips(&self) -> Vec<u64> {
        (0..PARTITIONS).map(|p| self.model.tip(p)).collect()
    }

    /// Retention three hours on, keeping one snapshot.
    fn retention(&self) {
        let layout =
            StoreLayout::new(&self.store.storage.prefix, &self.store.config.store_name).unwrap();
        let later = SystemTime::now() + Duration::from_secs(3 * 3600);
        let retention = Retention {
            window: Duration::from_secs(3600),
            keep_snapshots: 1,
        };
        for p in 0..PARTITIONS {
            self.store
                .rt
                .block_on(apply_retention(
                    &self.store.storage,
                    &layout,
                    p,
                    &retention,
                    later,
                ))
                .unwrap();
        }
    }

    fn options(&self, mount: &Path, pin: Option<Pin>) -> ReaderOptions {
        let mut options = ReaderOptions::new(
            &self.store.url,
            &self.store.config.store_name,
            mount.to_path_buf(),
        );
        options.poll_interval = Duration::from_millis(5);
        options.background_nice = 0;
        options.pin = pin;
        options
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_reader_pinned_to_a_checkpoint_serves_it_beside_the_tip_and_never_polls() {
    let mut scene = Scene::new("pinned", 41);
    scene.write(40);
    scene.pass(2);
    scene.write(10);
    let made = scene.checkpoint("train");
    let at_checkpoint = scene.state_at(&scene.tips());
    // Much later: layers, a full pass, retention three hours on.
    for round in 0..4 {
        scene.write(8);
        scene.pass(if round == 3 { 0 } else { 2 });
    }
    scene.write(5);
    scene.retention();
    let keys = scene.work.all_keys();

    let mount = scene.store.dir.path().join("mount");
    let live = Reader::open(scene.options(&mount, None)).unwrap();
    // The pinned reader's requests are counted on a root of its own, its time is a manual clock.
    let counted = Storage::open(&scene.store.url, &Default::default()).unwrap();
    let clock = ManualClock::new(SystemTime::now());
    let mut options = scene.options(&mount, Some(Pin::Checkpoint("train".into())));
    options.storage = Some(counted.clone());
    options.clock = clock.clone();
    let pinned = Reader::open(options.clone()).unwrap();
    assert!(pinned.owns_mount());
    // A second reader of the same point attaches to the same copy (no bucket requests).
    let mut attached_options = scene.options(&mount, Some(Pin::Checkpoint("train".into())));
    let attached_counted = Storage::open(&scene.store.url, &Default::default()).unwrap();
    attached_options.storage = Some(attached_counted.clone());
    let attached = Reader::open(attached_options).unwrap();
    assert!(!attached.owns_mount());
    let attached_opened = attached_counted.requests().total();

    assert_equals_model(&live, &keys, &scene.model.state());
    assert_equals_model(&pinned, &keys, &at_checkpoint);
    assert_equals_model(&attached, &keys, &at_checkpoint);
    for s in pinned.status() {
        assert_eq!(
            s.applied_sequence, made.partitions[s.partition as usize].sequence,
            "{s:?}"
        );
    }
    // One copy for the tip, one for the point.
    let dirs = entries(&mount);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert_eq!(dirs[0], "pinned");
    assert!(dirs[1].starts_with("pinned@"), "{dirs:?}");

    // More writes: the live reader follows, the pinned ones do not, and the pinned owner
    // makes no request at all over a simulated minute of its ticks.
    let before = counted.requests().total();
    scene.write(10);
    wait_caught_up(&live, &scene.tips());
    for _ in 0..100 {
        let sleeps = clock.sleeps().len();
        clock.advance(Duration::from_millis(200));
        wait_until("the pinned owner's next tick", || {
            clock.sleeps().len() > sleeps
        });
    }
    assert_eq!(counted.requests().total(), before, "a pinned reader polled");
    assert_eq!(
        attached_counted.requests().total(),
        attached_opened,
        "an attached pinned reader read the bucket after its open"
    );
    assert_equals_model(&live, &keys, &scene.model.state());
    assert_equals_model(&pinned, &keys, &at_checkpoint);
    assert_equals_model(&attached, &keys, &at_checkpoint);

    // Reopened: the copy resumes at its point: the configuration and the checkpoint, read to
    // resolve the pin and to own the copy, and no delta, snapshot or listing.
    attached.shutdown().unwrap();
    pinned.shutdown().unwrap();
    let reopened_counted = Storage::open(&scene.store.url, &Default::default()).unwrap();
    options.storage = Some(reopened_counted.clone());
    let reopened = Reader::open(options).unwrap();
    let r = reopened_counted.requests();
    assert_eq!(
        (
            r.total(),
            r.of_kind(ikv_core::bucket::requests::RequestKind::Get)
        ),
        (3, 3),
        "a resumed pinned copy reads only the configuration (twice) and the checkpoint"
    );
    assert_equals_model(&reopened, &keys, &at_checkpoint);
    reopened.shutdown().unwrap();

    // Deleted: a new pinned reader is refused by name; the tip is unaffected.
    scene
        .store
        .rt
        .block_on(delete_checkpoint(&scene.store.storage, "pinned", "train"))
        .unwrap();
    let err =
        Reader::open(scene.options(&mount, Some(Pin::Checkpoint("train".into())))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreNotFound, "{err}");
    assert!(err.to_string().contains("no checkpoint \"train\""), "{err}");
    assert_equals_model(&live, &keys, &scene.model.state());
    live.shutdown().unwrap();
}

#[test]
fn a_reader_as_of_a_time_serves_the_newest_state_committed_by_then() {
    let mut scene = Scene::new("asof", 43);
    let before_any = SystemTime::now();
    std::thread::sleep(Duration::from_millis(50));
    scene.write(30);
    scene.pass(0);
    scene.write(10);
    std::thread::sleep(Duration::from_millis(50));
    let first = SystemTime::now();
    let first_tips = scene.tips();
    std::thread::sleep(Duration::from_millis(50));
    // After the time: more writes and passes (a layer, then a full snapshot past the point).
    scene.write(10);
    scene.pass(2);
    scene.write(10);
    scene.pass(0);
    scene.write(3);
    let keys = scene.work.all_keys();
    let mount = scene.store.dir.path().join("mount");

    let reader = Reader::open(scene.options(&mount, Some(Pin::AsOf(first)))).unwrap();
    assert_equals_model(&reader, &keys, &scene.state_at(&first_tips));
    // A time before the first write: the store as it was then, empty.
    let empty = Reader::open(scene.options(&mount, Some(Pin::AsOf(before_any)))).unwrap();
    for key in &keys {
        assert_eq!(empty.get_document(key).unwrap(), None, "{key:?}");
    }
    assert_eq!(empty.scan(&[PRIMARY_KEY]).count(), 0);
    // Two copies: each point its own.
    assert_eq!(entries(&mount).len(), 2, "{:?}", entries(&mount));
    reader.shutdown().unwrap();
    empty.shutdown().unwrap();

    // Retention removed what the time needs: refused by name.
    scene.retention();
    let err = Reader::open(scene.options(&mount, Some(Pin::AsOf(first)))).unwrap_err();
    assert!(err.to_string().contains("no longer in the bucket"), "{err}");
}

#[test]
fn a_pinned_point_whose_deltas_are_gone_is_refused_and_nothing_is_served() {
    let mut scene = Scene::new("holed", 47);
    scene.write(20);
    scene.pass(0);
    scene.write(10);
    let made = scene.checkpoint("cp");
    // A delta the checkpoint needs is removed behind its back (a retention that ignored it).
    let layout = StoreLayout::new(&scene.store.storage.prefix, "holed").unwrap();
    let pin = &made.partitions[1];
    assert!(pin.sequence > pin.snapshot, "{pin:?}");
    let missing = pin.snapshot + 1;
    let bucket = scene.store.dir.path().join("bucket");
    std::fs::remove_file(bucket.join(layout.delta(1, missing).as_ref())).unwrap();
    let mount = scene.store.dir.path().join("mount");
    let err = Reader::open(scene.options(&mount, Some(Pin::Checkpoint("cp".into())))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("checkpoint \"cp\" of partition 1")
            && text.contains(&format!("delta {missing} is gone")),
        "{text}"
    );
    // Its snapshot removed too: refused by name (on a fresh mount: the first attempt's copy
    // would resume without needing the snapshot).
    std::fs::remove_dir_all(
        bucket.join(layout.snapshot_dir(0, made.partitions[0].snapshot).as_ref()),
    )
    .unwrap();
    let fresh = scene.store.dir.path().join("fresh-mount");
    let err = Reader::open(scene.options(&fresh, Some(Pin::Checkpoint("cp".into())))).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "checkpoint \"cp\" of partition 0 (sequence {}) is no longer in the bucket: its snapshot {} is gone",
            made.partitions[0].sequence, made.partitions[0].snapshot
        )),
        "{err}"
    );
}
