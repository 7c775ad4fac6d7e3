//! Cost benchmark: the requests ikv makes, counted on the storage root (every request passes
//! the counting wrapper `Storage` puts around its store, so the counts are what goes on the
//! wire to any store), turned into dollars a month at S3 list prices. Time is simulated with
//! a `ManualClock` for the idle host and the writers (the counts do not depend on speed), and
//! real for the catch-up through a store that adds 25 ms to every request.
//!
//! `cargo bench -p ikv-tests --bench cost`; prints the rows of BENCHMARKS.md "Cost". Self-
//! contained (its own latency store), so that the same file runs against the previous tree.
#![allow(clippy::disallowed_methods)] // benches time real work on the wall clock

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use ikv_core::bucket::create_store;
use ikv_core::bucket::requests::RequestKind;
use ikv_core::clock::{Clock, ManualClock, wall_time};
use ikv_core::{Document, FieldValue, Storage, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_tests::fixture::wait_until;
use ikv_writer::{Writer, WriterOptions};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Seconds in a 30-day month.
const MONTH: f64 = 30.0 * 86_400.0;
/// S3 Standard list prices, us-east-1, per request.
const PUT_PRICE: f64 = 0.005 / 1000.0;
const GET_PRICE: f64 = 0.0004 / 1000.0;

fn doc(key: &str, v: i64) -> Document {
    Document::new()
        .with("id", FieldValue::String(key.into()))
        .with("v", FieldValue::Int64(v))
}

fn key_in(p: u32, partitions: u32) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| ikv_core::partition::partition_of(k.as_bytes(), partitions) == p)
        .unwrap()
}

fn dollars(storage: &Storage, seconds: f64) -> f64 {
    let r = storage.requests();
    let writes = r.of_kind(RequestKind::Put) + r.of_kind(RequestKind::List);
    let reads = r.of_kind(RequestKind::Get) + r.of_kind(RequestKind::Head);
    (writes as f64 * PUT_PRICE + reads as f64 * GET_PRICE) * MONTH / seconds
}

/// An idle reader host of `partitions` partitions: requests per second and dollars a month
/// over `idle` simulated seconds, after its first 60 s.
fn idle_host(rt: &tokio::runtime::Runtime, partitions: u32, idle: u64) -> (f64, f64) {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let start = wall_time();
    let writer_storage = Storage::new(inner.clone(), Path::from("root"), "memory://cost");
    rt.block_on(create_store(
        &writer_storage,
        &StoreConfig::new("s", "id", None, partitions).unwrap(),
    ))
    .unwrap();
    let writer = rt
        .block_on(Writer::open(writer_storage, "s", WriterOptions::default()))
        .unwrap();
    for p in 0..partitions {
        rt.block_on(writer.upsert_fields(doc(&key_in(p, partitions), 0)))
            .unwrap();
    }
    let clock = ManualClock::new(start);
    let storage = Storage::new(inner, Path::from("root"), "memory://cost");
    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new("memory://cost", "s", mount.path());
    options.storage = Some(storage.clone());
    options.clock = clock.clone();
    let reader = Reader::open(options).unwrap();
    wait_until("the first poll", || !clock.sleeps().is_empty());
    let run_for = |secs: u64| {
        let mut passed = Duration::ZERO;
        while passed < Duration::from_secs(secs) {
            let sleeps = clock.sleeps();
            let wait = *sleeps.last().unwrap();
            clock.advance(wait);
            passed += wait;
            wait_until("the next poll", || clock.sleeps().len() > sleeps.len());
        }
        passed
    };
    run_for(60);
    let before = storage.requests().total();
    let before_cost = dollars(&storage, 1.0);
    let passed = run_for(idle).as_secs_f64();
    let rate = (storage.requests().total() - before) as f64 / passed;
    let cost = (dollars(&storage, 1.0) - before_cost) / passed;
    reader.shutdown().unwrap();
    (rate, cost)
}

