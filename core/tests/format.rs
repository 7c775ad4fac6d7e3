//! The delta format round-trips every operation and type; validation refuses bad batches whole.

use ikv_core::delta::{decode_delta, decode_delta_meta, encode_delta};
use ikv_core::limits::{
    MAX_DOCUMENT_BYTES, MAX_KEY_BYTES, MAX_OPERATIONS_PER_BATCH, MAX_VALUE_BYTES,
};
use ikv_core::partition::partition_of;
use ikv_core::{
    DeltaMeta, DeltaOp, Document, ErrorKind, FieldValue, Operation, StoreConfig,
    partition_operations,
};

fn meta() -> DeltaMeta {
    DeltaMeta::new("batch-1".into(), "writer-1".into(), "users".into(), 2)
}

fn every_op() -> Vec<DeltaOp> {
    let key = b"Alice".to_vec();
    vec![
        DeltaOp::set(key.clone(), "name", FieldValue::String("Alice".into())),
        DeltaOp::set(key.clone(), "blob", FieldValue::Bytes(vec![0, 1, 255])),
        DeltaOp::set(key.clone(), "age", FieldValue::Int64(-22)),
        DeltaOp::set(key.clone(), "score", FieldValue::Float64(0.25)),
        DeltaOp::set(key.clone(), "active", FieldValue::Bool(true)),
        DeltaOp::set(vec![0xffu8, 0], "empty", FieldValue::String(String::new())),
        DeltaOp::DeleteField {
            key: key.clone(),
            field: "age".into(),
        },
        DeltaOp::DeleteDocument { key },
        DeltaOp::DropField {
            field: "city".into(),
        },
        DeltaOp::DropFieldPrefix {
            prefix: "tmp_".into(),
        },
        DeltaOp::DropAll,
    ]
}

#[test]
fn delta_round_trips_every_op_and_type() {
    let ops = every_op();
    let meta = meta();
    let bytes = encode_delta(&meta, &ops).unwrap();
    assert_eq!(&bytes[..6], b"ARROW1", "an Arrow IPC file");
    let delta = decode_delta(&bytes, "d").unwrap();
    assert_eq!(delta.meta, meta);
    assert_eq!(delta.ops, ops);
    assert_eq!(decode_delta_meta(&bytes, "d").unwrap().batch_id, "batch-1");
}

#[test]
fn empty_delta_round_trips() {
    let bytes = encode_delta(&meta(), &[]).unwrap();
    assert!(decode_delta(&bytes, "d").unwrap().ops.is_empty());
}

#[test]
fn garbage_is_corrupt_not_a_panic() {
    let err = decode_delta(&bytes::Bytes::from_static(b"not arrow at all"), "d").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let mut bytes = encode_delta(&meta(), &every_op()).unwrap().to_vec();
    bytes.truncate(bytes.len() / 2);
    assert!(decode_delta(&bytes.into(), "d").is_err());
}

fn users(partitions: u32) -> StoreConfig {
    StoreConfig::new("users", "userid", None, partitions).unwrap()
}

fn doc(pk: &str) -> Document {
    Document::new().with("userid", FieldValue::String(pk.into()))
}

#[test]
fn operations_split_by_partition_and_drops_reach_every_partition() {
    let config = users(4);
    let ops = vec![
        Operation::UpsertFields(doc("Alice").with("age", FieldValue::Int64(22))),
        Operation::UpsertFields(doc("Bob")),
        Operation::DeleteFields {
            document: doc("Alice"),
            field_names: vec!["age".into(), "userid".into()],
        },
        Operation::DeleteDocument(doc("Bob")),
        Operation::DropFieldsByName(vec!["userid".into(), "city".into()]),
        Operation::DropFieldsByNamePrefix(vec!["tmp".into()]),
        Operation::DropAllFields,
    ];
    let parts = partition_operations(&config, &ops, 0).unwrap();
    let alice = partition_of(b"Alice", 4) as usize;
    let bob = partition_of(b"Bob", 4) as usize;
    assert_ne!(alice, bob, "the pinned vectors put them apart");
    assert_eq!(
        parts.partitions[alice],
        vec![
            DeltaOp::set(b"Alice".to_vec(), "age", FieldValue::Int64(22)),
            DeltaOp::set(
                b"Alice".to_vec(),
                "userid",
                FieldValue::String("Alice".into())
            ),
            // Deleting the primary-key field is ignored.
            DeltaOp::DeleteField {
                key: b"Alice".to_vec(),
                field: "age".into()
            },
            // Dropping the primary-key field is silently ignored.
            DeltaOp::DropField {
                field: "city".into()
            },
            DeltaOp::DropFieldPrefix {
                prefix: "tmp".into()
            },
            DeltaOp::DropAll,
        ]
    );
    for (p, rows) in parts.partitions.iter().enumerate() {
        assert!(rows.contains(&DeltaOp::DropAll), "partition {p}");
    }
    assert!(parts.partitions[bob].contains(&DeltaOp::DeleteDocument {
        key: b"Bob".to_vec()
    }));
}

