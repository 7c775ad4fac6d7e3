//! The commit rule (`docs/FORMAT.md`): a writer acknowledges delta n only when it knows delta
//! n − 1 is a committed delta of this store and partition. Forged and lagging hints, foreign,
//! misplaced and corrupt deltas at the tip, and numbers near `u64::MAX` never make it
//! acknowledge a write that no reader can see; and what a writer refuses, it did not write.
//! Time is a stepping clock: idleness and the tip's trust window are crossed without waiting.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ikv_core::bucket::committed::decode_committed;
use ikv_core::bucket::tip_hint::{self, TipHint};
use ikv_core::bucket::{create_store, list_delta_seqs, read_delta};
use ikv_core::clock::Clock;
use ikv_core::delta::{DeltaMeta, encode_delta, place_delta};
use ikv_core::{DeltaOp, Document, ErrorKind, FieldValue, Storage, StoreConfig, StoreLayout};
use ikv_tests::counting::{CountingStore, CountsOf};
use ikv_tests::stepping_clock::SteppingClock;
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use rand::{Rng, SeedableRng};

fn doc(key: &str, marker: &str) -> Document {
    Document::new()
        .with("id", FieldValue::String(key.into()))
        .with("m", FieldValue::String(marker.into()))
}

struct Bucket {
    storage: Storage,
    layout: StoreLayout,
    counts: Arc<CountingStore>,
    clock: Arc<SteppingClock>,
}

impl Bucket {
    async fn new(partitions: u32) -> Bucket {
        let counts = Arc::new(CountingStore::new(Arc::new(InMemory::new())));
        let storage = Storage::new(counts.clone(), Path::from("root"), "memory://rule");
        create_store(
            &storage,
            &StoreConfig::new("s", "id", None, partitions).unwrap(),
        )
        .await
        .unwrap();
        let layout = StoreLayout::new(&storage.prefix, "s").unwrap();
        Bucket {
            storage,
            layout,
            counts,
            clock: Arc::new(SteppingClock::new()),
        }
    }

    async fn writer(&self) -> Writer {
        let clock: Arc<dyn Clock> = self.clock.clone();
        Writer::open(
            self.storage.clone(),
            "s",
            WriterOptions {
                clock: Some(clock),
                ..WriterOptions::default()
            },
        )
        .await
        .unwrap()
    }

    async fn put_raw(&self, partition: u32, seq: u64, bytes: Bytes) {
        self.storage
            .object_store()
            .put(&self.layout.delta(partition, seq), bytes.into())
            .await
            .unwrap();
    }

    async fn delta_bytes(&self, partition: u32, seq: u64) -> Bytes {
        read_delta(&self.storage, &self.layout, partition, seq)
            .await
            .unwrap()
            .unwrap()
    }

    async fn forge_hint(&self, partition: u32, seq: u64, ahead: Duration) {
        let hint = TipHint {
            seq,
            committed_at: self.clock.now() + ahead,
        };
        tip_hint::write(&self.storage, &self.layout, partition, &hint)
            .await
            .unwrap();
    }

    /// The longest run of committed deltas 1..=n a reader applies, and the markers in it.
    async fn readable(&self, partition: u32) -> (u64, Vec<String>) {
        let mut markers = Vec::new();
        let mut seq = 0u64;
        while let Some(bytes) = read_delta(&self.storage, &self.layout, partition, seq + 1)
            .await
            .unwrap()
        {
            let Ok(delta) = decode_committed(&bytes, &self.layout, partition, seq + 1) else {
                break;
            };
            seq += 1;
            for op in delta.ops {
                if let DeltaOp::SetField {
                    field,
                    value: FieldValue::String(m),
                    ..
                } = op
                    && field == "m"
                {
                    markers.push(m);
                }
            }
        }
        (seq, markers)
    }
}

/// Every marker in any object of the partition that decodes as a delta, wherever it is.
async fn markers_anywhere(bucket: &Bucket, partition: u32) -> Vec<String> {
    let mut markers = Vec::new();
    for seq in list_delta_seqs(&bucket.storage, &bucket.layout, partition)
        .await
        .unwrap()
    {
        let bytes = bucket.delta_bytes(partition, seq).await;
        let Ok(delta) = ikv_core::delta::decode_delta(&bytes, "any") else {
            continue;
        };
        for op in delta.ops {
            if let DeltaOp::SetField {
                value: FieldValue::String(m),
                ..
            } = op
            {
                markers.push(m);
            }
        }
    }
    markers
}