/// One writer committing one document at `per_second` to a one-partition store, `commits`
/// times: PUTs per commit, and every request per commit.
fn steady_writer(rt: &tokio::runtime::Runtime, per_second: f64, commits: u64) -> (f64, f64) {
    let storage = Storage::new(Arc::new(InMemory::new()), Path::from("root"), "memory://w");
    rt.block_on(create_store(
        &storage,
        &StoreConfig::new("s", "id", None, 1).unwrap(),
    ))
    .unwrap();
    let clock = ManualClock::new(wall_time());
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "s",
            WriterOptions {
                clock: Some(clock.clone() as Arc<dyn Clock>),
                ..WriterOptions::default()
            },
        ))
        .unwrap();
    let gap = Duration::from_secs_f64(1.0 / per_second);
    // Background work (hint PUTs) runs on the runtime's workers: give it real time to go
    // out before the clock moves on, so that nothing is skipped for being "stale".
    let settle = || std::thread::sleep(Duration::from_millis(3));
    for i in 0..commits {
        rt.block_on(writer.upsert_fields(doc("a", i as i64)))
            .unwrap();
        settle();
        clock.advance(gap);
        settle();
    }
    rt.block_on(writer.flush_hints());
    let r = storage.requests();
    (
        r.of_kind(RequestKind::Put) as f64 / commits as f64,
        r.total() as f64 / commits as f64,
    )
}

/// A store that adds `delay` to every request.
#[derive(Debug)]
struct Far {
    inner: Arc<dyn ObjectStore>,
    delay: Duration,
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

impl std::fmt::Display for Far {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Far({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Far {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        tokio::time::sleep(self.delay).await;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        tokio::time::sleep(self.delay).await;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let got = self.inner.get_opts(location, options).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        got
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (delay, inner, prefix) = (self.delay, self.inner.clone(), prefix.cloned());
        futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            inner.list(prefix.as_ref())
        })
        .flatten()
        .boxed()
    }
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (delay, inner, prefix, offset) = (
            self.delay,
            self.inner.clone(),
            prefix.cloned(),
            offset.clone(),
        );
        futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            inner.list_with_offset(prefix.as_ref(), &offset)
        })
        .flatten()
        .boxed()
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        tokio::time::sleep(self.delay).await;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.copy_opts(from, to, options).await
    }
}