#[test]
fn partitioning_key_decides_the_partition() {
    let config = StoreConfig::new("users", "userid", Some("country"), 16).unwrap();
    let d = doc("Alice").with("country", FieldValue::String("Bob".into()));
    let parts = partition_operations(&config, &[Operation::UpsertFields(d)], 0).unwrap();
    let p = partition_of(b"Bob", 16) as usize;
    assert_eq!(parts.partitions[p].len(), 2);
    let err =
        partition_operations(&config, &[Operation::UpsertFields(doc("Alice"))], 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("lacks its partitioning key field \"country\""),
        "{err}"
    );
}

fn refused(config: &StoreConfig, ops: Vec<Operation>, want: &str) {
    let err = partition_operations(config, &ops, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains(want), "wanted {want:?} in {err}");
}

#[test]
fn every_bad_operation_is_refused_with_its_reason() {
    let c = users(2);
    let good = Operation::UpsertFields(doc("ok"));
    refused(
        &c,
        vec![good.clone(), Operation::UpsertFields(Document::new())],
        "operation 1 (upsert_fields): document lacks its primary key field \"userid\"",
    );
    refused(
        &c,
        vec![Operation::UpsertFields(
            Document::new().with("userid", FieldValue::Int64(1)),
        )],
        "must be a string or bytes, not int64",
    );
    refused(
        &c,
        vec![Operation::UpsertFields(doc(""))],
        "must not be empty",
    );
    refused(
        &c,
        vec![Operation::UpsertFields(doc(&"k".repeat(MAX_KEY_BYTES + 1)))],
        "more than the 1024 allowed",
    );
    refused(
        &c,
        vec![Operation::UpsertFields(
            doc("a").with("", FieldValue::Bool(true)),
        )],
        "field name must not be empty",
    );
    refused(
        &c,
        vec![Operation::UpsertFields(
            doc("a").with("bad\nname", FieldValue::Bool(true)),
        )],
        "control character",
    );
    refused(
        &c,
        vec![Operation::UpsertFields(doc("a").with(
            "big",
            FieldValue::Bytes(vec![0; MAX_VALUE_BYTES + 1]),
        ))],
        "field \"big\" is",
    );
    let mut huge = doc("a");
    for i in 0..5 {
        huge.put(
            format!("f{i}"),
            FieldValue::Bytes(vec![0; MAX_DOCUMENT_BYTES / 4]),
        );
    }
    refused(&c, vec![Operation::UpsertFields(huge)], "document is");
    refused(
        &c,
        vec![Operation::DeleteDocument(Document::new())],
        "delete_document",
    );
    refused(
        &c,
        vec![Operation::DeleteFields {
            document: doc("a"),
            field_names: vec![],
        }],
        "at least one field name",
    );
    refused(
        &c,
        vec![Operation::DeleteFields {
            document: doc("a"),
            field_names: vec!["".into()],
        }],
        "field name must not be empty",
    );
    refused(
        &c,
        vec![Operation::DropFieldsByName(vec![])],
        "at least one field name",
    );
    refused(
        &c,
        vec![Operation::DropFieldsByNamePrefix(vec!["".into()])],
        "field-name prefix must not be empty",
    );
    refused(
        &c,
        vec![good; MAX_OPERATIONS_PER_BATCH + 1],
        "at most 100000 operations",
    );
}