/// A delta of store "s" whose trailer places it at `seq`, saying it belongs to `partition`.
fn placed(store: &str, partition: u32, seq: u64) -> Bytes {
    let encoded = encode_delta(
        &DeltaMeta::new("forged".into(), "elsewhere".into(), store.into(), partition),
        &[DeltaOp::SetField {
            key: b"x".to_vec(),
            field: "m".into(),
            value: FieldValue::String("forged".into()),
            expires_ms: None,
            event_us: None,
        }],
    )
    .unwrap();
    let mut out = Vec::new();
    for chunk in place_delta(&encoded, seq).unwrap().iter() {
        out.extend_from_slice(chunk);
    }
    Bytes::from(out)
}

/// A hint naming a number with no delta there (fresh, from 20 s ahead, 2^63, the last
/// number) is not followed: the writer commits densely after what it knows, and reading the
/// hinted delta cost one GET.
#[tokio::test]
async fn a_hint_naming_a_missing_delta_is_not_followed() {
    for (hinted, ahead) in [
        (1001, Duration::ZERO),
        (1001, Duration::from_secs(20)),
        (1u64 << 63, Duration::ZERO),
        (u64::MAX, Duration::ZERO),
        (u64::MAX - 1, Duration::ZERO),
    ] {
        let bucket = Bucket::new(1).await;
        let writer = bucket.writer().await;
        assert_eq!(
            writer.upsert_fields(doc("a", "1")).await.unwrap().commits[0].sequence,
            1
        );
        bucket.forge_hint(0, hinted, ahead).await;
        bucket.clock.advance(Duration::from_secs(2)); // idle: the hint is read
        let before = bucket.counts.counts();
        let receipt = writer.upsert_fields(doc("a", "2")).await.unwrap();
        let used = bucket.counts.counts().since(&before);
        assert_eq!(receipt.commits[0].sequence, 2, "hint {hinted}");
        // The hint, the hinted delta (absent), the PUT; no search.
        assert_eq!((used.gets, used.lists), (2, 0), "{used:?}");
        assert_eq!(
            writer.upsert_fields(doc("a", "3")).await.unwrap().commits[0].sequence,
            3
        );
        assert_eq!(
            list_delta_seqs(&bucket.storage, &bucket.layout, 0)
                .await
                .unwrap(),
            vec![1, 2, 3],
            "hint {hinted}"
        );
        assert_eq!(bucket.readable(0).await.0, 3);
    }
}