/// A reader catching up `deltas` deltas of one partition through a store 25 ms away: round
/// trips per delta (elapsed over 25 ms, over the deltas), GETs per delta, most GETs in flight.
fn catch_up(rt: &tokio::runtime::Runtime, deltas: i64) -> (f64, f64, usize) {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let writer_storage = Storage::new(inner.clone(), Path::from("root"), "memory://far");
    rt.block_on(create_store(
        &writer_storage,
        &StoreConfig::new("s", "id", None, 1).unwrap(),
    ))
    .unwrap();
    let writer = rt
        .block_on(Writer::open(writer_storage, "s", WriterOptions::default()))
        .unwrap();
    // The reader first, caught up with nothing; then the backlog.
    let delay = Duration::from_millis(25);
    let far = Arc::new(Far {
        inner,
        delay,
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let storage = Storage::new(far.clone(), Path::from("root"), "memory://far");
    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new("memory://far", "s", mount.path());
    options.storage = Some(storage.clone());
    options.poll_interval = Duration::from_millis(10);
    for v in 1..=deltas {
        rt.block_on(writer.upsert_fields(doc("k", v))).unwrap();
    }
    let started = Instant::now();
    let reader = Reader::open(options).unwrap();
    let took = started.elapsed();
    assert_eq!(reader.status()[0].applied_sequence, deltas as u64);
    let gets = storage.requests().of_kind(RequestKind::Get);
    reader.shutdown().unwrap();
    (
        took.as_secs_f64() / delay.as_secs_f64() / deltas as f64,
        gets as f64 / deltas as f64,
        far.most.load(Ordering::SeqCst),
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| what | requests | $ a month |");
    println!("|---|---|---|");
    for partitions in [1, 16, 64] {
        let (rate, cost) = idle_host(&rt, partitions, 1200);
        println!(
            "| idle reader host, {partitions} partitions (20 simulated minutes after its first 60 s) | {rate:.3} /s | {cost:.2} |"
        );
    }
    for per_second in [0.1, 1.0, 10.0, 100.0] {
        let commits = 500;
        let (puts, all) = steady_writer(&rt, per_second, commits);
        let month_commits = per_second * MONTH;
        println!(
            "| one writer, {per_second} commits/s, one partition ({commits} commits) | {puts:.3} PUT, {all:.3} requests per commit | {:.2} |",
            puts * month_commits * PUT_PRICE + (all - puts) * month_commits * GET_PRICE
        );
    }
    let (round_trips, gets, most) = catch_up(&rt, 1000);
    println!(
        "| catch-up of 1,000 deltas of one partition through a store 25 ms away | {round_trips:.3} round trips, {gets:.3} GETs per delta, {most} GETs in flight at most | |"
    );
    if std::env::var("IKV_COST_WIRE").is_ok() {
        on_the_wire(&rt);
    }
}

/// On the S3 emulator, in real time, at the defaults: a 16-partition reader host idle for
/// 35 s, then 30 s counted; then a write, and how long the host takes to apply it; then a
/// second write a second later.
fn on_the_wire(rt: &tokio::runtime::Runtime) {
    let partitions = 16;
    let storage = rt.block_on(ikv_tests::localstack_storage(false));
    rt.block_on(create_store(
        &storage,
        &StoreConfig::new("s", "id", None, partitions).unwrap(),
    ))
    .unwrap();
    let writer = rt
        .block_on(Writer::open(
            ikv_tests::localstack_storage_at(&storage.url, true),
            "s",
            WriterOptions::default(),
        ))
        .unwrap();
    for p in 0..partitions {
        rt.block_on(writer.upsert_fields(doc(&key_in(p, partitions), 0)))
            .unwrap();
    }
    let reader_storage = ikv_tests::localstack_storage_at(&storage.url, false);
    let mount = tempfile::tempdir().unwrap();
    let mut options = ReaderOptions::new(&storage.url, "s", mount.path());
    options.storage = Some(reader_storage.clone());
    let reader = Reader::open(options).unwrap();
    std::thread::sleep(Duration::from_secs(35));
    let before = reader_storage.requests().total();
    let counted = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let rate =
        (reader_storage.requests().total() - before) as f64 / counted.elapsed().as_secs_f64();
    println!(
        "| on the emulator: idle reader host, 16 partitions, 30 s after 35 s of quiet | {rate:.3} /s | {:.2} |",
        rate * MONTH * GET_PRICE
    );
    let key = key_in(5, partitions);
    let seen = |v: i64| {
        let started = Instant::now();
        rt.block_on(writer.upsert_fields(doc(&key, v))).unwrap();
        let acked = started.elapsed();
        while reader.get(key.as_bytes(), "v").unwrap() != Some(FieldValue::Int64(v)) {
            std::thread::sleep(Duration::from_millis(1));
        }
        (acked, started.elapsed())
    };
    let (acked, first) = seen(1);
    println!(
        "| on the emulator: the first write after the quiet spell, acknowledged → applied by the host | {:.0} ms after the call ({:.0} ms to acknowledge) | |",
        first.as_secs_f64() * 1000.0,
        acked.as_secs_f64() * 1000.0
    );
    std::thread::sleep(Duration::from_secs(1));
    let (_, second) = seen(2);
    println!(
        "| on the emulator: a write one second later (the partition active) | {:.0} ms after the call | |",
        second.as_secs_f64() * 1000.0
    );
    reader.shutdown().unwrap();
}