/// Expiries travel in their own column and make the delta version 2; a delta without any is
/// written as version 1 without the column, as before times to live.
#[test]
fn expiries_round_trip_in_a_version_two_delta_and_only_there() {
    let plain = every_op();
    let bytes = encode_delta(&meta(), &plain).unwrap();
    assert_eq!(decode_delta_meta(&bytes, "d").unwrap().format_version, 1);
    let mut timed = plain.clone();
    timed.push(DeltaOp::SetField {
        key: b"Alice".to_vec(),
        field: "score".into(),
        value: FieldValue::Int64(7),
        expires_ms: Some(1_800_000_000_123),
        event_us: None,
    });
    timed.push(DeltaOp::SetField {
        key: b"Alice".to_vec(),
        field: "past".into(),
        value: FieldValue::Bool(false),
        expires_ms: Some(-5),
        event_us: Some(i64::MIN),
    });
    timed.push(DeltaOp::SetField {
        key: b"Bob".to_vec(),
        field: "only_event".into(),
        value: FieldValue::Int64(1),
        expires_ms: None,
        event_us: Some(1_800_000_000_000_000),
    });
    let encoded = encode_delta(&meta(), &timed).unwrap();
    assert!(encoded.len() > bytes.len());
    let decoded = decode_delta(&encoded, "d").unwrap();
    assert_eq!(decoded.meta.format_version, 2);
    assert_eq!(decoded.ops, timed);
    // A version no build wrote is refused by name.
    let future = DeltaMeta {
        format_version: 3,
        ..meta()
    };
    let err = decode_delta(&encode_delta(&future, &plain).unwrap(), "d").unwrap_err();
    assert!(err.to_string().contains("format version 3"), "{err}");
}

#[test]
fn times_to_live_become_expiries_from_the_writers_clock() {
    let config = users(1).with_ttl_seconds(Some(60)).unwrap();
    let now = 1_800_000_000_000;
    let ops = [
        Operation::UpsertFields(doc("Alice")),
        Operation::UpsertFieldsWith {
            document: doc("Bob"),
            ttl_seconds: Some(5),
            event_time_us: Some(77),
        },
        Operation::UpsertFieldsWith {
            document: doc("Carol"),
            ttl_seconds: Some(0),
            event_time_us: None,
        },
        Operation::UpsertFieldsWith {
            document: doc("Dan"),
            ttl_seconds: None,
            event_time_us: Some(-1),
        },
    ];
    let rows = &partition_operations(&config, &ops, now).unwrap().partitions[0];
    let expiries: Vec<Option<i64>> = rows.iter().map(DeltaOp::expires_ms).collect();
    assert_eq!(
        expiries,
        vec![
            Some(now + 60_000),
            Some(now + 5_000),
            None,
            Some(now + 60_000)
        ],
        "the store's default, the write's own, 0 for never, the default again"
    );
    let events: Vec<Option<i64>> = rows.iter().map(DeltaOp::event_us).collect();
    assert_eq!(events, vec![None, Some(77), None, Some(-1)]);
    // Without a store default a plain upsert never expires.
    let rows = &partition_operations(&users(1), &ops[..1], now)
        .unwrap()
        .partitions[0];
    assert_eq!(rows[0].expires_ms(), None);
    // Out of range: refused whole, naming the operation.
    for ttl in [ikv_core::limits::MAX_TTL_SECONDS + 1, u64::MAX] {
        refused(
            &users(1),
            vec![
                Operation::UpsertFields(doc("Alice")),
                Operation::UpsertFieldsWith {
                    document: doc("Bob"),
                    ttl_seconds: Some(ttl),
                    event_time_us: None,
                },
            ],
            "operation 1 (upsert_fields): ttl_seconds must be between 1 and 3153600000 seconds",
        );
    }
    for ttl in [Some(0), Some(u64::MAX)] {
        let err = users(1).with_ttl_seconds(ttl).unwrap_err();
        assert!(
            err.to_string().contains("ttl_seconds must be between"),
            "{err}"
        );
    }
    // The default is stored with the configuration and read back.
    let json = config.to_json();
    let back = StoreConfig::from_json(&json, "store.json").unwrap();
    assert_eq!(back.ttl_seconds, Some(60));
    assert!(!String::from_utf8_lossy(&users(1).to_json()).contains("ttl_seconds"));
}