/// A valid delta placed at the last number there is, hinted: the writer refuses to go past
/// it rather than wrapping to 0, and writes nothing.
#[tokio::test]
async fn the_last_sequence_number_is_never_wrapped_past() {
    let bucket = Bucket::new(1).await;
    let writer = bucket.writer().await;
    writer.upsert_fields(doc("a", "1")).await.unwrap();
    bucket.put_raw(0, u64::MAX, placed("s", 0, u64::MAX)).await;
    bucket.forge_hint(0, u64::MAX, Duration::ZERO).await;
    bucket.clock.advance(Duration::from_secs(2));
    let err = writer.upsert_fields(doc("a", "2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("last sequence number"), "{err}");
    assert_eq!(
        list_delta_seqs(&bucket.storage, &bucket.layout, 0)
            .await
            .unwrap(),
        vec![1, u64::MAX]
    );
}

/// What may sit at the tip that no reader applies.
#[derive(Debug, Clone, Copy)]
enum Bad {
    /// Delta 1's bytes copied to the next number (valid checksum, wrong place).
    CopiedFromBelow,
    /// A delta of another partition placed there.
    OtherPartition,
    /// A delta of another store placed there.
    OtherStore,
    /// A committed delta's bytes with one bit flipped.
    BitFlip,
    /// Not a delta at all.
    Garbage,
}

impl Bad {
    const ALL: [Bad; 5] = [
        Bad::CopiedFromBelow,
        Bad::OtherPartition,
        Bad::OtherStore,
        Bad::BitFlip,
        Bad::Garbage,
    ];

    async fn place(self, bucket: &Bucket, partition: u32, seq: u64) {
        let bytes = match self {
            Bad::CopiedFromBelow => bucket.delta_bytes(partition, 1).await,
            Bad::OtherPartition => placed("s", partition + 1, seq),
            Bad::OtherStore => placed("t", partition, seq),
            Bad::BitFlip => {
                let mut b = placed("s", partition, seq).to_vec();
                let at = b.len() / 2;
                b[at] ^= 0x10;
                Bytes::from(b)
            }
            Bad::Garbage => Bytes::from_static(b"{\"not\": \"a delta\"}"),
        };
        bucket.put_raw(partition, seq, bytes).await;
    }
}

fn assert_refused(err: &ikv_core::Error, bucket: &Bucket, seq: u64) {
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(bucket.layout.delta(0, seq).as_ref()),
        "the error names the object: {text}"
    );
    assert!(text.contains("nothing is written after it"), "{text}");
}

/// A writer meeting an object at the tip that is not a committed delta refuses, naming it,
/// and writes nothing after it: a running writer that loses the race to it, a running writer
/// woken by a hint naming it, and a writer started afresh (which searches).
#[tokio::test]
async fn writers_refuse_to_extend_the_log_past_a_bad_delta_at_the_tip() {
    for bad in Bad::ALL {
        let bucket = Bucket::new(1).await;
        let running = bucket.writer().await;
        for i in 1..=5 {
            running
                .upsert_fields(doc("a", &i.to_string()))
                .await
                .unwrap();
        }
        bad.place(&bucket, 0, 6).await;

        // Busy: its PUT at 6 loses, it reads what is there.
        let err = running.upsert_fields(doc("a", "busy")).await.unwrap_err();
        assert_refused(&err, &bucket, 6);
        // Idle, woken by a hint naming the bad delta.
        bucket.forge_hint(0, 6, Duration::ZERO).await;
        bucket.clock.advance(Duration::from_secs(2));
        let err = running.upsert_fields(doc("a", "idle")).await.unwrap_err();
        assert_refused(&err, &bucket, 6);
        // Idle past the tip's trust window: searches, finds 6, checks it.
        bucket.clock.advance(Duration::from_secs(600));
        let err = running
            .upsert_fields(doc("a", "expired"))
            .await
            .unwrap_err();
        assert_refused(&err, &bucket, 6);
        // Started afresh (a new Lambda instance, `ikv put`).
        let fresh = bucket.writer().await;
        let err = fresh.upsert_fields(doc("b", "fresh")).await.unwrap_err();
        assert_refused(&err, &bucket, 6);

        assert_eq!(
            list_delta_seqs(&bucket.storage, &bucket.layout, 0)
                .await
                .unwrap(),
            (1..=6).collect::<Vec<_>>(),
            "{bad:?}: nothing written after the bad delta"
        );
        let (readable, markers) = bucket.readable(0).await;
        assert_eq!(readable, 5, "{bad:?}");
        assert_eq!(markers, ["1", "2", "3", "4", "5"], "{bad:?}");
    }
}

/// A bad delta in one partition stops that partition only.
#[tokio::test]
async fn a_bad_delta_stops_its_own_partition_only() {
    let bucket = Bucket::new(2).await;
    let key_in = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| ikv_core::partition::partition_of(k.as_bytes(), 2) == p)
            .unwrap()
    };
    let (k0, k1) = (key_in(0), key_in(1));
    let writer = bucket.writer().await;
    writer.upsert_fields(doc(&k1, "first")).await.unwrap();
    Bad::CopiedFromBelow.place(&bucket, 1, 2).await;
    let fresh = bucket.writer().await;
    let err = fresh.upsert_fields(doc(&k1, "refused")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let receipt = fresh.upsert_fields(doc(&k0, "fine")).await.unwrap();
    assert_eq!(receipt.commits[0].partition, 0);
    assert_eq!(bucket.readable(0).await.0, 1);
    assert_eq!(bucket.readable(1).await.0, 1);
}

/// Checking a tip costs nothing on the common path: a writer committing back to back, and
/// an idle writer nobody overtook, make exactly the requests they made before the rule.
#[tokio::test]
async fn the_rule_costs_nothing_on_the_common_path() {
    let bucket = Bucket::new(1).await;
    let writer = bucket.writer().await;
    writer.upsert_fields(doc("a", "0")).await.unwrap();
    let before = bucket.counts.counts();
    for i in 1..=50 {
        writer
            .upsert_fields(doc("a", &i.to_string()))
            .await
            .unwrap();
    }
    let used = bucket.counts.counts().since(&before);
    assert_eq!((used.gets, used.heads, used.lists), (0, 0, 0), "{used:?}");
    bucket.clock.advance(Duration::from_secs(2));
    let before = bucket.counts.counts();
    writer.upsert_fields(doc("a", "idle")).await.unwrap();
    let used = bucket.counts.counts().since(&before);
    // The hint (naming what this writer committed: not followed), then one PUT.
    assert_eq!((used.gets, used.heads, used.lists), (1, 0, 0), "{used:?}");
    // The storage root's own count (what metrics will read) agrees with the test's.
    use ikv_core::bucket::requests::RequestKind;
    let all = bucket.counts.counts();
    let own = bucket.storage.requests();
    assert_eq!(own.of_kind(RequestKind::Get), all.gets);
    assert_eq!(own.of_kind(RequestKind::Head), all.heads);
    assert_eq!(own.of_kind(RequestKind::List), all.lists);
}

/// Writers, forged and lagging hints, bad deltas at the tip and time jumps, in random order
/// (seeded): every acknowledged write is readable, exactly once, and a refused write is
/// nowhere.
#[tokio::test]
async fn no_acknowledged_write_is_ever_unreadable() {
    let mut refusals = 0;
    for seed in 0..24u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let bucket = Bucket::new(1).await;
        let mut writers = Vec::new();
        for _ in 0..3 {
            writers.push(bucket.writer().await);
        }
        let mut acked: Vec<(u64, String)> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        let mut broken = false;
        for step in 0..40 {
            let tip = list_delta_seqs(&bucket.storage, &bucket.layout, 0)
                .await
                .unwrap()
                .last()
                .copied()
                .unwrap_or(0);
            match rng.random_range(0..100) {
                0..60 => {
                    let w = rng.random_range(0..writers.len());
                    let marker = format!("s{seed}-{step}-w{w}");
                    match writers[w].upsert_fields(doc("k", &marker)).await {
                        Ok(r) => acked.push((r.commits[0].sequence, marker)),
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Corrupt, "seed {seed}: {e}");
                            refused.push(marker);
                        }
                    }
                }
                60..75 => {
                    let seq = match rng.random_range(0..6) {
                        0 => tip.saturating_sub(rng.random_range(1..4)),
                        1 => tip + 1,
                        2 => tip + rng.random_range(2..2000),
                        3 => 1u64 << 63,
                        4 => u64::MAX,
                        _ => tip,
                    };
                    let ahead = [0, 20, 3600][rng.random_range(0..3)];
                    bucket
                        .forge_hint(0, seq.max(1), Duration::from_secs(ahead))
                        .await;
                }
                75..95 => {
                    let secs = [0.2, 1.5, 30.0, 400.0][rng.random_range(0..4)];
                    bucket.clock.advance(Duration::from_secs_f64(secs));
                }
                _ if !broken && tip > 0 => {
                    Bad::ALL[rng.random_range(0..Bad::ALL.len())]
                        .place(&bucket, 0, tip + 1)
                        .await;
                    broken = true;
                }
                _ => {}
            }
            let (readable, markers) = bucket.readable(0).await;
            for (seq, marker) in &acked {
                assert!(
                    *seq <= readable,
                    "seed {seed} step {step}: acknowledged {seq} is past what readers apply ({readable})"
                );
                assert_eq!(
                    markers.iter().filter(|m| *m == marker).count(),
                    1,
                    "seed {seed}: {marker} readable exactly once"
                );
            }
            let anywhere = markers_anywhere(&bucket, 0).await;
            for marker in &refused {
                assert!(
                    !anywhere.contains(marker),
                    "seed {seed}: refused {marker} landed"
                );
            }
        }
        assert!(!acked.is_empty(), "seed {seed} acknowledged something");
        refusals += refused.len();
    }
    assert!(refusals > 0, "the runs met bad deltas and refused writes");
}
